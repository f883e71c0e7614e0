"""Attribution methods; importing this package registers every built-in method."""

from influence.methods import cg, exact, identity, lissa  # noqa: F401  (registration)
from influence.methods.base import METHODS, Method, method_class, register

__all__ = ["METHODS", "Method", "method_class", "register"]
