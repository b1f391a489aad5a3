"""Interleaved rounds, their summaries and the shared result format of every benchmark.

Why: rows measured one after another absorb whatever the shared machine does meanwhile (two consecutive runs
put the floor at 0.042 ms and 0.142 ms). Rows are measured in rounds instead, each round visiting every row
once (the order rotated from round to round), and a row's figure is the median of its per-round values,
shown with the spread (min-max) of those values. A ratio between two rows is computed in each round, from
values measured seconds apart, and then summarised the same way.

Every benchmark builds a :class:`Section` (rows x metrics, ratios, goals, facts) that prints as text, dumps
as JSON (``--json``) and renders as Markdown; ``bench/all.py`` gathers them into one report.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

_K = TypeVar("_K")
TIMES = "\u00d7"  # the multiplication sign of the Markdown tables
DASH = "\u2013"  # the en dash of ranges


def order(items: Sequence[_K], rnd: int) -> list[_K]:
    """The visiting order of round ``rnd``: the list rotated by one more place each round."""
    if not items:
        return []
    k = rnd % len(items)
    return [*items[k:], *items[:k]]


def schedule(items: Sequence[_K], rounds: int) -> Iterator[tuple[int, _K]]:
    """``(round, item)`` pairs: every item once per round, rounds one after another, orders rotated."""
    for rnd in range(rounds):
        for item in order(items, rnd):
            yield rnd, item


@dataclass
class Stat:
    """A summary of per-round values: their median and spread."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        v = sorted(x for x in values if not math.isnan(x))
        if not v:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, 0, [])
        if len(v) >= 2:
            q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
        else:
            q1 = q3 = v[0]
        return cls(statistics.median(v), v[0], v[-1], q1, q3, len(v), list(values))


def median_ms(latencies: Sequence[float]) -> float:
    """Median of latencies in seconds, in milliseconds."""
    return statistics.median(latencies) * 1000


def p99_ms(latencies: Sequence[float]) -> float:
    s = sorted(latencies)
    return s[min(len(s) - 1, int(len(s) * 0.99))] * 1000


def latency_metrics(latencies: Sequence[float]) -> dict[str, float]:
    """What a round of sequential calls yields: its median and p99, in ms."""
    return {"median_ms": median_ms(latencies), "p99_ms": p99_ms(latencies)}


