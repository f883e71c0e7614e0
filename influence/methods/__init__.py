"""Attribution methods; importing this package registers every built-in method."""

from influence.methods import arnoldi, cg, ekfac, exact, identity, lissa, tracin, trak  # noqa: F401  (registration)
from influence.methods.base import METHODS, Method, method_class, register

__all__ = ["METHODS", "Method", "method_class", "register"]
