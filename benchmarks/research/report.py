"""Markdown tables from benchmarks/research/results/*.jsonl (written by study.py).

    python benchmarks/research/report.py [lds|mislabel|all]

- damping curves: one row per (problem, candidate, variant), one column per damping ratio
  (λ = ratio × mean eigenvalue of the curvature), the metric in the cells;
- the other settings (absolute dampings, truncations, sketches, peers) as plain rows with
  their paired-bootstrap interval against the problem's reference (LDS: exact at ratio 0.3,
  or the largest rank where exact is out of reach; mislabel: Kronfluence EK-FAC defaults).
A config recorded twice keeps its last row.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RATIO = re.compile(r"^(?P<variant>.*?)(?:, )?ratio (?P<ratio>[0-9.e+-]+)$")


def load(kind: str) -> list[dict]:
    path = RESULTS / f"{kind}.jsonl"
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows[(r["problem"], r["candidate"], r["setting"])] = r
    return list(rows.values())


def fmt(v, digits=3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def ci(r: dict) -> str:
    key = "diff_vs_ref" if "diff_vs_ref" in r else "diff_vs_kron" if "diff_vs_kron" in r else None
    if key is None:
        return "—"
    return f"{r[key]:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]"


def curves(rows: list[dict]) -> list[str]:
    table = defaultdict(dict)
    ratios = set()
    for r in rows:
        m = RATIO.match(r["setting"])
        if m:
            ratio = float(m["ratio"])
            ratios.add(ratio)
            table[(r["problem"], r["candidate"], m["variant"] or "—")][ratio] = r["metric"]
    ratios = sorted(ratios)
    out = ["| problem | candidate | variant | " + " | ".join(f"{x:g}" for x in ratios) + " | best |",
           "|" + "---|" * (len(ratios) + 4)]
    for (problem, cand, variant), cells in table.items():
        if len(cells) < 3:
            continue
        best = max(cells, key=cells.get)
        out.append(f"| {problem} | {cand} | {variant} | " + " | ".join(fmt(cells.get(x)) for x in ratios)
                   + f" | {cells[best]:.3f} @ {best:g} |")
    return out


def plain(rows: list[dict], keep) -> list[str]:
    out = ["| problem | candidate | setting | metric | Δ vs reference [95% CI] | times (s) | load |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if not keep(r):
            continue
        times = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in r.items() if k.endswith("_s") and isinstance(v, float))
        out.append(f"| {r['problem']} | {r['candidate']} | {r['setting']} | {r['metric']:.3f} | {ci(r)} | "
                   f"{times or '—'} | {r.get('load', '—')} |")
    return out


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    for kind in ("lds", "mislabel"):
        if which not in (kind, "all"):
            continue
        rows = load(kind)
        if not rows:
            continue
        print(f"\n### {kind}: damping curves (metric vs ratio)\n")
        print("\n".join(curves(rows)))
        print(f"\n### {kind}: other settings\n")
        print("\n".join(plain(rows, lambda r: not RATIO.match(r["setting"]) or r["setting"].endswith("ratio 0.3")
                              and ("keep" in r["setting"] or "sketch" in r["setting"] or "passes" in r["setting"]))))


if __name__ == "__main__":
    main()
