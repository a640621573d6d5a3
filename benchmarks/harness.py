"""The benchmark harness: repeated samples, their statistics, goals, and the JSON/Markdown output.

Absolute times on a shared two-core machine mean little, so every figure is reported as a ratio
to a floor (or a peer) measured in the same run, ideally interleaved with it repetition by
repetition; each ratio is a median over repetitions with its min and max.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    min: float
    max: float
    p99: float | None = None

    @classmethod
    def of(cls, samples: Sequence[float], *, with_p99: bool = False) -> Stats:
        if not samples:
            raise ValueError("no samples")
        return cls(
            n=len(samples),
            median=statistics.median(samples),
            min=min(samples),
            max=max(samples),
            p99=percentile(samples, 99) if with_p99 else None,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "n": self.n,
            "median": _round(self.median),
            "min": _round(self.min),
            "max": _round(self.max),
        }
        if self.p99 is not None:
            data["p99"] = _round(self.p99)
        return data


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    # Four significant digits: enough for noisy timings, short in the JSON.
    return round(value, max(0, 3 - math.floor(math.log10(abs(value)))))


def pairwise_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratio of each repetition's pair (both measured back to back, so they share the noise)."""
    if len(numerators) != len(denominators):
        raise ValueError("paired samples must have the same length")
    return [a / b for a, b in zip(numerators, denominators, strict=True) if b]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Goal:
    """A target a ratio (or value) must meet, e.g. ``Goal("<=", 2.0)``."""

    op: Literal["<=", ">="]
    threshold: float

    def met(self, value: float) -> bool:
        return value <= self.threshold if self.op == "<=" else value >= self.threshold

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


@dataclass
class Metric:
    """One measured quantity with its raw samples."""

    name: str
    unit: str
    samples: list[float]
    description: str = ""
    with_p99: bool = False
    goal: Goal | None = None

    @property
    def stats(self) -> Stats:
        return Stats.of(self.samples, with_p99=self.with_p99)

    @property
    def judged_value(self) -> float:
        """What the goal is judged on: p99 when the metric reports it, else the median."""
        stats = self.stats
        return stats.p99 if stats.p99 is not None else stats.median

    @property
    def goal_met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.judged_value)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"unit": self.unit, **self.stats.to_json()}
        if self.description:
            data["description"] = self.description
        if self.goal is not None:
            data["goal"] = str(self.goal)
            data["goal_met"] = self.goal_met
        return data


@dataclass
class Ratio:
    """An app figure divided by its floor or peer, one ratio per repetition."""

    name: str
    numerator: str
    denominator: str
    samples: list[float]
    goal: Goal | None = None
    description: str = ""

    @property
    def stats(self) -> Stats:
        return Stats.of(self.samples)

    @property
    def goal_met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.stats.median)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "numerator": self.numerator,
            "denominator": self.denominator,
            **self.stats.to_json(),
        }
        if self.description:
            data["description"] = self.description
        if self.goal is not None:
            data["goal"] = str(self.goal)
            data["goal_met"] = self.goal_met
        return data


@dataclass
class Figure:
    """The result of one figure: its metrics, ratios and what the run found out."""

    key: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_seconds: float = 0.0

    def metric(self, name: str, unit: str, samples: Iterable[float], **options: Any) -> Metric:
        metric = Metric(name, unit, list(samples), **options)
        self.metrics.append(metric)
        return metric

    def ratio(
        self, name: str, numerator: str, denominator: str, samples: Iterable[float], **options: Any
    ) -> Ratio:
        ratio = Ratio(name, numerator, denominator, list(samples), **options)
        self.ratios.append(ratio)
        return ratio

    @property
    def goals_met(self) -> bool | None:
        verdicts = [
            item.goal_met for item in [*self.metrics, *self.ratios] if item.goal_met is not None
        ]
        if self.error is not None:
            return False
        return all(verdicts) if verdicts else None

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "parameters": self.parameters,
            "metrics": {metric.name: metric.to_json() for metric in self.metrics},
            "ratios": {ratio.name: ratio.to_json() for ratio in self.ratios},
            "goals_met": self.goals_met,
            "notes": self.notes,
            "profile": self.profile,
            "error": self.error,
            "duration_seconds": round(self.duration_seconds, 1),
        }


# --------------------------------------------------------------------------- measuring


def repeat(times: int, measure: Callable[[], float]) -> list[float]:
    """``measure()`` called ``times`` times (bounded); each call returns one sample."""
    if times < 1:
        raise ValueError("times must be >= 1")
    return [measure() for _ in range(times)]


