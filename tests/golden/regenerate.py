"""Write the golden losses (tests/golden/losses.json) of every encoding, or compare a fresh run against them.

    python tests/golden/regenerate.py                      # add the lines of new cases (a new PE), drop removed ones
    python tests/golden/regenerate.py --names alibi rope   # rewrite some lines (their maths changed on purpose)
    python tests/golden/regenerate.py --all                # rewrite every line (the golden run itself changed)
    python tests/golden/regenerate.py --compare --threads 2   # write nothing: each case's largest deviation

Lines already in the file are kept unless named, so a new PE's line does not rewrite the others. ``nox -s golden``
runs the first form. ``--compare`` is how the tolerance was calibrated (``golden_run.CALIBRATION``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import golden_run
import lightning
import torch


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    threads = golden_run.RUN["threads"]
    parser = argparse.ArgumentParser(prog=golden_run.REGENERATE, description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="rewrite every line")
    which.add_argument("--names", nargs="+", default=[], help="rewrite these cases' lines")
    which.add_argument("--compare", action="store_true", help="write nothing; print each case's largest deviation")
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"intra-op threads, with --compare only (the golden run uses {threads})")
    args = parser.parse_args(argv)
    known = [case.name for case in golden_run.cases()]
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"--names {' '.join(unknown)}: not a golden case; the cases are {', '.join(known)}")
    if args.threads != threads and not args.compare:
        parser.error(f"--threads {args.threads}: the golden lines are written with {threads} thread(s); other "
                     "thread counts are for --compare only")
    return args


def compare(threads: int, data_dir: Path) -> float:
    """Print each case's largest |fresh - golden| over the steps; return the largest of all."""
    lines = golden_run.read_golden()["losses"]
    largest = 0.0
    for case in golden_run.cases():
        if case.name not in lines:
            print(f"{case.name:24s} no golden line (run {golden_run.REGENERATE})")
            continue
        gap = golden_run.deviation(golden_run.train_losses(case, data_dir, threads), lines[case.name])
        largest = max(largest, gap)
        print(f"{case.name:24s} {gap:.3g}")
    print(f"largest deviation {largest:.3g} (torch {torch.__version__}, {threads} thread(s)); "
          f"tolerance {golden_run.TOLERANCE:g}")
    return largest


def _dumps(contents: dict) -> str:
    """JSON with one line per case under ``losses`` (so a new PE's line is a one-line diff)."""
    header = json.dumps({key: value for key, value in contents.items() if key != "losses"}, indent=1)
    lines = [f" {json.dumps(name)}: {json.dumps(values)}" for name, values in contents["losses"].items()]
    return header[:-2] + ',\n "losses": {\n' + ",\n".join(lines) + "\n }\n}\n"


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    golden_run.quiet_lightning()
    data_dir = Path(tempfile.mkdtemp(prefix="tapa-golden-"))
    if args.compare:
        compare(args.threads, data_dir)
        return 0
    old = golden_run.read_golden()
    if old.get("run", golden_run.RUN) != golden_run.RUN and not args.all:
        print(f"{golden_run.GOLDEN_FILE} was written for another golden run ({old['run']}); rewrite it with --all",
              file=sys.stderr)
        return 2
    losses = {}
    for case in golden_run.cases():
        if args.all or case.name in args.names or case.name not in old["losses"]:
            losses[case.name] = golden_run.train_losses(case, data_dir)
            print(f"wrote {case.name}")
        else:
            losses[case.name] = old["losses"][case.name]
    dropped = sorted(set(old["losses"]) - set(losses))
    if dropped:
        print(f"dropped {', '.join(dropped)} (no such case any more)")
    golden_run.GOLDEN_FILE.write_text(_dumps({
        "about": "First training losses of the golden run (tests/golden/golden_run.py) for every PE fragment of "
                 "experiments/posenc/ and every discovered PE class; checked by tests/golden/test_golden_losses.py.",
        "command": golden_run.REGENERATE,
        "run": golden_run.RUN,
        "tolerance": golden_run.TOLERANCE,
        "calibration": golden_run.CALIBRATION,
        "last_written_with": {"torch": torch.__version__, "lightning": lightning.__version__},
        "losses": losses,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
