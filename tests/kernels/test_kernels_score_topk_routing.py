"""A default fit + top_k routes through influence_kernels.score_topk: the Triton kernel when the
backend is forced (interpreter on CPU), the twin under "auto" on CPU, both ranking like the
unfused path (`scoring.top_k` over `scoring.score_blocks`)."""

import pytest
import torch
from kernel_test_utils import needs_interpreter

import influence as inf
from influence import scoring
from influence_kernels import score_topk as op
from tests.hf.conftest import tiny_gpt2
from tests.hf.test_conventions import lm_data


def mlp_problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    X = torch.randn(40, 5)
    test = (torch.randn(4, 5), torch.randint(0, 3, (4,)))
    return model, (X, torch.randint(0, 3, (40,))), test, {}


def cnn_problem():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 4 * 4, 3))
    X = torch.randn(30, 1, 6, 6)
    test = (torch.randn(3, 1, 6, 6), torch.randint(0, 3, (3,)))
    return model, (X, torch.randint(0, 3, (30,))), test, {}


def lm_problem():
    options = dict(task=inf.LanguageModelingTask(), label_column="labels")
    return tiny_gpt2(), lm_data(12, 0), lm_data(2, 1), options


pytestmark = pytest.mark.filterwarnings("ignore:the model looks untrained")
PROBLEMS = {"mlp": mlp_problem, "cnn": cnn_problem, "gpt2": lm_problem}


def fitted(name):
    model, train, test, options = PROBLEMS[name]()
    return inf.Attributor(model, train, progress=False, **options).fit(), test


def unfused(attr, test, k):
    return scoring.top_k(scoring.score_blocks(attr._preconditioned(test), attr.index), k)


def assert_same_ranking(got, ref):
    for a, b in ((got.helpful, ref.helpful), (got.harmful, ref.harmful)):
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-6)
        assert torch.equal(a.indices, b.indices)


def counting(monkeypatch):
    calls = []
    kernel = op._score_topk_triton

    def wrapper(*args):
        calls.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(op, "_score_topk_triton", wrapper)
    return calls


@needs_interpreter
@pytest.mark.parametrize("name", PROBLEMS)
def test_default_top_k_runs_the_triton_kernel_when_forced(name, monkeypatch):
    attr, test = fitted(name)
    ref = unfused(attr, test, 5)
    calls = counting(monkeypatch)
    monkeypatch.setenv("INFLUENCE_KERNELS_BACKEND", "triton")
    got = attr.top_k(test, k=5)
    assert len(calls) == 1 and attr.diagnostics.query_kernels == "triton:score_topk"
    assert attr.diagnostics["query_kernels"] == "triton:score_topk"
    assert_same_ranking(got, ref)


@pytest.mark.parametrize("name", PROBLEMS)
def test_default_top_k_on_cpu_runs_the_twin_and_ranks_like_the_unfused_path(name, monkeypatch):
    attr, test = fitted(name)
    monkeypatch.delenv("INFLUENCE_KERNELS_BACKEND", raising=False)
    calls = counting(monkeypatch)
    got = attr.top_k(test, k=7)
    assert calls == [] and attr.diagnostics.query_kernels == "torch:score_topk"
    assert_same_ranking(got, unfused(attr, test, 7))


def test_streamed_top_k_over_several_blocks_and_non_finite_scores():
    attr, test = fitted("mlp")
    Q = attr._preconditioned(test)
    got, path = scoring.streamed_top_k(Q, attr.index, 9, block=7)
    assert path == "torch:score_topk"
    assert_same_ranking(got, unfused(attr, test, 9))
    with pytest.raises(inf.InfluenceError, match="training examples 0..6"):
        scoring.streamed_top_k(Q * float("inf"), attr.index, 3, block=7)
