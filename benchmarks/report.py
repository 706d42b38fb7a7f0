"""Results: rows with their baseline and ratio, targets, tables, the summary and the JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.measure import median


@dataclass(frozen=True)
class Column:
    """One figure shown for every row, with its ratio to the baseline row next to it."""

    key: str
    header: str
    digits: int = 2


@dataclass
class Row:
    """One candidate: a figure per column, each the median of its rounds."""

    name: str
    label: str
    rounds: dict[str, list[float]] = field(default_factory=dict)
    #: Why the row has no figures ("not measured (...)"), or a remark shown after it.
    note: str = ""
    measured: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> float | None:
        values = self.rounds.get(key)
        return median(values) if values else None

    @classmethod
    def not_measured(cls, name: str, label: str, reason: str) -> Row:
        return cls(name, label, note=f"not measured ({reason})", measured=False)


@dataclass
class Table:
    """Rows of one measurement, each compared with the ``baseline`` row."""

    title: str
    columns: Sequence[Column]
    baseline: str
    rows: list[Row] = field(default_factory=list)

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def value(self, name: str, key: str) -> float | None:
        try:
            row = self.row(name)
        except KeyError:
            return None
        return row.value(key) if row.measured else None

    def _paired(
        self, name: str, key: str, to: str | None
    ) -> tuple[list[float], list[float]] | None:
        """The rounds of ``name`` and of ``to``, when both have the same count."""
        try:
            row, base = self.row(name), self.row(to or self.baseline)
        except KeyError:
            return None
        if not (row.measured and base.measured):
            return None
        values, bases = row.rounds.get(key, []), base.rounds.get(key, [])
        if not values or len(values) != len(bases):
            return None
        return values, bases

    def ratio(self, name: str, key: str, to: str | None = None) -> float | None:
        """``name`` over ``to`` (the baseline): the median of the per-round ratios.

        Round ``i`` of every candidate ran at about the same time (see
        :func:`~benchmarks.measure.interleaved`), so the ratio of each pair of rounds
        cancels what the machine was doing then; without paired rounds, the ratio of
        the medians.
        """
        paired = self._paired(name, key, to)
        if paired is not None and all(paired[1]):
            return median([v / b for v, b in zip(*paired, strict=True)])
        value, base = self.value(name, key), self.value(to or self.baseline, key)
        if value is None or not base:
            return None
        return value / base

    def difference(self, name: str, key: str, to: str | None = None) -> float | None:
        """``name`` minus ``to`` (the baseline): the median of the per-round differences."""
        paired = self._paired(name, key, to)
        if paired is not None:
            return median([v - b for v, b in zip(*paired, strict=True)])
        value, base = self.value(name, key), self.value(to or self.baseline, key)
        if value is None or base is None:
            return None
        return value - base


@dataclass
class Target:
    """One line of the summary: a figure, what it should be, whether it is."""

    scenario: str
    name: str
    figure: str
    target: str
    #: ``None`` when the figure could not be measured.
    met: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]


@dataclass
class ScenarioReport:
    """What one scenario produced."""

    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0


def format_number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}" if digits else f"{value:.0f}"
    return f"{value:.{digits}f}"


def render_table(table: Table) -> str:
    """The table as text: a figure and its ratio to the baseline per column."""
    header = ["candidate"]
    for column in table.columns:
        header += [column.header, "ratio"]
    lines: list[list[str]] = []
    notes: list[str] = []
    for row in table.rows:
        label = row.label + (" [baseline]" if row.name == table.baseline else "")
        if not row.measured:
            lines.append([label] + ["-", ""] * len(table.columns))
            notes.append(f"  {row.label}: {row.note}")
            continue
        cells = [label]
        for column in table.columns:
            ratio = table.ratio(row.name, column.key)
            cells.append(format_number(row.value(column.key), column.digits))
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        lines.append(cells)
        if row.note:
            notes.append(f"  {row.label}: {row.note}")
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    out = [table.title]
    for cells in [header, *lines]:
        cells_text = zip(cells[1:], widths[1:], strict=True)
        text = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in cells_text]
        out.append("  ".join(text).rstrip())
    out.extend(notes)
    return "\n".join(out)


def render_scenario(report: ScenarioReport) -> str:
    out = [f"== {report.title}"]
    if report.skipped:
        out.append(f"skipped ({report.skipped})")
    for table in report.tables:
        out.append(render_table(table))
        out.append("")
    out.extend(f"note: {note}" for note in report.notes)
    return "\n".join(out).rstrip() + "\n"


def render_summary(reports: Sequence[ScenarioReport]) -> str:
    targets = [target for report in reports for target in report.targets]
    if not targets:
        return "== Summary: no targets measured\n"
    rows = [["scenario", "target", "figure", "wanted", "verdict"]]
    notes = []
    for target in targets:
        rows.append([target.scenario, target.name, target.figure, target.target, target.verdict])
        if target.note:
            notes.append(f"  {target.scenario} {target.name}: {target.note}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["== Summary"]
    for cells in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    met = sum(1 for t in targets if t.met)
    missed = sum(1 for t in targets if t.met is False)
    unmeasured = sum(1 for t in targets if t.met is None)
    out.append(f"{met} met, {missed} missed, {unmeasured} not measured")
    out.extend(notes)
    return "\n".join(out) + "\n"


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "executable": sys.executable,
    }


def _table_json(table: Table) -> dict[str, Any]:
    rows = []
    for row in table.rows:
        figures = {c.key: row.value(c.key) if row.measured else None for c in table.columns}
        ratios = {c.key: table.ratio(row.name, c.key) for c in table.columns}
        rows.append(
            {
                "name": row.name,
                "label": row.label,
                "measured": row.measured,
                "note": row.note,
                "figures": figures,
                "ratios_to_baseline": ratios,
                "rounds": row.rounds,
                **({"extra": row.extra} if row.extra else {}),
            }
        )
    return {
        "title": table.title,
        "baseline": table.baseline,
        "columns": [asdict(c) for c in table.columns],
        "rows": rows,
    }


def results_json(
    reports: Sequence[ScenarioReport], *, quick: bool, version: str, seconds: float
) -> dict[str, Any]:
    """Everything a run measured, for comparing versions."""
    return {
        "format": 1,
        "package_version": version,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "seconds": round(seconds, 1),
        "machine": machine_info(),
        "scenarios": {
            report.key: {
                "title": report.title,
                "skipped": report.skipped,
                "settings": report.settings,
                "notes": report.notes,
                "seconds": round(report.seconds, 1),
                "tables": [_table_json(table) for table in report.tables],
            }
            for report in reports
        },
        "targets": [asdict(target) for target in (t for r in reports for t in r.targets)],
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
