"""Grid cells on a SLURM cluster through submitit: one job array per stage and phase (needs the ``cluster`` extra).

Each array task runs one phase of one cell exactly as the local runner does (:func:`~tapa_lab.ablation.cell_run.
run_phase`: ``python -m tapa_lab fit --config <cell>/config.yaml``, under the cell's lock), on the node it lands on.

Requeue belongs to submitit. SLURM warns a task 90 s before its time limit (``--signal=USR2@90``); submitit's
handler calls :meth:`CellTask.checkpoint`, which resubmits the same task, requeues the job and exits; the runner's
cleanup stops the ``fit`` child (SIGTERM, then SIGKILL), and the requeued task resumes the cell from its
``last.ckpt``. Lightning's own SLURM requeue is switched off in every cell's ``fit`` (``SLURMEnvironment(
auto_requeue=False)``), so one requeue never becomes two. Preemption goes the same way.

A cell whose ``trainer.num_nodes`` x ``trainer.devices`` is more than one device trains as one job of that many
tasks (``--nodes``, ``--ntasks-per-node`` = devices, ``--gpus-per-node`` = devices on GPU; a job array per layout),
which submitit starts with ``srun``. Every task runs the cell's ``fit`` with SLURM's rank variables (and
``LOCAL_RANK``), so Lightning's ``SLURMEnvironment`` joins them into one run; task 0 owns the cell (lock, log, result,
requeue), the others only train (``log.rank<k>.txt``).

What each cell was submitted as is in ``cells/<id>/submission.json``; ``cells/<id>/submitit.out`` and
``submitit.err`` link to the task's submitit logs (the training output itself is in ``log.txt``).
"""

from __future__ import annotations

import copy
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit
from rich.console import Console
from rich.markup import escape
from submitit.helpers import Checkpointable

from tapa_lab.ablation import scheduler
from tapa_lab.ablation.cell_run import Phase, run_phase
from tapa_lab.ablation.executor import SlurmOptions, TaskLayout, task_layout
from tapa_lab.ablation.expand import Cell
from tapa_lab.ablation.layout import (
    CONFIG_FILE,
    EVALUATED_MARKER,
    RANK_LOG,
    RESULT_FILE,
    SUBMISSION_FILE,
    SUBMITIT_LOGS,
    TRAINED_MARKER,
    cell_dir,
    last_checkpoint,
    write_atomic,
)
from tapa_lab.ablation.process import lab_process, lock_held
from tapa_lab.ablation.results import CellResult, read_result

#: Appended to a cell's ``fit`` inside SLURM: submitit owns requeue, Lightning's is off.
SLURM_FIT_ARGS = ("--trainer.plugins+=lightning.pytorch.plugins.environments.SLURMEnvironment",
                  "--trainer.plugins.init_args.auto_requeue=false")
#: SLURM job states of a job that is still queued or running.
ALIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}


class CellTask(Checkpointable):
    """One phase of one cell as a submitit task. Requeued after a time-out or preemption (submitit calls the
    inherited :meth:`checkpoint`, which resubmits this same task), it resumes the cell from its ``last.ckpt``."""

    def __init__(self, phase: Phase, cell: Cell, out_dir: Path, threads: int, layout: TaskLayout = TaskLayout()):
        self.phase = phase
        self.cell = cell
        self.out_dir = out_dir
        self.threads = threads
        self.layout = layout

    def __call__(self) -> str:
        """Run the phase; the cell's ``result.json`` holds the outcome, which is also returned (its status). In a
        multi-task job, task 0 does so and every other task runs the same ``fit`` (:func:`follow_training`)."""
        fit_args = SLURM_FIT_ARGS if "SLURM_JOB_ID" in os.environ else ()
        if self.layout.tasks > 1:
            environment = submitit.JobEnvironment()
            os.environ["LOCAL_RANK"] = str(environment.local_rank)  # the fit's per-node work runs on local rank 0
            if environment.global_rank > 0:
                return follow_training(self.cell, self.out_dir, self.threads, fit_args, environment.global_rank)
        return run_phase(self.phase, self.cell, self.out_dir, self.threads, {}, fit_args).status


