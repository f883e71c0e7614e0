"""The reproducibility guarantee the suite asserts between computation paths (fitted vs
loaded vs resumed indexes, scores vs top_k, one thread vs two, one CPU's kernels vs
another's): equal to float rounding — rtol 1e-12 in float64, 1e-5 in float32 — and the same
ranking of training examples for every test row. Bitwise equality is not promised: products
of other shapes, or on other CPUs, round differently."""

import torch


def rtol_for(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-5


def assert_same_scores(got: torch.Tensor, expected: torch.Tensor) -> None:
    """`got` equals `expected` to float rounding and ranks every row's entries the same way
    (up to ties within that rounding). Both Tensor[n_test, n_train] (or [n])."""
    got, expected = torch.atleast_2d(got), torch.atleast_2d(expected)
    rtol = rtol_for(expected.dtype)
    atol = rtol * float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    in_expected_order = torch.gather(got, 1, expected.argsort(dim=1))
    assert bool((in_expected_order.diff(dim=1) >= -2 * atol).all()), "the rankings differ beyond rounding"
