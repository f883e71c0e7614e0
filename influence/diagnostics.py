"""`Diagnostics`: what a fit chose and found, as a typed, frozen record.

Fields every fit has are attributes (`attr.diagnostics.n_train`); what one method reports
(e.g. EK-FAC's layers, an iterative solver's damping source) is in `method_info`; the worst
solve of the last query is `last_solve`. It is also a read-only mapping over all of them, flat,
as the diagnostics always were: `attr.diagnostics["method"]`, `.get("damping_source")`,
`dict(attr.diagnostics)`. A query never changes a `Diagnostics`: it gives the Attributor a
new one with its `last_solve`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Diagnostics(Mapping):
    """What `Attributor.fit` chose and found.

    Attributes:
        method: the method used (e.g. "ekfac"); method_choice: why (the "auto" rule, or "given").
        curvature: "ggn" / "hessian", or None for a method without curvature;
            curvature_backend: how its products were computed.
        damping: λ in use (None for methods without damping).
        n_train, n_params, feature_dim: training examples, attributed parameters, and the
            length of each stored feature vector.
        parameters: which parameters are attributed (`influence.parameters.parameter_report`).
        method_info: what the method's fit reported (damping source, spectrum, layers...).
        last_solve: the worst solve of the last query (iterative methods), else None.
        query_kernels: the scoring path the last `top_k` ran ("triton:score_topk", the fused
            Triton kernel, or "torch:score_topk", its twin), else None.
    """

    method: str
    method_choice: str
    curvature: str | None
    curvature_backend: str | None
    damping: float | None
    n_train: int
    n_params: int
    feature_dim: int
    parameters: dict = field(default_factory=dict)
    method_info: dict = field(default_factory=dict)
    last_solve: dict | None = None
    query_kernels: str | None = None

    def _flat(self) -> dict[str, Any]:
        common = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name not in ("method_info", "last_solve", "query_kernels")}
        query = {name: getattr(self, name) for name in ("last_solve", "query_kernels")
                 if getattr(self, name) is not None}
        return {**self.method_info, **common, **query}

    def __getitem__(self, key: str) -> Any:
        return self._flat()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())

    def to_dict(self) -> dict[str, Any]:
        """A plain, flat dict (what an index folder's manifest and the report store)."""
        return dict(self._flat())

    def with_solve(self, last_solve: dict | None) -> Diagnostics:
        """A copy with `last_solve` set (what a query hands back)."""
        return replace(self, last_solve=last_solve)

    def with_query_kernels(self, path: str) -> Diagnostics:
        """A copy with `query_kernels` set (what `top_k` hands back)."""
        return replace(self, query_kernels=path)

    @classmethod
    def from_dict(cls, flat: Mapping[str, Any]) -> Diagnostics:
        """The inverse of `to_dict` (e.g. from an index folder's manifest)."""
        names = {f.name for f in fields(cls)} - {"method_info"}
        known = {k: v for k, v in flat.items() if k in names}
        return cls(**known, method_info={k: v for k, v in flat.items() if k not in names})
