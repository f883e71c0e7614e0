"""`Task`: the output Hessian and its factor, against autograd and each other."""

import torch

import influence as inf


def test_cross_entropy_output_hessian_and_closed_form_factor():
    task = inf.ClassificationTask()
    for classes in (2, 3, 7):
        outputs = torch.randn(5, classes, dtype=torch.float64)
        targets = torch.randint(0, classes, (5,))
        H = task.output_hessian(outputs, targets)
        by_autograd = torch.stack([torch.autograd.functional.hessian(
            lambda o: task.loss(o[None], targets[i:i + 1]).sum(), outputs[i]) for i in range(5)])
        torch.testing.assert_close(H, by_autograd, rtol=1e-12, atol=1e-14)
        U = task.output_hessian_factor(outputs, targets)
        torch.testing.assert_close(U @ U.transpose(1, 2), H, rtol=1e-12, atol=1e-14)
        assert U.shape[2] == (1 if classes == 2 else classes)


def test_generic_factor_clips_negative_curvature_and_drops_null_directions():
    class Cubic(inf.RegressionTask):  # a loss whose output Hessian can be negative
        convex_loss = False

        def loss(self, outputs, targets):
            return ((outputs - targets) ** 3).sum(dim=1) / 6

        def output_hessian_vp(self, outputs, targets, U):
            return U * (outputs - targets)

    task = Cubic()
    outputs, targets = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)
    U = task.output_hessian_factor(outputs, targets)
    assert U.shape == (1, 3, 1)  # one positive direction; the negative one clipped, the zero one dropped
    torch.testing.assert_close(U @ U.transpose(1, 2), torch.diag(torch.tensor([1.0, 0, 0], dtype=torch.float64))[None])
