"""``python -m benchmarks`` (``make bench``): run the figures, write results.json and BENCHMARKS.md.

By default the results go to benchmarks/.scratch/results/ (git-ignored), so a trial run never
overwrites the committed figures; ``--commit`` writes the committed BENCHMARKS.md and
benchmarks/results.json, ``--output-dir DIR`` writes anywhere else.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import (
    ROOT,
    Figure,
    Run,
    Stopwatch,
    machine_description,
    merge_results,
    write_results,
)

EXAMPLES = """\
examples:
  python -m benchmarks                       every figure, full size (about 10 min on 2 cores)
  python -m benchmarks --quick               fewer repetitions, smaller sets (about 6 min)
  python -m benchmarks --only 4 --only 2     some figures only
  python -m benchmarks --commit              full run, then update BENCHMARKS.md and results.json
  python -m benchmarks --quick --output-dir /tmp/bench
"""
SCRATCH_RESULTS = ROOT / "benchmarks" / ".scratch" / "results"

# Figure key -> module; each module has ``run(rig, quick=...) -> Figure``.
FIGURES = {
    "1": "benchmarks.end_to_end",
    "2": "benchmarks.download",
    "3": "benchmarks.webhook",
    "4": "benchmarks.cold_start",
    "5": "benchmarks.cleanup",
    "6": "benchmarks.transcription",
    "7": "benchmarks.scale_out",
    "8": "benchmarks.throttling",
    "9": "benchmarks.cost",
    "10": "benchmarks.events",
    "11": "benchmarks.recordings_list",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(__doc__ or "").replace("``", ""),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sets")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(FIGURES, key=int),
        help="run only this figure (repeatable)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--commit",
        action="store_true",
        help="write the committed BENCHMARKS.md and benchmarks/results.json",
    )
    where.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write results.json and BENCHMARKS.md"
        " (default: benchmarks/.scratch/results/)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks.rig import Rig, quiet_logs

    # In the figures' numbers' order (a string sort would put 10 and 11 before 2).
    selected = sorted(set(args.only or FIGURES), key=int)
    run = Run(
        machine=machine_description(),
        options={"quick": args.quick, "figures": ",".join(selected)},
    )
    total = Stopwatch()
    with Rig() as rig, quiet_logs():
        for key in selected:
            print(f"figure {key}: running ({FIGURES[key]})", flush=True)
            watch = Stopwatch()
            try:
                figure: Figure = importlib.import_module(FIGURES[key]).run(rig, quick=args.quick)
            except Exception as error:
                # One broken figure must not cost the others: it is reported as an error.
                traceback.print_exc()
                figure = Figure(key, FIGURES[key], error=f"{type(error).__name__}: {error}")
            figure.duration_seconds = watch.seconds
            run.figures.append(figure)
            verdict = {True: "goals met", False: "GOAL MISSED", None: "no goal"}[figure.goals_met]
            print(f"figure {key}: {verdict} in {watch.seconds:.0f} s", flush=True)
    run.duration_seconds = total.seconds
    if args.commit:
        json_path = ROOT / "benchmarks" / "results.json"
        markdown_path = ROOT / "BENCHMARKS.md"
    else:
        output_dir = args.output_dir or SCRATCH_RESULTS
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path = output_dir / "results.json"
        markdown_path = output_dir / "BENCHMARKS.md"
    if args.commit and args.only and set(selected) != set(FIGURES):
        # Some figures only: the others keep their committed numbers.
        merge_results(run, json_path=json_path, markdown_path=markdown_path)
    else:
        write_results(run, json_path=json_path, markdown_path=markdown_path)
    print(f"wrote {json_path} and {markdown_path} ({run.duration_seconds:.0f} s)", flush=True)
    return 1 if any(figure.error for figure in run.figures) else 0


if __name__ == "__main__":
    sys.exit(main())
