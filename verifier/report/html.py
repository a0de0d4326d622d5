"""One self-contained HTML file (inline CSS and SVG, no scripts, nothing fetched) with a
picture per cell: the soak's timeline, so people see a verdict before they read it.

Each picture has three panels on one time axis (seconds of flood; a cell's trials side
by side, divided by a line): the flood's connection cycles per second, the latency of
every liveness probe (a failed probe is a red cross), and the cumulative EMFILE episodes
and amplifier triggers. A hang is marked where the first probe failed (dashed) and where
it was proven (solid, with how: a lock cycle, the process state, or timing). Saturation
episodes are amber ticks. The caption is the verdict headline; the frame has the
verdict's colour. A trial recorded before timelines existed shows its totals and its
hang marker only.

``render_html`` takes a matrix ``GateReport`` (grid, comparisons, one figure per cell) or
a list of cells or verify outcomes (one figure each).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from verifier.matrix.cells import CellResult
from verifier.matrix.gate import CellState, GateReport, JudgedCell
from verifier.records.timeline import Event, EventKind, Sample, Timeline
from verifier.records.trial import TrialResult
from verifier.report.matrix_grid import verdict_text
from verifier.vocabulary import TrialOutcome, VerdictKind

KIND_COLOURS = {
    VerdictKind.PASS: "#2e7d32",
    VerdictKind.HANG: "#c62828",
    VerdictKind.CRASH: "#6a1b9a",
    VerdictKind.INCONCLUSIVE: "#ef6c00",
    VerdictKind.NOT_APPLICABLE: "#757575",
    VerdictKind.ERROR: "#212121",
}
NO_VERDICT_COLOUR = "#212121"
SERIES = {
    "rate": ("#1565c0", "flood: connection cycles/s"),
    "probe": ("#2e7d32", "probe latency (ms)"),
    "failed": ("#c62828", "failed probe"),
    "emfile": ("#ef6c00", "EMFILE episodes (cumulative)"),
    "triggers": ("#6a1b9a", "amplifier triggers (cumulative)"),
    "saturated": ("#f9a825", "saturated (recovered after drain)"),
    "hang": ("#c62828", "hang suspected (dashed), proven (solid)"),
}
MAX_POINTS = 1200  # per series and trial; a 1 h soak has 3,600 samples

WIDTH, LEFT, RIGHT = 820, 64, 20
PANELS = (("rate", 80), ("probe", 56), ("counts", 64))
PANEL_GAP, TOP, AXIS_H, LEGEND_H = 10, 16, 30, 58


@dataclass
class TrialView:
    index: int
    outcome: str
    span_s: float  # width on the time axis
    timeline: Timeline
    emfile: int
    triggers: int
    run_dir: str


@dataclass
class CellView:
    anchor: str
    title: str
    kind: VerdictKind | None
    headline: str
    short: str
    state: str = ""  # met, missed, skipped, error ("" for a plain verify outcome)
    expectation: str = ""
    cached: bool = False
    evidence: str = ""
    comparisons: list[str] = field(default_factory=list)
    trials: list[TrialView] = field(default_factory=list)

    @property
    def colour(self) -> str:
        return KIND_COLOURS.get(self.kind, NO_VERDICT_COLOUR) if self.kind else NO_VERDICT_COLOUR


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(text: str) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def _events_from_fields(trial: TrialResult) -> list[Event]:
    """Hang and crash markers of a trial recorded without a timeline."""
    events = []
    proof = trial.proof
    if trial.outcome == TrialOutcome.HANG and trial.time_to_hang_s is not None:
        events.append(Event(float(trial.time_to_hang_s), EventKind.HANG_SUSPECTED))
        proven = trial.verdict_at_s if trial.verdict_at_s is not None else trial.time_to_hang_s
        events.append(Event(float(proven), EventKind.HANG_PROVEN, str(proof or "")))
    elif trial.outcome == TrialOutcome.CRASH:
        events.append(Event(float(trial.soak_s), EventKind.CRASH, trial.crash_signal or ""))
    return events


def _trial_view(trial: TrialResult) -> TrialView:
    timeline = trial.timeline
    if not timeline.events:  # recorded before timelines: the markers from the fields
        timeline = Timeline(list(timeline.samples), _events_from_fields(trial))
    ends = [float(trial.soak_s or 0.0)]
    ends += [s.t for s in timeline.samples] + [e.t for e in timeline.events]
    return TrialView(
        index=int(trial.index),
        outcome=str(trial.outcome),
        span_s=max(1.0, *ends),
        timeline=timeline,
        emfile=int(trial.emfile_episodes),
        triggers=int(trial.amplifier_triggers),
        run_dir=str(trial.run_dir),
    )


def _failure_message(result: CellResult) -> str:
    return result.failure.message if result.failure else ""


def _view_of_cell(cell: JudgedCell | CellResult, report: GateReport | None) -> CellView:
    judged = cell if isinstance(cell, JudgedCell) else None
    result = judged.result if judged else cell
    assert isinstance(result, CellResult)
    title = f"{result.row} · {result.patch_set} × {result.scenario}"
    verdict = result.verdict
    comparisons = []
    if report is not None:
        comparisons = [
            c.sentence
            for c in report.comparisons_for(result.row, result.scenario)
            if c.candidate == result.patch_set
        ]
    return CellView(
        anchor=_anchor(f"{result.row}-{result.patch_set}-{result.scenario}"),
        title=title,
        kind=verdict.kind if verdict else None,
        headline=verdict.headline if verdict else _failure_message(result),
        short=verdict_text(result),
        state=str(judged.state) if judged else "",
        expectation=judged.expectation if judged else "",
        cached=result.cached,
        evidence=result.evidence,
        comparisons=comparisons,
        trials=[_trial_view(t) for t in result.trials],
    )


def _view_of_outcome(outcome: Any, number: int) -> CellView:
    """A ``VerifyOutcome`` (duck-typed: build, scenario, verdict, trials, run_dir)."""
    build, verdict = outcome.build, outcome.verdict
    kind = VerdictKind(str(verdict.kind))
    title = f"{build.describe} ({build.commit[:12]}) × {outcome.scenario.name}"
    return CellView(
        anchor=_anchor(f"verify-{number}-{outcome.scenario.name}"),
        title=title,
        kind=kind,
        headline=verdict.headline,
        short=str(kind),
        evidence=str(outcome.run_dir),
        trials=[_trial_view(t) for t in outcome.trials],
    )


def _views(items: Iterable[Any], report: GateReport | None) -> list[CellView]:
    views = []
    for number, item in enumerate(items, 1):
        if isinstance(item, JudgedCell | CellResult):
            views.append(_view_of_cell(item, report))
        else:
            views.append(_view_of_outcome(item, number))
    return views


# --- the picture -------------------------------------------------------------------------


def nice_ceiling(value: float) -> float:
    """The next 1, 2, 2.5 or 5 x 10^k at or above ``value`` (an axis maximum)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _fmt(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    return f"{value:g}"


def _thin(samples: list[Sample]) -> list[Sample]:
    if len(samples) <= MAX_POINTS:
        return samples
    stride = math.ceil(len(samples) / MAX_POINTS)
    return [s for i, s in enumerate(samples) if i % stride == 0 or not s.probe_ok]


class _Canvas:
    """Maps (trial offset + t, value) to SVG coordinates for one cell's picture."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self.plot_w = WIDTH - LEFT - RIGHT
        self.tops: dict[str, tuple[float, float]] = {}
        y = TOP
        for name, height in PANELS:
            self.tops[name] = (y, height)
            y += height + PANEL_GAP
        self.bottom = y - PANEL_GAP
        self.height = self.bottom + AXIS_H + LEGEND_H

    def x(self, t: float) -> float:
        return LEFT + self.plot_w * t / self.total_s

    def y(self, panel: str, value: float, top_value: float) -> float:
        top, height = self.tops[panel]
        return top + height - height * min(value, top_value) / top_value


def _polyline(points: list[tuple[float, float]], colour: str, *, width: float = 1.5) -> str:
    if not points:
        return ""
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (
        f'<polyline points="{coords}" fill="none" stroke="{colour}" '
        f'stroke-width="{width}" stroke-linejoin="round"/>'
    )


def _steps(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for x, y in points:
        if out:
            out.append((x, out[-1][1]))
        out.append((x, y))
    return out


def _panel_frame(canvas: _Canvas, panel: str, label: str, top_value: float | None) -> list[str]:
    """A panel's box, its label and its y axis (0 and the top value; none without data)."""
    top, height = canvas.tops[panel]
    parts = [
        f'<rect x="{LEFT}" y="{top}" width="{canvas.plot_w}" height="{height}" class="panel"/>',
        f'<text x="{LEFT + 4}" y="{top + 11}" class="plabel">{_esc(label)}</text>',
    ]
    if top_value is not None:
        parts += [
            f'<text x="{LEFT - 6}" y="{top + 9}" class="tick" text-anchor="end">'
            f"{_esc(_fmt(top_value))}</text>",
            f'<text x="{LEFT - 6}" y="{top + height}" class="tick" text-anchor="end">0</text>',
        ]
    return parts


def _x_axis(canvas: _Canvas) -> list[str]:
    step = nice_ceiling(canvas.total_s / 8)
    parts = [
        f'<line x1="{LEFT}" y1="{canvas.bottom}" x2="{LEFT + canvas.plot_w}" '
        f'y2="{canvas.bottom}" class="axis"/>'
    ]
    tick = 0.0
    while tick <= canvas.total_s + 1e-9:
        x = canvas.x(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{canvas.bottom}" x2="{x:.1f}" y2="{canvas.bottom + 4}" '
            'class="axis"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{canvas.bottom + 15}" class="tick" '
            f'text-anchor="middle">{_fmt(round(tick, 3))}</text>'
        )
        tick += step
    parts.append(
        f'<text x="{LEFT + canvas.plot_w}" y="{canvas.bottom + 27}" class="tick" '
        'text-anchor="end">seconds of flood (trials side by side)</text>'
    )
    return parts


def _legend(canvas: _Canvas) -> list[str]:
    parts = []
    y = canvas.bottom + AXIS_H + 6
    x = LEFT
    keys = ("rate", "probe", "failed", "emfile", "triggers", "saturated", "hang")
    for index, key in enumerate(keys):
        colour, label = SERIES[key]
        if index in (3, 6):
            x, y = LEFT, y + 16
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="4" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{y + 5}" class="legend">{_esc(label)}</text>')
        x += 16 + 7 * len(label) + 18
    return parts


def _event_marks(
    canvas: _Canvas, offset: float, events: list[Event], trial_note: str = ""
) -> list[str]:
    """Saturation ticks, hang markers (suspected, proven and how), crash, flood end."""
    parts = []
    top = TOP
    for event in events:
        x = canvas.x(offset + event.t)
        if event.kind == EventKind.SATURATED:
            y = canvas.tops["probe"][0]
            parts.append(
                f'<path d="M{x - 4:.1f},{y - 6:.1f} L{x + 4:.1f},{y - 6:.1f} L{x:.1f},{y:.1f} Z" '
                f'fill="{SERIES["saturated"][0]}"><title>saturated at {event.t:.1f} s'
                f"</title></path>"
            )
        elif event.kind == EventKind.HANG_SUSPECTED:
            parts.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{canvas.bottom}" '
                'class="hang suspected"/>'
            )
        elif event.kind in (EventKind.HANG_PROVEN, EventKind.CRASH):
            what = "HANG proven" if event.kind == EventKind.HANG_PROVEN else "CRASH"
            how = f" by {event.detail}" if event.detail else ""
            label = f"{what}{how} at {event.t:.1f} s{trial_note}"
            css = "hang proven" if event.kind == EventKind.HANG_PROVEN else "crash"
            anchor = "end" if x > LEFT + canvas.plot_w * 0.6 else "start"
            dx = -4 if anchor == "end" else 4
            parts.append(
                f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{canvas.bottom}" '
                f'class="{css}"/>'
            )
            parts.append(
                f'<text x="{x + dx:.1f}" y="{top + 2}" class="marker" '
                f'text-anchor="{anchor}">{_esc(label)}</text>'
            )
        elif event.kind == EventKind.FLOOD_ENDED:
            parts.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{canvas.bottom}" '
                f'class="ended"><title>flood ended at {event.t:.1f} s</title></line>'
            )
    return parts


