"""`LanguageModelingTask` on a 2-layer GPT-style model (pure torch), against brute force:
per-token losses written out as loops, autograd gradients one sequence at a time, and a
dense float64 Hessian for the exact method."""

import pytest
import torch
from torch import nn

import influence as inf
from influence.data import IGNORE_INDEX
from influence.gradients import per_example_grads
from influence.model import FunctionalModel
from influence.task import Task

VOCAB, LENGTH = 11, 6


class TinyGPT(nn.Module):
    """Token + position embeddings, 2 causal self-attention blocks, a tied-free LM head."""

    def __init__(self, dim=8, heads=2, layers=2):
        super().__init__()
        torch.manual_seed(0)
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Embedding(LENGTH, dim)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True,
                                                               norm_first=True) for _ in range(layers))
        self.head = nn.Linear(dim, VOCAB)
        self.double()

    def forward(self, input_ids):
        L = input_ids.shape[1]
        h = self.tok(input_ids) + self.pos(torch.arange(L))
        causal = torch.triu(torch.full((L, L), float("-inf"), dtype=h.dtype), diagonal=1)
        for block in self.blocks:
            h = block(h, src_mask=causal)
        return self.head(h)


def documents(n, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=gen)
    lengths = torch.randint(3, LENGTH + 1, (n,), generator=gen)
    mask = (torch.arange(LENGTH) < lengths[:, None]).long()
    return ids * mask, mask


def loop_loss(logits, ids, mask, prompt=0):
    """Σ over scored positions t ≥ max(prompt, 1) of −log p(ids[t] | ids[<t]), one token at a time."""
    total = logits.new_zeros(())
    for t in range(max(prompt, 1), ids.shape[0]):
        if mask[t]:
            total = total - torch.log_softmax(logits[t - 1], dim=-1)[ids[t]]
    return total