class Stopwatch:
    """Elapsed wall time since creation (monotonic, high resolution)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    @property
    def ms(self) -> float:
        return self.seconds * 1000


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def machine_description() -> dict[str, Any]:
    """Where the figures come from: CPU, cores, memory, Python, OS, commit and date."""
    import psutil

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "git_commit": _git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# --------------------------------------------------------------------------- output


@dataclass
class Run:
    """One benchmark run: the machine, the options and every figure."""

    machine: dict[str, Any]
    options: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    duration_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "options": self.options,
            "duration_seconds": round(self.duration_seconds, 1),
            "figures": {figure.key: figure.to_json() for figure in self.figures},
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


ANALYSIS = ROOT / "benchmarks" / "analysis.md"


def render_markdown(run: Run, *, analysis: Path | None = ANALYSIS) -> str:
    """The human-readable report (BENCHMARKS.md).

    ``analysis`` (kept by hand, ``benchmarks/analysis.md``) says what dominates where a goal is
    missed; it follows the summary so a regenerated report keeps it.
    """
    machine = run.machine
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`); do not edit by hand. Each figure is "
        "a ratio to a floor or peer measured in the same run, repetition by repetition: median "
        "(min–max) over the repetitions. Raw numbers and samples: `benchmarks/results.json`.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine.get('cpu_model')} — {machine.get('logical_cores')} logical cores "
        f"({machine.get('physical_cores')} physical)",
        f"- Memory: {machine.get('memory_gib')} GiB",
        f"- Python: {machine.get('implementation')} {machine.get('python')} on {machine.get('os')}",
        f"- Load average at start: {machine.get('load_average_at_start')} (shared machine)",
        f"- Commit: {machine.get('git_commit')}; date: {machine.get('date')}",
        f"- Options: {', '.join(f'{k}={v}' for k, v in run.options.items())}; "
        f"total {run.duration_seconds:.0f} s",
        "",
        "## Summary",
        "",
        "| figure | ratio / value | median | min–max | goal | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for figure in run.figures:
        if figure.error:
            lines.append(f"| {figure.key} | {_cell(figure.title)} | – | – | – | error |")
        for ratio in figure.ratios:
            stats = ratio.stats
            lines.append(
                f"| {figure.key} | {_cell(ratio.name)} | {_fmt(stats.median)} | "
                f"{_fmt(stats.min)}–{_fmt(stats.max)} | {ratio.goal or ''} | "
                f"{_verdict(ratio.goal_met)} |"
            )
        for metric in figure.metrics:
            if metric.goal is None:
                continue
            stats = metric.stats
            label = f"{metric.name} ({'p99' if stats.p99 is not None else 'median'}, {metric.unit})"
            lines.append(
                f"| {figure.key} | {_cell(label)} | {_fmt(metric.judged_value)} | "
                f"{_fmt(stats.min)}–{_fmt(stats.max)} | {metric.goal} | "
                f"{_verdict(metric.goal_met)} |"
            )
    if analysis is not None and analysis.exists():
        lines += ["", *analysis.read_text().rstrip().splitlines()]
    for figure in run.figures:
        lines += ["", f"## {figure.key}. {figure.title}", ""]
        if figure.parameters:
            lines.append(
                "Parameters: " + ", ".join(f"{k}={v}" for k, v in figure.parameters.items()) + "."
            )
            lines.append("")
        if figure.error:
            lines += [f"**Error:** {figure.error}", ""]
        if figure.metrics:
            lines += [
                "| metric | unit | n | median | min | max | p99 |",
                "|---|---|---|---|---|---|---|",
            ]
            for metric in figure.metrics:
                stats = metric.stats
                lines.append(
                    f"| {_cell(metric.name)} | {metric.unit} | {stats.n} | {_fmt(stats.median)} | "
                    f"{_fmt(stats.min)} | {_fmt(stats.max)} | {_fmt(stats.p99)} |"
                )
            lines.append("")
        if figure.ratios:
            lines += [
                "| ratio | = | median | min | max | goal | verdict |",
                "|---|---|---|---|---|---|---|",
            ]
            for ratio in figure.ratios:
                stats = ratio.stats
                lines.append(
                    f"| {_cell(ratio.name)} | {_cell(ratio.numerator)} ÷ "
                    f"{_cell(ratio.denominator)} | {_fmt(stats.median)} | {_fmt(stats.min)} | "
                    f"{_fmt(stats.max)} | {ratio.goal or ''} | {_verdict(ratio.goal_met)} |"
                )
            lines.append("")
        for note in figure.notes:
            lines.append(f"- {note}")
        if figure.profile:
            lines += ["", "Profile (what dominates):", "", "```text", *figure.profile, "```"]
        lines.append("")
        lines.append(f"_Figure time: {figure.duration_seconds:.0f} s._")
    return "\n".join(lines).rstrip() + "\n"


def write_results(
    run: Run, *, json_path: Path, markdown_path: Path, analysis: Path | None = ANALYSIS
) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(run.to_json(), indent=2, sort_keys=False) + "\n")
    markdown_path.write_text(render_markdown(run, analysis=analysis))


def profile_lines(profiler: Any, *, top: int = 12, clock: str = "CPU time") -> list[str]:
    """The functions with the most own CPU time in a ``cProfile.Profile`` (what dominates)."""
    import pstats

    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    lines = [f"own {clock}, top {top} of {total * 1000:.0f} ms profiled:"]
    for (filename, line, name), (_, calls, own, _cumulative, _) in rows[:top]:
        where = _short_path(filename)
        share = own / total * 100 if total else 0.0
        lines.append(
            f"  {share:5.1f}%  {own * 1000:8.1f} ms  {calls:>7} calls  {name}  ({where}:{line})"
        )
    return lines


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/", "lib/python3.12/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def cumulative_lines(
    profiler: Any, *, under: tuple[str, ...], top: int = 10, clock: str = "CPU time"
) -> list[str]:
    """Cumulative time of the functions defined in the given folders (the app's own)."""
    import pstats

    stats = pstats.Stats(profiler)
    rows = [
        (key, value)
        for key, value in stats.stats.items()  # type: ignore[attr-defined]
        if any(f"/{folder}/" in key[0] for folder in under)
    ]
    rows.sort(key=lambda item: item[1][3], reverse=True)
    lines = [f"cumulative {clock} of functions in {', '.join(under)}:"]
    for (filename, line, name), (_, calls, _, cumulative, _) in rows[:top]:
        lines.append(
            f"  {cumulative * 1000:8.1f} ms  {calls:>6} calls  {name}  ({_short_path(filename)}:{line})"
        )
    return lines


def merge_results(
    run: Run, *, json_path: Path, markdown_path: Path, analysis: Path | None = ANALYSIS
) -> None:
    """Write some figures into committed results that hold others (``--commit`` with ``--only``).

    The figures of ``run`` replace their own entries, each with the machine and options of its
    run; every other figure keeps its committed numbers, its table rows and its section. The
    hand-kept ``analysis`` after the summary is the file's as it is now.
    """
    if not json_path.exists():
        write_results(run, json_path=json_path, markdown_path=markdown_path, analysis=analysis)
        return
    merge_rendered(
        run.to_json(),
        render_markdown(run, analysis=None),
        json_path=json_path,
        markdown_path=markdown_path,
        analysis=analysis,
    )


def merge_rendered(
    fresh_json: dict[str, Any],
    fresh_markdown: str,
    *,
    json_path: Path,
    markdown_path: Path,
    analysis: Path | None = ANALYSIS,
) -> None:
    """:func:`merge_results` from a run's written results.json and BENCHMARKS.md."""
    data: dict[str, Any] = json.loads(json_path.read_text())
    machine, options = fresh_json["machine"], fresh_json["options"]
    for key, entry in fresh_json["figures"].items():
        data.setdefault("figures", {})[key] = {**entry, "machine": machine, "options": options}
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")

    keys = set(fresh_json["figures"])
    fresh = fresh_markdown.splitlines()
    old = markdown_path.read_text().splitlines() if markdown_path.exists() else []

    def is_row_of(line: str) -> bool:
        return any(line.startswith(f"| {key} | ") for key in keys)

    summary_end = _summary_end(old)
    new_rows = [line for line in _summary(fresh) if is_row_of(line)]
    kept = [line for line in old[:summary_end] if not is_row_of(line)]
    merged = _without_sections([*_in_figure_order([*kept, *new_rows]), *old[summary_end:]], keys)
    if analysis is not None and analysis.exists():
        merged = _with_analysis(merged, analysis.read_text().rstrip().splitlines())
    stamp = (
        f"_From a separate run of figures {', '.join(sorted(keys, key=int))}: commit "
        f"{machine.get('git_commit')}, {machine.get('date')}, load at start "
        f"{machine.get('load_average_at_start')} (shared machine), options "
        f"{', '.join(f'{k}={v}' for k, v in options.items())}._"
    )
    merged = _with_machine(merged, fresh)
    head, sections = _split_sections(merged)
    for section in _sections(fresh, keys):
        sections.append(["", section[0], "", stamp, *section[1:]])
    # Figures in their numbers' order, whichever run each comes from.
    sections.sort(key=lambda lines: int(_section_key(lines[1]) or 0))
    merged = [*head, *(line for section in sections for line in section)]
    markdown_path.write_text("\n".join(merged).rstrip() + "\n")


_RUN_LINES = ("- Load average at start:", "- Commit:", "- Options:")


def _with_machine(lines: list[str], fresh: list[str]) -> list[str]:
    """``lines`` with the machine as the latest run saw it; what differs from run to run
    (commit, date, load, options) is in each figure's section once figures come from several."""

    def machine(of: list[str]) -> tuple[int, int]:
        start = of.index("## Machine") if "## Machine" in of else -1
        end = of.index("## Summary") if "## Summary" in of else -1
        return start, end

    start, end = machine(lines)
    fresh_start, fresh_end = machine(fresh)
    if min(start, end, fresh_start, fresh_end) < 0:
        return lines
    described = [
        line for line in fresh[fresh_start + 1 : fresh_end] if not line.startswith(_RUN_LINES)
    ]
    while described and not described[-1].strip():
        described.pop()
    note = "- Runs: the figures come from separate runs; each figure's section names its own."
    return [*lines[: start + 1], *described, note, "", *lines[end:]]


def _figure_of_row(line: str) -> int | None:
    cell = line[2:].split(" | ", 1)[0] if line.startswith("| ") else ""
    return int(cell) if cell.isdigit() else None


def _in_figure_order(lines: list[str]) -> list[str]:
    """The summary's figure rows sorted by figure (stably), every other line where it was."""
    figure_rows = [row for row in lines if _figure_of_row(row) is not None]
    rows = iter(sorted(figure_rows, key=lambda row: _figure_of_row(row) or 0))
    return [next(rows) if _figure_of_row(line) is not None else line for line in lines]


def _split_sections(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """What comes before the first figure's section, and each figure's section (each starting
    with the blank line before its heading)."""
    starts = [i for i, line in enumerate(lines) if _section_key(line) is not None]
    if not starts:
        return lines, []
    head_end = starts[0] - 1 if starts[0] > 0 and not lines[starts[0] - 1].strip() else starts[0]
    bounds = [head_end, *(i - 1 if not lines[i - 1].strip() else i for i in starts[1:]), len(lines)]
    sections = [lines[a:b] for a, b in itertools.pairwise(bounds)]
    return lines[:head_end], [s if s[0].strip() == "" else ["", *s] for s in sections]


def _with_analysis(lines: list[str], analysis: list[str]) -> list[str]:
    """``lines`` with ``analysis`` between the summary and the first figure's section (in place
    of what was there: the analysis as it was when the file was last written)."""
    start = _summary_end(lines)
    end = next(
        (index for index in range(start, len(lines)) if _section_key(lines[index]) is not None),
        len(lines),
    )
    return [*lines[:start], "", *analysis, "", *lines[end:]]


def _summary(lines: list[str]) -> list[str]:
    start = lines.index("## Summary") if "## Summary" in lines else 0
    return [line for line in lines[start : _summary_end(lines)] if line.startswith("| ")]


def _summary_end(lines: list[str]) -> int:
    """Index just after the summary table's last row."""
    start = lines.index("## Summary") if "## Summary" in lines else 0
    end = start
    for index in range(start, len(lines)):
        if lines[index].startswith("| "):
            end = index + 1
        elif end > start and not lines[index].strip():
            break
    return end


def _section_key(line: str) -> str | None:
    if line.startswith("## ") and ". " in line:
        key = line[3:].split(". ", 1)[0]
        return key if key.isdigit() else None
    return None


def _sections(lines: list[str], keys: set[str]) -> list[list[str]]:
    sections: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if line.startswith("## "):
            current = [line] if _section_key(line) in keys else None
            if current is not None:
                sections.append(current)
        elif current is not None:
            current.append(line)
    return [section[:-1] if section and not section[-1] else section for section in sections]


def _without_sections(lines: list[str], keys: set[str]) -> list[str]:
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("## "):
            skipping = _section_key(line) in keys
        if not skipping:
            kept.append(line)
    return kept