def _series(
    canvas: _Canvas,
    offset: float,
    shown: list[Sample],
    rate_top: float,
    latency_top: float,
    count_top: float,
) -> list[str]:
    """One trial's samples: flood rate, probe latencies and failures, cumulative counts."""
    xs = [canvas.x(offset + s.t) for s in shown]
    pairs = list(zip(xs, shown, strict=True))
    rate = [(x, canvas.y("rate", s.cycles_per_s, rate_top)) for x, s in pairs]
    parts = [_polyline(rate, SERIES["rate"][0])]
    for x, s in pairs:
        if s.probe_ok:
            y = canvas.y("probe", s.probe_latency_s * 1000, latency_top)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" class="probe-ok"/>')
        else:
            y = canvas.tops["probe"][0] + 8
            parts.append(
                f'<path d="M{x - 3:.1f},{y - 3:.1f} L{x + 3:.1f},{y + 3:.1f} '
                f'M{x - 3:.1f},{y + 3:.1f} L{x + 3:.1f},{y - 3:.1f}" class="probe-failed"/>'
            )
    emfile = [(x, canvas.y("counts", s.emfile_episodes, count_top)) for x, s in pairs]
    triggers = [(x, canvas.y("counts", s.amplifier_triggers, count_top)) for x, s in pairs]
    parts.append(_polyline(_steps(emfile), SERIES["emfile"][0]))
    parts.append(_polyline(_steps(triggers), SERIES["triggers"][0], width=1.2))
    return parts