def follow_training(cell: Cell, out_dir: Path, threads: int, fit_args: tuple[str, ...], rank: int) -> str:
    """Task ``rank`` > 0 of a multi-task cell: the ``fit`` task 0 runs (same config, resumed from ``last.ckpt`` when
    there is one), which joins task 0's process group; nothing when task 0 will not train either.

    Returns:
        ``finished``, ``skipped``, or ``exit code <n>``.
    """
    folder = cell_dir(out_dir, cell.cell_id)
    previous = read_result(out_dir, cell.cell_id)
    parent = read_result(out_dir, cell.init_from) if cell.init_from is not None else None
    if ((previous is not None and previous.status in ("finished", "diverged")) or (folder / TRAINED_MARKER).is_file()
            or (cell.init_from is not None and (parent is None or parent.status != "finished"))):
        return "skipped"
    command = ["fit", "--config", str(folder / CONFIG_FILE), *fit_args]
    if last_checkpoint(out_dir, cell.cell_id).is_file():
        command += ["--ckpt_path", "last"]
    code = lab_process(command, folder / RANK_LOG.format(rank=rank), threads)
    return "finished" if code == 0 else f"exit code {code}"


def with_layout(executor: submitit.Executor, layout: TaskLayout) -> submitit.Executor:
    """``executor`` itself for a one-task layout; else a copy asking for the layout's nodes, tasks per node (one per
    device) and, on GPU, GPUs per node (every task sees its node's GPUs; Lightning picks one by local rank)."""
    if layout.tasks == 1:
        return executor
    executor = copy.deepcopy(executor)
    if isinstance(executor, submitit.SlurmExecutor):
        parameters: dict[str, Any] = {"nodes": layout.nodes, "ntasks_per_node": layout.tasks_per_node}
        if layout.gpu:
            parameters.update(gpus_per_node=layout.tasks_per_node, gpus_per_task=None)
    else:  # submitit's LocalExecutor (one node) or DebugExecutor
        parameters = {"nodes": layout.nodes, "tasks_per_node": layout.tasks_per_node}
        if layout.gpu:
            parameters["gpus_per_node"] = layout.tasks_per_node
    executor.update_parameters(**parameters)
    return executor


def slurm_executor(folder: Path, options: SlurmOptions) -> submitit.SlurmExecutor:
    """A submitit SLURM executor with the grid's settings (job files under ``folder``)."""
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(job_name="tapa-lab", **options.submitit_parameters())
    return executor


