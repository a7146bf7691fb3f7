"""A grid on a real SLURM scheduler through ``--executor slurm --wait false``, as a user runs it: one job array,
``status`` while its tasks are queued, running and done (from ``squeue`` and the cell folders), a cell requeued by
``scontrol requeuehold`` (held while ``status`` looks, then released) and one hitting its time limit (SLURM sends
submitit's ``USR2``) each resume from their ``last.ckpt`` and end bit-identical to an uninterrupted run, a failing
cell is reported with its error's line, and a rerun submits only what is missing or failed (never a queued or running
cell).

The module's grids are submitted once (fixture ``grids``); the tests follow them in order.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from slurm_cases import (
    BROKEN,
    NOPE,
    assert_same_run,
    cells,
    checkpoint_step,
    fits,
    job_of,
    scontrol,
    squeue_field,
    status_rows,
    submissions,
    submit,
    wait_for,
    write_grid,
)

from tapa_lab.ablation.cluster import ALIVE_STATES
from tapa_lab.ablation.layout import CONFIG_FILE, LOCK_FILE, SUBMITIT_LOGS, cell_dir, last_checkpoint, run_dir
from tapa_lab.ablation.process import lab_process
from tapa_lab.ablation.results import read_result
from tapa_lab.ablation.scheduler import job_state, parse_minutes

#: Steps of every cell: long enough that a requeue at the first checkpoint (step 10) lands mid-training.
STEPS = 150


@dataclass
class Paused:
    """A cell's ``fit`` process, paused (SIGSTOP) at its first checkpoint by :func:`pause_at_first_checkpoint`."""

    done: threading.Event = field(default_factory=threading.Event)
    pid: int = 0


@dataclass
class Grids:
    """The two grids of the module, as submitted."""

    life: Path
    """Out folder of the grid of a long cell (``nope``, requeued by scontrol) and a failing one (``broken``)."""
    life_grid: Path
    life_args: tuple[str, ...]
    submitted: str
    """``run``'s output when it submitted ``life``."""
    nope_paused: Paused
    """``life``'s ``nope`` training, paused at its first checkpoint: however fast this machine trains, the cell is
    mid-run when the tests look at it and requeue it."""
    first_status: dict[str, str]
    """``status`` right after that submission."""
    timeout: Path
    """Out folder of the grid whose one cell (the same config as ``life``'s ``nope``) hits its time limit (submitted
    by its test, once the node has room)."""
    reference: Path
    """The same config trained without interruption, outside SLURM."""
    reference_done: threading.Event
    partition: str


@pytest.fixture(scope="module")
def grids(tmp_path_factory, partition) -> Grids:
    root = tmp_path_factory.mktemp("slurm-grids")
    life_grid = write_grid(root / "life.yaml", "life", {"nope": NOPE, "broken": BROKEN}, STEPS)
    life_args = ("--slurm.partition", partition, "--slurm.time", "10", "--slurm.cpus_per_task", "1",
                 "--slurm.array_parallelism", "1")  # one task at a time: `broken` is queued while `nope` runs
    submitted = submit(life_grid, root / "life", *life_args).stdout
    paused = Paused()
    threading.Thread(target=pause_at_first_checkpoint, args=(root / "life", cells(root / "life")["nope"], paused),
                     daemon=True).start()
    first_status = status_rows(root / "life")
    reference, done = root / "reference", threading.Event()
    config = cell_dir(root / "life", cells(root / "life")["nope"]) / CONFIG_FILE

    def train_reference() -> None:
        lab_process(["fit", "--config", str(config), "--run_dir", str(reference)], root / "reference.log", 1)
        done.set()

    threading.Thread(target=train_reference, daemon=True).start()
    return Grids(root / "life", life_grid, life_args, submitted, paused, first_status, root / "timeout", reference,
                 done, partition)


def pause_at_first_checkpoint(out: Path, cell_id: str, paused: Paused, timeout: float = 300) -> None:
    """Pause the cell's ``fit`` process (SIGSTOP) as soon as its first ``last.ckpt`` exists; record it in ``paused``.

    The paused process is the training, not the submitit task: SLURM still sees the job running."""
    lock, deadline = cell_dir(out, cell_id) / LOCK_FILE, time.monotonic() + timeout
    while time.monotonic() < deadline:
        if last_checkpoint(out, cell_id).is_file() and lock.is_file():
            try:
                child = json.loads(lock.read_text())["child"]
            except ValueError:  # read between the owner's truncate and write
                child = None
            if child is not None:
                os.kill(child, signal.SIGSTOP)
                paused.pid = child
                paused.done.set()
                return
        time.sleep(0.02)


def test_run_wait_false_submits_one_job_array_and_status_shows_it_queued(grids):
    ids = cells(grids.life)
    jobs = {level: job_of(grids.life, cell_id) for level, cell_id in ids.items()}
    array = jobs["nope"].split("_")[0]
    assert f"train of 2 cell(s) submitted as job(s) {array}" in grids.submitted
    assert sorted(jobs.values()) == [f"{array}_0", f"{array}_1"]  # one array, a task per cell
    assert "queued" in grids.first_status["broken"] and "PENDING" in grids.first_status["broken"]  # array limit 1
    assert any(state in grids.first_status["nope"] for state in ("queued", "running"))
    assert not (grids.life / "cells" / ids["nope"] / "result.json").exists()  # nothing ran in `run` itself