def timeline_svg(view: CellView) -> str:
    """The cell's picture (an inline ``<svg>``)."""
    trials = view.trials
    total = sum(t.span_s for t in trials) or 1.0
    canvas = _Canvas(total)
    samples = [s for t in trials for s in t.timeline.samples]
    rate_top = nice_ceiling(max((s.cycles_per_s for s in samples), default=0.0))
    latency_top = nice_ceiling(
        max((s.probe_latency_s * 1000 for s in samples if s.probe_ok), default=0.0)
    )
    count_top = nice_ceiling(
        max([s.emfile_episodes for s in samples] + [s.amplifier_triggers for s in samples] + [0])
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {WIDTH} {canvas.height}" width="{WIDTH}" height="{canvas.height}">',
        f"<title>{_esc(view.title)}: {_esc(view.headline)}</title>",
    ]
    axes = bool(samples)
    parts += _panel_frame(canvas, "rate", "flood cycles/s", rate_top if axes else None)
    parts += _panel_frame(canvas, "probe", "probe latency ms", latency_top if axes else None)
    parts += _panel_frame(
        canvas, "counts", "EMFILE episodes, amplifier triggers", count_top if axes else None
    )
    offset = 0.0
    for index, trial in enumerate(trials):
        shown = _thin(trial.timeline.samples)
        if index:
            x = canvas.x(offset)
            parts.append(
                f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{canvas.bottom}" class="divider"/>'
            )
        parts.append(
            f'<text x="{canvas.x(offset) + 4:.1f}" y="{canvas.bottom - 4}" class="tick">'
            f"trial {trial.index}: {_esc(trial.outcome)}</text>"
        )
        if shown:
            parts += _series(canvas, offset, shown, rate_top, latency_top, count_top)
        else:
            top, height = canvas.tops["rate"]
            parts.append(
                f'<text x="{canvas.x(offset + trial.span_s / 2):.1f}" y="{top + height / 2 + 4}" '
                'class="note" text-anchor="middle">no per-second samples recorded</text>'
            )
            top, height = canvas.tops["counts"]
            parts.append(
                f'<text x="{canvas.x(offset + trial.span_s / 2):.1f}" y="{top + height / 2 + 4}" '
                f'class="note" text-anchor="middle">totals: {trial.emfile:,} EMFILE episodes, '
                f"{trial.triggers:,} amplifier triggers</text>"
            )
        note = f" (trial {trial.index})" if len(trials) > 1 else ""
        parts += _event_marks(canvas, offset, trial.timeline.events, note)
        offset += trial.span_s
    parts += _x_axis(canvas)
    parts += _legend(canvas)
    parts.append("</svg>")
    return "\n".join(p for p in parts if p)