class Rounds:
    """Per-round values: ``values[row][metric][round]``."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, dict[int, float]]] = {}

    def add(self, row: str, rnd: int, metrics: Mapping[str, float]) -> None:
        cell = self.values.setdefault(row, {})
        for metric, value in metrics.items():
            cell.setdefault(metric, {})[rnd] = float(value)

    def stat(self, row: str, metric: str) -> Stat:
        return Stat.of(list(self.values.get(row, {}).get(metric, {}).values()))

    def ratio(self, row: str, base: str, metric: str) -> Stat:
        """``row / base`` computed round by round (same round, seconds apart), then summarised."""
        a = self.values.get(row, {}).get(metric, {})
        b = self.values.get(base, {}).get(metric, {})
        return Stat.of([a[r] / b[r] for r in sorted(a.keys() & b.keys()) if b[r]])


async def run_async(
    rows: Mapping[str, Callable[[int], Awaitable[Mapping[str, float]]]],
    rounds: int,
    results: Rounds | None = None,
    *,
    verbose: bool = True,
) -> Rounds:
    """Run ``rows[label](round)`` for every row in every round (interleaved); each returns its metrics."""
    results = results if results is not None else Rounds()
    for rnd, label in schedule(list(rows), rounds):
        metrics = await rows[label](rnd)
        results.add(label, rnd, metrics)
        if verbose:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            print(f"  round {rnd + 1}/{rounds}  {label:<40} {shown}", flush=True)
    return results


def run_sync(
    rows: Mapping[str, Callable[[int], Mapping[str, float]]],
    rounds: int,
    results: Rounds | None = None,
    *,
    verbose: bool = True,
) -> Rounds:
    """The same as :func:`run_async`, for blocking measurements (wrk)."""
    results = results if results is not None else Rounds()
    for rnd, label in schedule(list(rows), rounds):
        metrics = rows[label](rnd)
        results.add(label, rnd, metrics)
        if verbose:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            print(f"  round {rnd + 1}/{rounds}  {label:<40} {shown}", flush=True)
    return results


# --- the shared result format -----------------------------------------------------------------------------


@dataclass
class Column:
    """One metric shown as a column: ``metric`` of each row, with a header and a number format."""

    metric: str
    header: str
    fmt: str = "{:.3f}"
    unit: str = ""


@dataclass
class RatioColumn:
    """``metric`` of each row divided by that of ``base``, round by round."""

    metric: str
    base: str
    header: str


@dataclass
class Goal:
    what: str
    value: float
    goal: str
    met: bool


@dataclass
class Section:
    """One benchmark's figures: rows x columns (medians of round values), ratios, goals and notes."""

    name: str
    title: str
    command: str
    rounds: int
    rows: list[str]
    columns: list[Column]
    ratios: list[RatioColumn] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    results: Rounds = field(default_factory=Rounds)
    labels: dict[str, str] = field(default_factory=dict)  # row -> how it is shown, if not its key
    # a ratio column whose base differs per row: row -> base row, on the first column's metric
    vs: dict[str, str] = field(default_factory=dict)
    vs_header: str = "ratio"

    def goal(self, what: str, value: float, goal: str, met: bool) -> None:
        self.goals.append(Goal(what, value, goal, met))

    def to_json(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            metrics = {c.metric: asdict(self.results.stat(row, c.metric)) for c in self.columns}
            for metric in self.results.values.get(row, {}):
                metrics.setdefault(metric, asdict(self.results.stat(row, metric)))
            ratios = {
                f"{c.metric}/{c.base}": asdict(self.results.ratio(row, c.base, c.metric))
                for c in self.ratios
                if row != c.base
            }
            if row in self.vs:
                base, metric = self.vs[row], self.columns[0].metric
                ratios[f"{metric}/{base}"] = asdict(self.results.ratio(row, base, metric))
            label = self.labels.get(row, row)
            rows.append({"row": row, "label": label, "metrics": metrics, "ratios": ratios})
        return {
            "name": self.name,
            "title": self.title,
            "command": self.command,
            "rounds": self.rounds,
            "params": self.params,
            "rows": rows,
            "columns": [asdict(c) for c in self.columns],
            "ratio_columns": [asdict(c) for c in self.ratios],
            "vs": self.vs,
            "vs_header": self.vs_header,
            "goals": [asdict(g) for g in self.goals],
            "notes": self.notes,
        }

    def markdown(self) -> str:
        return render(self.to_json())


def render(sec: dict[str, Any]) -> str:
    """The Markdown table of one section, from its JSON (``Section.markdown`` and bench/all.py)."""
    cols = sec["columns"]
    ratio_cols = sec["ratio_columns"]
    vs = sec.get("vs", {})
    head = ["", *(c["header"] for c in cols), *(c["header"] for c in ratio_cols)]
    if vs:
        head.append(sec.get("vs_header", "ratio (per round)"))
    out = [
        f"### {sec['title']}",
        "",
        f"`{sec['command']}`: {sec['rounds']} interleaved rounds; median of the round values "
        f"(min{DASH}max of the rounds); ratios computed per round.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in sec["rows"]:
        cells = [row["label"]]
        for c in cols:
            s = row["metrics"].get(c["metric"])
            cells.append(_stat(s, c["fmt"], c["unit"]) if s else "")
        for c in ratio_cols:
            if row["row"] == c["base"]:
                cells.append("1.00")
            else:
                s = row["ratios"].get(f"{c['metric']}/{c['base']}")
                cells.append(_ratio(s) if s else "")
        if vs:
            base = vs.get(row["row"])
            s = row["ratios"].get(f"{cols[0]['metric']}/{base}") if base else None
            cells.append(f"{_ratio(s)} vs {base}" if s else "1.00" if base is None else "")
        out.append("| " + " | ".join(cells) + " |")
    if sec["goals"]:
        out.append("")
        for g in sec["goals"]:
            out.append(
                f"- {g['what']}: {g['value']:.3g} (goal {g['goal']}): {'met' if g['met'] else '**missed**'}"
            )
    out += [f"- {n}" for n in sec["notes"]]
    return "\n".join(out) + "\n"


def _stat(s: dict[str, Any], fmt: str, unit: str) -> str:
    if not s["n"]:
        return ""
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{fmt.format(s['median'])}{unit}"
    return f"{fmt.format(s['median'])}{unit} ({fmt.format(s['min'])}{DASH}{fmt.format(s['max'])})"


def _ratio(s: dict[str, Any]) -> str:
    if not s["n"]:
        return ""
    if s["n"] == 1:
        return f"{s['median']:.2f}{TIMES}"
    return f"{s['median']:.2f}{TIMES} ({s['min']:.2f}{DASH}{s['max']:.2f})"


def finish(sections: Sequence[Section], json_path: str | None) -> None:
    """Print the tables and, if asked, write them as JSON (``{"sections": [...]}``; bench/all.py reads it)."""
    for section in sections:
        print()
        print(section.markdown())
    if json_path:
        Path(json_path).write_text(json.dumps({"sections": [s.to_json() for s in sections]}, indent=1))


def goal_at_most(value: float, limit: float) -> tuple[str, bool]:
    return f"≤ {limit:g}", value <= limit


def goal_at_least(value: float, limit: float) -> tuple[str, bool]:
    return f"≥ {limit:g}", value >= limit
