"""Tests against a real SLURM scheduler (``tests/cluster/slurm.sh run pytest tests/cluster``, which ``nox -s slurm``
and ``.ci/run`` do): every test here is marked ``slurm`` and skipped, with the reason, when no scheduler answers.

The helpers the tests share are in ``slurm_cases``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _scheduler() -> str | None:
    """Why no scheduler can be used here, or ``None`` when ``sinfo`` answers with an available node."""
    if shutil.which("sinfo") is None:
        return "no SLURM client here (sinfo not on PATH); tests/cluster/slurm.sh run pytest tests/cluster starts one"
    try:
        listing = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%t"], capture_output=True, text=True,
                                 timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer (sinfo timed out)"
    if listing.returncode != 0:
        return f"the SLURM controller does not answer: {(listing.stderr.strip().splitlines() or ['?'])[-1]}"
    if not {"idle", "mix", "alloc"} & set(listing.stdout.split()):
        return f"no SLURM node is up (sinfo: {' '.join(listing.stdout.split()) or 'no nodes'})"
    return None


_NO_SCHEDULER = _scheduler()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``slurm``; skip them all when there is no scheduler."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slurm)
            if _NO_SCHEDULER is not None:
                item.add_marker(pytest.mark.skip(reason=_NO_SCHEDULER))


@pytest.fixture(scope="session")
def partition() -> str:
    """The cluster's default partition (the tests name it on the command line, as a user would)."""
    listing = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=20,
                             check=True)
    return next(name.rstrip("*") for name in listing.stdout.split() if name.endswith("*"))