# --- the page ----------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #212121; max-width: 900px; }
h1 { font-size: 20px; margin: 0 0 4px; }
.summary { color: #424242; margin: 0 0 16px; }
table.grid { border-collapse: collapse; margin: 8px 0 16px; }
table.grid th, table.grid td { border: 1px solid #bdbdbd; padding: 4px 8px; text-align: left; }
table.grid td a { color: inherit; text-decoration: none; }
td.kind-PASS { background: #e8f5e9; } td.kind-HANG { background: #ffebee; }
td.kind-CRASH { background: #f3e5f5; } td.kind-INCONCLUSIVE { background: #fff3e0; }
td.kind-none, td.kind-ERROR, td.kind-NOT_APPLICABLE { background: #eeeeee; }
td.missed { font-weight: bold; }
td.missed::after { content: " \\2717"; color: #c62828; }
figure.cell { border: 1px solid #bdbdbd; border-left: 8px solid var(--kind); margin: 0 0 20px;
  padding: 8px 12px; break-inside: avoid; }
figure.cell h2 { font-size: 15px; margin: 0 0 6px; }
figcaption { margin-top: 4px; }
figcaption .headline { color: var(--kind); font-weight: 600; }
.state-missed { color: #c62828; font-weight: bold; } .state-met { color: #2e7d32; }
.meta { color: #616161; font-size: 12px; word-break: break-all; }
svg.timeline { max-width: 100%; height: auto; font-family: system-ui, sans-serif; }
svg .panel { fill: #fafafa; stroke: #e0e0e0; }
svg .tick { font-size: 10px; fill: #616161; } svg .plabel { font-size: 10px; fill: #424242; }
svg .plabel, svg .tick, svg .marker { paint-order: stroke; stroke: #fafafa; stroke-width: 3px; }
svg .legend { font-size: 11px; fill: #424242; } svg .note { font-size: 11px; fill: #9e9e9e; }
svg .marker { font-size: 11px; font-weight: 600; fill: #c62828; }
svg .axis { stroke: #757575; } svg .divider { stroke: #9e9e9e; stroke-dasharray: 2 3; }
svg .hang { stroke: #c62828; stroke-width: 2; } svg .suspected { stroke-dasharray: 5 3; }
svg .crash { stroke: #6a1b9a; stroke-width: 2; }
svg .ended { stroke: #9e9e9e; stroke-dasharray: 6 3; }
svg .probe-ok { fill: #2e7d32; } svg .probe-failed { stroke: #c62828; stroke-width: 1.6; }
"""


def _figure(view: CellView) -> str:
    state = ""
    if view.state:
        state = (
            f'<span class="state-{_esc(view.state)}">expectation {_esc(view.expectation)}: '
            f"{_esc(view.state)}</span>"
        )
    meta = [f"evidence: {_esc(view.evidence)}"] if view.evidence else []
    if view.cached:
        meta.append("cached result")
    comparisons = "".join(f"<div>{_esc(c)}</div>" for c in view.comparisons)
    return (
        f'<figure class="cell" id="{view.anchor}" style="--kind: {view.colour}">'
        f"<h2>{_esc(view.title)}</h2>\n"
        f"{timeline_svg(view)}\n"
        f'<figcaption><div class="headline">{_esc(view.headline)}</div>'
        f"<div>{state}</div>{comparisons}"
        f'<div class="meta">{" · ".join(meta)}</div></figcaption></figure>'
    )


def _grid(report: GateReport, views: dict[int, CellView]) -> str:
    scenarios: list[str] = []
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for number, cell in enumerate(report.cells):
        result, view = cell.result, views[number]
        if result.scenario not in scenarios:
            scenarios.append(result.scenario)
        kind = str(view.kind).replace(" ", "_") if view.kind else "none"
        missed = " missed" if cell.state in (CellState.MISSED, CellState.ERROR) else ""
        rows.setdefault((result.row, result.patch_set), {})[result.scenario] = (
            f'<td class="kind-{kind}{missed}"><a href="#{view.anchor}">{_esc(view.short)}</a></td>'
        )
    head = "".join(f"<th>{_esc(s)}</th>" for s in scenarios)
    body = "".join(
        f"<tr><td>{_esc(row)}</td><td>{_esc(patch_set)}</td>"
        + "".join(cells.get(s, "<td></td>") for s in scenarios)
        + "</tr>"
        for (row, patch_set), cells in rows.items()
    )
    return f'<table class="grid"><tr><th>source@ref</th><th>patch set</th>{head}</tr>{body}</table>'


def render_html(
    items: GateReport | Sequence[JudgedCell | CellResult | Any], *, title: str | None = None
) -> str:
    """The page: for a matrix report its grid, comparisons and a figure per cell; for a
    list of cells or verify outcomes, a figure each."""
    report = items if isinstance(items, GateReport) else None
    cells: Sequence[Any] = report.cells if report is not None else items  # type: ignore[assignment]
    views = _views(cells, report)
    heading = title or (report.name if report else "memcached verifier")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(heading)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(heading)}</h1>",
    ]
    if report is not None:
        parts.append(
            f'<p class="summary">{_esc(report.summary_line())}; executor '
            f"{_esc(report.executor)}; matrix {_esc(report.matrix)}</p>"
        )
        parts.append(_grid(report, dict(enumerate(views))))
        if report.comparisons:
            parts.append("<ul>")
            parts += [
                f"<li><b>{_esc(c.scenario)}</b> on {_esc(c.row)}: "
                f"{_esc(c.comparison.sentence)}</li>"
                for c in report.comparisons
            ]
            parts.append("</ul>")
    parts += [_figure(v) for v in views]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
