"""Figures and the table: one figure is a series of values (median, min, max) with an optional target."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .util import median, progress

# Issue 9: every path's channel within max(3 ms, 20 %) of the reference client's time.
PATH_TARGET_MS = 3.0
PATH_TARGET_SHARE = 0.20


def allowed_difference(reference_ms: float) -> float:
    """How far a channel's median may lie from the reference's median: max(3 ms, 20 %)."""
    return max(PATH_TARGET_MS, PATH_TARGET_SHARE * abs(reference_ms))


@dataclass
class Figure:
    section: str
    key: str
    label: str
    unit: str
    values: List[float] = field(default_factory=list)
    limit: Optional[float] = None  # PASS when the median is <= limit
    shown: Optional[str] = None  # a text instead of median/min/max (e.g. "140/140")
    passed: Optional[bool] = None  # for `shown` figures with a target
    target_text: str = ""

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.values) if self.values else None

    @property
    def result(self) -> str:
        if self.passed is not None:
            return "PASS" if self.passed else "MISS"
        if self.limit is None:
            # a comparison whose target could not be judged (no values on one side)
            return "n/a" if self.target_text and not self.values and self.shown is None else ""
        median = self.median
        if median is None:
            return "n/a"
        return "PASS" if median <= self.limit else "MISS"

    @property
    def target(self) -> str:
        if self.target_text:
            return self.target_text
        if self.limit is None:
            return ""
        return f"<= {self.limit:g} {self.unit}".rstrip()

    def cells(self) -> List[str]:
        if self.shown is not None:
            return [self.shown, "", ""]
        if not self.values:
            return ["n/a", "", ""]
        if len(self.values) == 1:  # e.g. a ratio of two medians
            return [num(self.values[0]), "", ""]
        return [num(self.median), num(min(self.values)), num(max(self.values))]

    def as_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"section": self.section, "label": self.label, "unit": self.unit}
        if self.shown is not None:
            data["value"] = self.shown
        if self.values:
            data.update(
                median=round(statistics.median(self.values), 3),
                min=round(min(self.values), 3),
                max=round(max(self.values), 3),
                n=len(self.values),
                values=[round(v, 3) for v in self.values],
            )
        if self.target:
            data["target"] = self.target
            data["result"] = self.result
        return data


def num(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Results:
    def __init__(self) -> None:
        self.figures: List[Figure] = []
        self.notes: Dict[str, List[str]] = {}
        self.meta: Dict[str, Any] = {}

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def stat(
        self, section: str, key: str, label: str, unit: str, values: Sequence[float], limit: Optional[float] = None
    ) -> Figure:
        return self.add(Figure(section, key, label, unit, [float(v) for v in values], limit))

    def difference(self, section: str, key: str, label: str, sensor: Sequence[float],
                   reference: Sequence[float]) -> Figure:
        """median(sensor) - median(reference), judged against the issue's target for a path."""
        return self.add(difference_figure(section, key, label, sensor, reference))

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)
        progress(f"{section}: {text}")

    def table(self) -> str:
        head = ["figure", "unit", "median", "min", "max", "target", "result"]
        rows: List[List[str]] = []
        sections: List[str] = []
        for fig in self.figures:
            if fig.section not in sections:
                sections.append(fig.section)
        for section in list(self.notes):
            if section not in sections:
                sections.append(section)
        lines: List[str] = []
        width = [len(h) for h in head]
        per_section: Dict[str, List[List[str]]] = {}
        for fig in self.figures:
            row = [fig.label, fig.unit, *fig.cells(), fig.target, fig.result]
            per_section.setdefault(fig.section, []).append(row)
            rows.append(row)
        for row in rows:
            width = [max(w, len(c)) for w, c in zip(width, row)]

        def fmt(row: List[str]) -> str:
            left = row[0].ljust(width[0])
            unit = row[1].ljust(width[1])
            nums = "  ".join(c.rjust(w) for c, w in zip(row[2:5], width[2:5]))
            return f"{left}  {unit}  {nums}  {row[5].ljust(width[5])}  {row[6]}".rstrip()

        lines.append(fmt(head))
        lines.append("-" * len(fmt(head)))
        for section in sections:
            lines.append(f"[{section}]")
            lines.extend(fmt(row) for row in per_section.get(section, []))
            for text in self.notes.get(section, []):
                lines.append(f"  - {text}")
        return "\n".join(lines)

    def as_json(self) -> Dict[str, Any]:
        return {
            "figures": {fig.key: fig.as_json() for fig in self.figures},
            "notes": self.notes,
            "meta": self.meta,
        }


def difference_figure(section: str, key: str, label: str, sensor: Sequence[float],
                      reference: Sequence[float]) -> Figure:
    """One value, median(sensor) - median(reference); PASS when within allowed_difference()."""
    s, r = median(sensor), median(reference)
    if s is None or r is None:
        return Figure(section, key, label, "ms", [], target_text="within max(3 ms, 20%)")
    diff = s - r
    allowed = allowed_difference(r)
    return Figure(section, key, label, "ms", [diff], passed=abs(diff) <= allowed,
                  target_text=f"|d| <= {allowed:.1f} ms")


def print_results(results: Results, header: str, wall: float, keep_stack: bool, as_json: bool) -> None:
    """The bench's output on stdout: the header line, the table, the target count, the load and
    the wall time, and with --json one line of JSON with every figure."""
    print(header)
    print(results.table())
    misses = [f.key for f in results.figures if f.result == "MISS"]
    print(f"targets: {sum(f.result == 'PASS' for f in results.figures)} PASS, {len(misses)} MISS"
          + (f" ({', '.join(misses)})" if misses else ""))
    print(f"load average before {results.meta['load_before']}, after {results.meta['load_after']}; "
          f"benchmark wall time: {wall:.1f} s" + ("; mail stack left running" if keep_stack else ""))
    if as_json:
        print(json.dumps(results.as_json(), sort_keys=True))
