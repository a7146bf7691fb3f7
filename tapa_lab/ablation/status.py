"""Where every cell of a grid folder stands, from its files (and SLURM's ``squeue`` / ``sacct`` for submitted cells).

States: ``queued`` (submitted, not started), ``running`` (its lock is held, or its job runs), ``done``, ``failed``
(with the error's last line), ``diverged``, ``skipped`` (its parent did not finish), ``interrupted`` (started, then
stopped without a result; ``run`` resumes it) and ``pending`` (never started). ``retried`` counts the trainings
started after the first (requeues, reruns, resumes). A failed or skipped cell whose SLURM job is queued or running
again (requeued, or submitted again by ``run``) is ``queued`` or ``running``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tapa_lab.ablation.layout import INDEX_FILE, LOG_FILE, SUBMISSION_FILE, SUBMITIT_LOGS, cell_dir, run_dir
from tapa_lab.ablation.process import lock_held
from tapa_lab.ablation.results import Row, load_rows
from tapa_lab.ablation.scheduler import job_state
from tapa_lab.errors import ConfigError

#: What a CellResult status is called in the status table.
RESULT_STATES = {"finished": "done", "failed": "failed", "diverged": "diverged", "skipped": "skipped"}
QUEUED_STATES = {"PENDING", "REQUEUED", "CONFIGURING", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "RESIZING"}


@dataclass(frozen=True)
class CellStatus:
    """One line of ``tapa-lab ablation status``."""

    row: Row
    state: str
    note: str
    retried: int
    job: str


def grid_status(out_dir: Path) -> list[CellStatus]:
    """The state of every cell of a grid folder, in run order."""
    if not (out_dir / INDEX_FILE).is_file():
        raise ConfigError(f"out_dir = {str(out_dir)!r}: not a grid folder (no {INDEX_FILE}).")
    return [_status(out_dir, row) for row in load_rows(out_dir)]


def _status(out_dir: Path, row: Row) -> CellStatus:
    folder = cell_dir(out_dir, row.cell_id)
    submission = json.loads((folder / SUBMISSION_FILE).read_text()) if (folder / SUBMISSION_FILE).is_file() else {}
    job = submission.get("job_id", "")
    retried = max(0, _fits(folder) - 1)
    if lock_held(folder):
        return CellStatus(row, "running", "", retried, job)
    final = row.result.status in ("finished", "diverged")
    state = job_state(job) if submission.get("executor") == "SlurmJob" and not final else None
    if row.result.status in RESULT_STATES and state not in QUEUED_STATES | RUNNING_STATES:
        return CellStatus(row, RESULT_STATES[row.result.status], row.result.error or "", retried, job)
    if submission:  # not run yet, or its failure is being retried: its job (requeued or submitted again) says
        if state is None or state in QUEUED_STATES:
            return CellStatus(row, "queued", state or "submitted", retried, job)
        if state in RUNNING_STATES:
            return CellStatus(row, "running", "", retried, job)
        return CellStatus(row, "failed", f"job {job}: {state}; {_last_line(folder / SUBMITIT_LOGS[1])}", retried, job)
    if run_dir(out_dir, row.cell_id).exists():
        return CellStatus(row, "interrupted", "started without a result; `run` resumes it", retried, job)
    return CellStatus(row, "pending", "", retried, job)


def _fits(folder: Path) -> int:
    """How many trainings the cell's log records (one ``$ tapa-lab fit`` line each)."""
    log = folder / LOG_FILE
    if not log.is_file():
        return 0
    return sum(line.startswith("$ tapa-lab fit") for line in log.read_text(errors="replace").splitlines())


def _last_line(path: Path) -> str:
    if not path.is_file():
        return "no log"
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return (lines[-1] if lines else "empty log")[:300]