def test_a_cell_requeued_by_scontrol_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(grids):
    nope = cells(grids.life)["nope"]
    job = job_of(grids.life, nope)
    assert grids.nope_paused.done.wait(300), "the cell did not reach its first checkpoint"
    assert squeue_field(job, "%T") == "RUNNING"
    # requeued and held, so that it is still queued when `status` looks (a plain requeue starts again in ~20 s)
    scontrol("requeuehold", job)
    os.kill(grids.nope_paused.pid, signal.SIGCONT)  # mid-run again: the requeue's SIGTERM ends it as it ends any run
    wait_for(lambda: squeue_field(job, "%T") in ("PENDING", "REQUEUED"), "the requeued job to be queued again")
    assert "queued" in status_rows(grids.life)["nope"]  # queued again, not failed, while SLURM holds it
    submit(grids.life_grid, grids.life, *grids.life_args)  # a rerun now: `broken` only if it failed already
    assert submissions(grids.life, nope) == 1  # a requeued job is alive: never submitted twice
    scontrol("release", job)
    wait_for(lambda: (r := read_result(grids.life, nope)) is not None and r.status == "finished",
             "the requeued cell to finish", timeout=400)
    trainings = fits(grids.life, nope)
    assert len(trainings) == 2 and "--ckpt_path last" in trainings[1]  # the requeued task resumed from last.ckpt
    row = status_rows(grids.life)["nope"]
    assert " done " in row and " 1 " in row  # retried once
    assert submissions(grids.life, nope) == 1  # requeued by SLURM, not submitted again
    assert grids.reference_done.wait(400), "the uninterrupted reference did not finish"
    assert_same_run(run_dir(grids.life, nope), grids.reference, STEPS)


def test_a_job_hitting_its_time_limit_gets_submitits_signal_and_resumes_in_the_requeued_task(grids):
    grid = write_grid(grids.timeout.with_suffix(".yaml"), "timeout", {"nope": NOPE}, STEPS)
    submit(grid, grids.timeout, "--slurm.partition", grids.partition, "--slurm.time", "10")
    nope = cells(grids.timeout)["nope"]
    job = job_of(grids.timeout, nope)
    wait_for(lambda: last_checkpoint(grids.timeout, nope).is_file() and squeue_field(job, "%T") == "RUNNING",
             "the first checkpoint of the running cell")
    # SLURM checks time limits every 30 s or so: pause the training (its process, not the submitit task) so that it is
    # still under way when the limit comes, however fast this machine trains
    os.kill(json.loads((cell_dir(grids.timeout, nope) / LOCK_FILE).read_text())["child"], signal.SIGSTOP)
    used = parse_minutes(squeue_field(job, "%M"))
    # the job ran `used` minutes of its 10; a limit of the next whole minute leaves under submitit's 90 s warning:
    scontrol("update", f"JobId={job}", f"TimeLimit={int(used) + 1}")
    wait_for(lambda: squeue_field(job, "%T") in ("PENDING", "REQUEUED"), "submitit to requeue the job", timeout=180)
    interrupted_at = checkpoint_step(grids.timeout, nope)
    scontrol("update", f"JobId={job}", "TimeLimit=10")  # the requeued task gets its whole time again
    submitit_log = (cell_dir(grids.timeout, nope) / SUBMITIT_LOGS[1]).read_text()
    assert "Caught signal SIGUSR2" in submitit_log and "this job is timed-out" in submitit_log
    assert 1 <= interrupted_at < STEPS
    wait_for(lambda: (r := read_result(grids.timeout, nope)) is not None and r.status == "finished",
             "the requeued cell to finish", timeout=400)
    trainings = fits(grids.timeout, nope)
    assert len(trainings) == 2 and "--ckpt_path last" in trainings[1]
    assert grids.reference_done.wait(400), "the uninterrupted reference did not finish"
    assert_same_run(run_dir(grids.timeout, nope), grids.reference, STEPS)


def test_a_failing_cell_is_reported_with_its_errors_last_line(grids):
    broken = cells(grids.life)["broken"]
    wait_for(lambda: read_result(grids.life, broken) is not None, "the failing cell to end", timeout=400)
    result = read_result(grids.life, broken)
    assert result.status == "failed" and "data.seq_len = 100000" in result.error
    row = status_rows(grids.life)["broken"]
    assert " failed " in row and "data.seq_len = 100000 but the train split has only" in row


def test_a_rerun_submits_only_what_is_missing_or_failed(grids):
    ids = cells(grids.life)
    wait_for(lambda: job_state(job_of(grids.life, ids["broken"])) not in ALIVE_STATES, "the failing cell's job to end")
    before = submissions(grids.life, ids["broken"])
    rerun = submit(grids.life_grid, grids.life, *grids.life_args).stdout
    assert "train of 1 cell(s) submitted" in rerun
    assert (submissions(grids.life, ids["nope"]), submissions(grids.life, ids["broken"])) == (1, before + 1)
    wait_for(lambda: job_state(job_of(grids.life, ids["broken"])) not in ALIVE_STATES, "the resubmitted cell to end")
    assert read_result(grids.life, ids["broken"]).status == "failed"
    assert len(fits(grids.life, ids["broken"])) == before + 1  # trained once per submission
    assert len(fits(grids.life, ids["nope"])) == 2  # the finished cell was left alone
    assert " failed " in status_rows(grids.life)["broken"]
