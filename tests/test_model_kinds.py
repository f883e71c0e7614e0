"""Models built from attention and recurrent layers work at the defaults (method="auto",
default damping), against a float64 reference; a model the curvature methods cannot
differentiate fails before the gradient pass, naming what to pass."""

import warnings

import pytest
import torch
from torch import nn

import influence as inf
from influence.features import FeaturePass
from tests.methods._reference import ggn, per_example_grads


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.layer(self.embed(x)).mean(1))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attention(h, h, h)[0].mean(1))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def trained(cls):
    torch.manual_seed(0)
    X, y = torch.randn(40, 5, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    model = cls().double()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval(), X, y


@pytest.mark.parametrize("cls", [Encoder, Attention, Recurrent])
def test_attention_and_recurrent_models_work_at_defaults(cls):
    model, X, y = trained(cls)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attr = inf.Attributor(model, (X, y), progress=False).fit()
        scores = attr.scores((X[:4], y[:4]))
    loop = [w for w in caught if "one example at a time" in str(w.message)]
    assert bool(loop) == (cls is Recurrent) and all(w.category is inf.InfluenceWarning for w in loop)
    # The reference: float64 autograd, one example at a time, and the dense GGN.
    loss = lambda out, t: nn.functional.cross_entropy(out, t, reduction="none")  # noqa: E731
    G = per_example_grads(model, loss, X, y)
    H = ggn(model, X) + attr.damping * torch.eye(G.shape[1], dtype=torch.float64)
    expected = G[:4] @ torch.linalg.solve(H, G.T)
    assert attr.diagnostics["method"] == "exact" and attr.diagnostics["curvature"] == "ggn"
    torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-8 * expected.abs().max().item())
    torch.testing.assert_close(attr.self_influence(), torch.einsum("ip,ip->i", G, torch.linalg.solve(H, G.T).T),
                               rtol=1e-6, atol=1e-8)


class NoForwardDerivative(torch.autograd.Function):
    """tanh with a backward rule only: reverse mode works, forward mode (jvp) does not."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * (1 - out ** 2)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(NoForwardDerivative.apply(self.a(x)))


def test_a_model_without_forward_derivatives_fails_before_the_gradient_pass(monkeypatch):
    torch.manual_seed(0)
    model, X, y = Custom(), torch.randn(30, 4), torch.randint(0, 3, (30,))

    def no_gradient_pass(*args, **kwargs):
        raise AssertionError("the gradient pass ran before the set-up failed")

    monkeypatch.setattr(FeaturePass, "data", no_gradient_pass)
    with pytest.raises(inf.InfluenceError, match=r"forward-mode derivative.*method='identity'"):
        inf.Attributor(model, (X, y), progress=False).fit()
    monkeypatch.undo()
    attr = inf.Attributor(model, (X, y), method="identity", progress=False).fit()  # what the error proposes
    assert torch.isfinite(attr.scores((X[:2], y[:2]))).all()


def test_a_float32_lstm_runs_on_the_plain_kernels_and_agrees_with_float64():
    """oneDNN runs float32 LSTMs on CPU and has no forward-mode derivative: our calls turn it
    off (and back on for the user afterwards)."""
    model, X, y = trained(Recurrent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inf.InfluenceWarning)
        single = inf.Attributor(model.float(), (X.float(), y), progress=False).fit()
        scores32 = single.scores((X[:4].float(), y[:4]))
        double = inf.Attributor(model.double(), (X, y), damping=single.damping, progress=False).fit()
    assert torch.backends.mkldnn.enabled
    torch.testing.assert_close(scores32.double(), double.scores((X[:4], y[:4])), rtol=2e-3,
                               atol=2e-3 * scores32.abs().max().item())
