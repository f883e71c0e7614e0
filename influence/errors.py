"""Exception and warning types raised by `influence`.

Every error names the argument at fault and what was expected, so that a user can fix the
call without reading our source.
"""


class InfluenceError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidArgumentError(InfluenceError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class NotFittedError(InfluenceError, RuntimeError):
    """A query was made before `Attributor.fit()`."""


class IndexFolderError(InfluenceError):
    """An index folder is incomplete, corrupted, or was built for another model or settings."""


class InfluenceWarning(UserWarning):
    """A result was computed but may be unreliable (e.g. a solver did not converge)."""


class NonDeterministicError(InfluenceError, RuntimeError):
    """A training run cannot be replayed exactly (dropout, a data loader's own order, atomics, ...)."""
