"""Grid runner integrity: a cell has one owner at a time, its ``trained`` marker exists only beside the checkpoint it
describes, and after ``kill -9`` of the runner its training child dies too; the rerun resumes each cell once, with
metrics that match its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from grid_cases import EXPERIMENTS, minimal_grid

from tapa_lab.ablation import cell_run
from tapa_lab.ablation.command import run_grid
from tapa_lab.ablation.expand import Cell
from tapa_lab.ablation.layout import LOCK_FILE, TRAINED_MARKER, cell_dir, last_checkpoint
from tapa_lab.ablation.process import own_cell
from tapa_lab.ablation.results import load_rows, read_result

#: Steps of the killed cell: enough that the runner is killed mid-training even on an idle machine.
STEPS = 300


def fake_cell(cell_id: str = "c0ffee000000") -> Cell:
    return Cell(cell_id=cell_id, stage="train", levels={"pe": "rope"}, seed=1, init_from=None,
                config={"trainer": {}}, evaluation=None)


def test_a_cell_owned_by_another_process_is_skipped_naming_its_pid(tmp_path, monkeypatch):
    cell = fake_cell()
    folder = cell_dir(tmp_path, cell.cell_id)
    folder.mkdir(parents=True)
    started = []
    monkeypatch.setattr(cell_run, "lab_process", lambda *args, **kwargs: started.append(args) or 0)
    owner = subprocess.Popen([sys.executable, "-c", "import fcntl, json, os, sys, time\n"
                              f"fd = os.open({str(folder / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
                              "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                              "os.write(fd, json.dumps({'pid': os.getpid()}).encode())\n"
                              "print('locked', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        result = cell_run.train_cell(cell, tmp_path, 1, None)
    finally:
        owner.kill()
        owner.wait()
    assert result.status == "skipped" and result.error == f"cell {cell.cell_id} is being trained by pid {owner.pid}"
    assert not started and read_result(tmp_path, cell.cell_id) is None  # nothing ran, nothing was overwritten
    cell_run.train_cell(cell, tmp_path, 1, None)  # the kernel dropped the dead owner's lock
    assert len(started) == 1


def test_training_that_exits_cleanly_without_a_checkpoint_is_not_marked_trained(tmp_path, monkeypatch):
    cell = fake_cell()
    cell_dir(tmp_path, cell.cell_id).mkdir(parents=True)
    monkeypatch.setattr(cell_run, "lab_process", lambda *args, **kwargs: 0)
    result = cell_run.train_cell(cell, tmp_path, 1, None)
    assert result.status == "failed" and "without writing" in result.error
    assert not (cell_dir(tmp_path, cell.cell_id) / TRAINED_MARKER).exists()

    def train(*args, **kwargs) -> int:
        last_checkpoint(tmp_path, cell.cell_id).parent.mkdir(parents=True)
        last_checkpoint(tmp_path, cell.cell_id).write_bytes(b"checkpoint")
        return 0

    monkeypatch.setattr(cell_run, "lab_process", train)
    assert cell_run.train_cell(cell, tmp_path, 1, None).status == "finished"
    assert (cell_dir(tmp_path, cell.cell_id) / TRAINED_MARKER).is_file()
    assert json.loads((cell_dir(tmp_path, cell.cell_id) / "result.json").read_text())["status"] == "finished"
    assert not list(cell_dir(tmp_path, cell.cell_id).glob(".*.tmp"))  # atomic writes leave no temporary file


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead; its new parent may never reap it in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_kill_9_of_the_runner_kills_its_child_and_the_rerun_resumes_each_cell_once(tmp_path, monkeypatch):
    grid = minimal_grid(seeds=[1], axes={"pe": {"levels": {"nope": {"config": [str(EXPERIMENTS / "posenc" /
                                                                                  "nope.yaml")]}}}})
    grid["set"].update({"trainer.max_steps": STEPS, "trainer.val_check_interval": 5, "trainer.limit_val_batches": 1})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tapa_lab", "ablation", "run", "--grid", str(path), "--out_dir", str(out),
               "--evaluate", "false"]
    grid_runner = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: any((out / "cells").glob("*/run/checkpoints/last.ckpt")), 180, "the first last.ckpt")
        (checkpoint,) = (out / "cells").glob("*/run/checkpoints/last.ckpt")
        folder = checkpoint.parents[2]
        child = json.loads((folder / LOCK_FILE).read_text())["child"]
        time.sleep(0.3)  # let the checkpoint's write end
        grid_runner.send_signal(signal.SIGKILL)
        grid_runner.wait()
    finally:
        grid_runner.kill()
    _wait(lambda: _gone(child), 5, f"the fit child {child} to die with its runner")
    with own_cell(folder):
        pass  # nobody owns the cell any more
    steps_at_kill = torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < steps_at_kill < STEPS  # killed mid-training

    monkeypatch.chdir(tmp_path)
    run_grid(str(path), out_dir=str(out), evaluate=False)
    (row,) = load_rows(out)
    fits = [line for line in (folder / "log.txt").read_text().splitlines() if line.startswith("$ tapa-lab fit")]
    assert len(fits) == 2 and "--ckpt_path last" in fits[1]  # the killed attempt, then one resume
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert row.result.status == "finished" and row.metrics["steps"] == state["global_step"] == STEPS
    best = next(s for k, s in state["callbacks"].items() if k.startswith("ModelCheckpoint"))["best_model_score"]
    assert row.metrics["val/loss_best"] == pytest.approx(float(best))
    assert int((folder / TRAINED_MARKER).read_text()) == os.stat(checkpoint).st_mtime_ns  # written after it