def test_loss_is_the_summed_next_token_cross_entropy_of_scored_tokens():
    model, task = TinyGPT(), inf.LanguageModelingTask()
    ids, mask = documents(5, seed=1)
    for prompt in (0, 2):
        labels = inf.token_labels(ids, mask, prompt_length=prompt)
        got = task.loss(model(ids), labels)
        expected = torch.stack([loop_loss(model(ids[i:i + 1])[0], ids[i], mask[i], prompt) for i in range(5)])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_token_labels_mask_padding_and_the_prompt():
    ids = torch.tensor([[5, 6, 7, 8], [1, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert inf.token_labels(ids, mask).tolist() == [[5, 6, 7, 8], [1, 2, -100, -100]]
    assert inf.token_labels(ids, mask, prompt_length=torch.tensor([3, 1])).tolist() == [[-100] * 3 + [8],
                                                                                       [-100, 2, -100, -100]]
    with pytest.raises(inf.InvalidArgumentError, match="`attention_mask` has shape"):
        inf.token_labels(ids, mask[:, :3])


def test_per_sequence_gradients_equal_autograd_one_sequence_at_a_time():
    model, task = TinyGPT(), inf.LanguageModelingTask()
    ids, mask = documents(4, seed=2)
    labels = inf.token_labels(ids, mask)
    fm = FunctionalModel(model, None, forward=task.forward)
    G = per_example_grads(fm, task.loss, ids, labels)
    for i in range(4):
        model.zero_grad()
        loop_loss(model(ids[i:i + 1])[0], ids[i], mask[i]).backward()
        expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(G[i], expected, rtol=1e-10, atol=1e-12)


def test_closed_form_output_hessian_equals_double_differentiation():
    task = inf.LanguageModelingTask()
    gen = torch.Generator().manual_seed(3)
    outputs = torch.randn(3, LENGTH, VOCAB, generator=gen, dtype=torch.float64)
    ids, mask = documents(3, seed=3)
    labels = inf.token_labels(ids, mask, prompt_length=1)
    U = torch.randn(5, 3, LENGTH, VOCAB, generator=gen, dtype=torch.float64)
    expected = Task.output_hessian_vp(task, outputs, labels, U)  # the generic double-differentiation path
    torch.testing.assert_close(task.output_hessian_vp(outputs, labels, U), expected, rtol=1e-10, atol=1e-12)


def test_exact_scores_equal_a_dense_float64_hessian_solve():
    model = TinyGPT(dim=4, heads=1, layers=2)
    task = inf.LanguageModelingTask(weight_decay=0.1, parameters=["head", "blocks.1.linear2"])
    ids, mask = documents(12, seed=4)
    train = {"input_ids": ids, "labels": inf.token_labels(ids, mask)}
    test_ids, test_mask = documents(3, seed=5)
    test = {"input_ids": test_ids, "labels": inf.token_labels(test_ids, test_mask, prompt_length=2)}
    damping = 2.0  # above the most negative Hessian eigenvalue (-1.49): H + λI is positive definite
    attr = inf.Attributor(model, train, task=task, method="exact", curvature="hessian", damping=damping,
                          label_column="labels", progress=False).fit()
    scores = attr.scores(test)

    fm = FunctionalModel(model, task.parameters, forward=task.forward)
    names = fm.names

    def loss_of(theta, batch_ids, batch_mask, prompt=0):
        params = dict(zip(names, theta.split(fm.numels)))
        params = {n: t.view(s) for (n, t), s in zip(params.items(), fm.shapes)}
        out = []
        for i in range(len(batch_ids)):
            logits = torch.func.functional_call(model, params, (batch_ids[i:i + 1],))[0]
            out.append(loop_loss(logits, batch_ids[i], batch_mask[i], prompt))
        return torch.stack(out)

    theta = fm.theta
    H = torch.autograd.functional.hessian(lambda th: loss_of(th, ids, mask).mean(), theta)
    H = H + (0.1 + damping) * torch.eye(len(theta), dtype=theta.dtype)
    train_grads = torch.autograd.functional.jacobian(lambda th: loss_of(th, ids, mask), theta)
    test_grads = torch.autograd.functional.jacobian(lambda th: loss_of(th, test_ids, test_mask, prompt=2), theta)
    expected = test_grads @ torch.linalg.solve(H, train_grads.T)
    torch.testing.assert_close(scores, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("outputs, labels, message", [
    (torch.zeros(2, VOCAB), torch.zeros(2, dtype=torch.long), r"logits of shape \[batch, length, vocabulary\]"),
    (torch.zeros(2, 4, VOCAB), torch.zeros(2, 4), "must be token ids"),
    (torch.zeros(2, 4, VOCAB), torch.zeros(2, 3, dtype=torch.long), "one token id per position"),
    (torch.zeros(2, 4, VOCAB), torch.full((2, 4), VOCAB), r"\[0, 10\] or -100"),
])
def test_mismatched_labels_raise_errors_naming_the_argument(outputs, labels, message):
    with pytest.raises(inf.InvalidArgumentError, match=message):
        inf.LanguageModelingTask().check_batch(outputs, labels, "train")


def test_unscored_sequences_have_zero_loss():
    task = inf.LanguageModelingTask()
    labels = torch.full((1, LENGTH), IGNORE_INDEX)
    assert task.loss(torch.randn(1, LENGTH, VOCAB), labels).item() == 0.0


def test_sampled_pseudo_label_factor_averages_to_the_output_hessian():
    """E[U Uᵀ] over the pseudo-labels is the exact (block-diagonal, masked) output Hessian."""
    task = inf.LanguageModelingTask()
    gen = torch.Generator().manual_seed(6)
    outputs = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[1, 2, 3, 4], [0, 1, IGNORE_INDEX, IGNORE_INDEX]])
    U = task.sample_output_hessian_factor(outputs, labels, 40_000, torch.Generator().manual_seed(7))
    assert U.shape == (2, 20, 40_000)
    torch.testing.assert_close(U @ U.transpose(1, 2), task.output_hessian(outputs, labels), rtol=0, atol=0.01)
    assert (U.reshape(2, 4, 5, -1)[1, 1:] == 0).all()  # the last position and the unscored ones: nothing


def test_the_dense_output_hessian_refuses_a_huge_allocation():
    task = inf.LanguageModelingTask()
    outputs = torch.zeros(2, 64, 1000)
    with pytest.raises(inf.InvalidArgumentError, match=r"would take 30\.5 GiB.*output_hessian_vp"):
        task.output_hessian(outputs, torch.zeros(2, 64, dtype=torch.long))


def test_an_empty_completion_span_raises():
    ids, mask = torch.tensor([[5, 6, 7, 8], [1, 2, 0, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.raises(inf.InvalidArgumentError, match="row 1 has no token left to score"):
        inf.token_labels(ids, mask, prompt_length=2)
    only_first = torch.tensor([[5, IGNORE_INDEX, IGNORE_INDEX]])  # the first token is never predicted
    with pytest.raises(inf.InvalidArgumentError, match="row 0 of `test` scores no token"):
        inf.LanguageModelingTask().check_batch(torch.zeros(1, 3, VOCAB), only_first, "test")


def test_dense_ggn_through_output_hessian_products_equals_through_its_factor(monkeypatch):
    import influence.curvature as curvature_module
    from influence.curvature import Curvature
    from influence.data import as_data

    model, task = TinyGPT(dim=4, heads=1, layers=1), inf.LanguageModelingTask(parameters=["head"])
    ids, mask = documents(5, seed=8)
    data = as_data({"input": ids, "label": inf.token_labels(ids, mask)}, "train")
    fm = FunctionalModel(model, task.parameters, forward=task.forward)
    by_factor = Curvature(fm, task, data).dense()
    monkeypatch.setattr(curvature_module, "FACTOR_MAX_OUTPUTS", 0)
    curvature = Curvature(fm, task, data)
    torch.testing.assert_close(curvature.dense(), by_factor, rtol=1e-10, atol=1e-12)
    assert curvature.mean_eigenvalue() == pytest.approx(float(by_factor.diagonal().mean()), rel=1e-10)