class ClusterLauncher:
    """Submits each phase of a stage as one job array; waits for it, or (``wait=False``) returns once it is queued.

    Cells that are finished, or queued or running already (a live job, or a held lock), are not submitted; a cell
    whose parent is not finished yet is left for a later ``run``.
    """

    def __init__(self, executor: submitit.Executor, out_dir: Path, threads: int, wait: bool, console: Console):
        self.executor = executor
        self.out_dir = out_dir
        self.threads = threads
        self.wait = wait
        self.console = console

    def __enter__(self) -> ClusterLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, phase: Phase, stage: str, cells: list[Cell], results: dict[str, CellResult]) -> None:
        """Submit ``phase`` of the cells that need it; put every cell's known result into ``results``."""
        todo = []
        for cell in cells:
            previous = read_result(self.out_dir, cell.cell_id)
            reason = self._not_now(phase, cell, previous, results)
            if reason is None:
                todo.append(cell)
            else:
                kept = previous if reason == "done" else None
                results[cell.cell_id] = kept or CellResult(cell.cell_id, "pending", reason)
        if not todo:
            return
        layouts = {cell.cell_id: task_layout(cell.config["trainer"]) if phase == "train" else TaskLayout()
                   for cell in todo}
        submitted_jobs: dict[str, submitit.Job] = {}
        for layout in dict.fromkeys(layouts.values()):  # one job array per layout
            group = [cell for cell in todo if layouts[cell.cell_id] == layout]
            tasks = [CellTask(phase, cell, self.out_dir, self.threads, layout) for cell in group]
            submitted_jobs.update(zip((c.cell_id for c in group), with_layout(self.executor, layout).submit_array(
                tasks), strict=True))
        jobs = [submitted_jobs[cell.cell_id] for cell in todo]
        submitted = datetime.now(timezone.utc).timestamp()
        for cell, job in zip(todo, jobs, strict=True):
            record_submission(self.out_dir, cell.cell_id, phase, job, submitted)
        self.console.print(f"{stage}: {phase} of {len(todo)} cell(s) submitted as job(s) "
                           f"{escape(', '.join(sorted({str(j.job_id).split('_')[0] for j in jobs})))}")
        for cell, job in zip(todo, jobs, strict=True):
            if not self.wait:
                results[cell.cell_id] = CellResult(cell.cell_id, "pending", f"submitted as job {job.job_id}")
                continue
            error = job.exception()
            result = read_result(self.out_dir, cell.cell_id)
            stale = result is None or _mtime(cell_dir(self.out_dir, cell.cell_id)) < submitted
            if result is None or stale:  # the task died before writing its result (killed, out of memory, node failure)
                line = _last_line(str(error)) if error is not None else f"job {job.job_id} ended without a result"
                result = CellResult(cell.cell_id, "failed", line).write(cell_dir(self.out_dir, cell.cell_id))
            results[cell.cell_id] = result
            style = "green" if result.status == "finished" else "red"
            note = escape(f": {result.error}") if result.error else ""
            self.console.print(f"[{style}]{phase} {result.status}[/] {escape(cell.label())}, seed {cell.seed} "
                               f"[{cell.cell_id}] (job {job.job_id}){note}")

    def _not_now(self, phase: Phase, cell: Cell, previous: CellResult | None,
                 results: dict[str, CellResult]) -> str | None:
        """Why ``cell`` is not submitted now (``"done"``, or a note), or ``None`` to submit it."""
        if previous is not None and previous.status == "diverged":
            return "done"
        if phase == "train" and previous is not None and previous.status == "finished":
            return "done"
        if phase == "eval" and _evaluated(self.out_dir, cell):
            return "done"
        if job_alive(self.out_dir, cell.cell_id):
            return "queued or running"
        if phase == "train" and cell.init_from is not None:
            parent = results.get(cell.init_from) or read_result(self.out_dir, cell.init_from)
            if parent is None or parent.status == "pending":
                return f"waits for its parent cell {cell.init_from}"
        return None


def record_submission(out_dir: Path, cell_id: str, phase: Phase, job: submitit.Job, submitted: float) -> None:
    """Write ``submission.json`` (job id, executor, counts) and link the task's submitit logs into the cell folder."""
    folder = cell_dir(out_dir, cell_id)
    earlier = read_submission(out_dir, cell_id) or {}
    record = {"job_id": str(job.job_id), "executor": type(job).__name__, "folder": str(job.paths.folder),
              "phase": phase, "submitted": submitted, "submissions": earlier.get("submissions", 0) + 1}
    write_atomic(folder / SUBMISSION_FILE, json.dumps(record, indent=2))
    for name, target in zip(SUBMITIT_LOGS, (job.paths.stdout, job.paths.stderr), strict=True):
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


def read_submission(out_dir: Path, cell_id: str) -> dict[str, Any] | None:
    """A cell's ``submission.json``, or ``None`` if it was never submitted to a cluster."""
    path = cell_dir(out_dir, cell_id) / SUBMISSION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def job_state(out_dir: Path, cell_id: str) -> str | None:
    """The SLURM state of the cell's last job (:func:`~tapa_lab.ablation.scheduler.job_state`: ``squeue``, then
    ``sacct``), or ``None`` when it has none or SLURM cannot tell."""
    record = read_submission(out_dir, cell_id)
    if record is None or record["executor"] != "SlurmJob":
        return None
    return scheduler.job_state(record["job_id"])


def job_alive(out_dir: Path, cell_id: str) -> bool:
    """Whether some process owns the cell now, or its last SLURM job is queued or running."""
    return lock_held(cell_dir(out_dir, cell_id)) or job_state(out_dir, cell_id) in ALIVE_STATES


def _evaluated(out_dir: Path, cell: Cell) -> bool:
    marker = cell_dir(out_dir, cell.cell_id) / EVALUATED_MARKER
    return cell.evaluation is None or (marker.is_file() and marker.read_text() == cell.evaluation.fingerprint())


def _mtime(folder: Path) -> float:
    path = folder / RESULT_FILE
    return path.stat().st_mtime if path.is_file() else 0.0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "failed")[:500]
