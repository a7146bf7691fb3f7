"""The cluster executor: bad settings are one line before anything is submitted; the SLURM submission carries the
grid's settings (checked without a cluster); cells run as submitit tasks (DebugExecutor in-process, LocalExecutor in
real subprocesses), a failing cell is reported by ``status``, a rerun submits only what is missing or failed, and a
cell interrupted and requeued ends bit-identical to an uninterrupted run; a multi-node cell is one job of a task per
device started by srun, and the local executor refuses it."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import submitit
import torch
import yaml
from grid_cases import EXPERIMENTS, FIXTURE_SET, minimal_grid
from rich.console import Console
from submitit.slurm import slurm as submitit_slurm

from tapa_lab.ablation import cell_run, cluster, scheduler
from tapa_lab.ablation.cluster import SLURM_FIT_ARGS, CellTask, ClusterLauncher, slurm_executor, with_layout
from tapa_lab.ablation.command import run_grid, status_grid
from tapa_lab.ablation.executor import SlurmOptions, TaskLayout, grid_options, resolve_executor, task_layout
from tapa_lab.ablation.expand import Cell, expand
from tapa_lab.ablation.layout import (
    CONFIG_FILE,
    LOCK_FILE,
    LOG_FILE,
    SUBMISSION_FILE,
    cell_dir,
    last_checkpoint,
    run_dir,
)
from tapa_lab.ablation.loader import load_grid
from tapa_lab.ablation.process import lab_process
from tapa_lab.ablation.results import CellResult, load_rows
from tapa_lab.ablation.runner import prepare_folder, run_cells
from tapa_lab.ablation.spec import GridError
from tapa_lab.ablation.status import grid_status
from tapa_lab.errors import ConfigError
from tapa_lab.lit.metrics_file import read_metrics


@pytest.mark.parametrize("block,cli,message", [
    ({"partion": "gpu"}, None, "executor: unknown field 'partion'; allowed: partition, account"),
    ({"array_parallelism": -2}, None, "executor.array_parallelism = -2: a positive integer"),
    ({}, SlurmOptions(array_parallelism=-1), "--slurm.array_parallelism = -1: a positive integer"),
    ({"time": "1:00:00"}, None, "executor.time = '1:00:00': expected an integer"),
])
def test_bad_executor_settings_are_one_line_naming_the_field(block, cli, message):
    with pytest.raises((GridError, ConfigError)) as error:
        resolve_executor("slurm", block, cli)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("path", sorted((EXPERIMENTS / "ablations").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_executor_blocks_are_valid(path):
    options = grid_options(load_grid(path).executor)
    if path.stem == "lr-sweep-gpu":
        assert (options.partition, options.gpus_per_task, options.array_parallelism) == ("gpu", 1, 9)


def test_slurm_without_sbatch_points_to_the_local_executor(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigError, match="`sbatch` is not on PATH.*--executor local"):
        resolve_executor("slurm", {"partition": "gpu"}, None)
    assert resolve_executor("local", {"partition": "gpu"}, None) is None  # local ignores the cluster settings


@pytest.mark.parametrize("block,cli,message", [
    ({"partition": "gpu"}, SlurmOptions(partition="nope"),
     "--slurm.partition = 'nope': not a partition of this cluster; one of: debug, gpu."),
    ({"partition": "gpu", "time": 300}, None, "executor.time = 300: partition 'gpu' allows at most 240 minutes"),
    ({"time": 300}, SlurmOptions(time=90), "--slurm.time = 90: partition 'debug' allows at most 30 minutes"),
    ({}, None, "--slurm.time = 60: partition 'debug' allows at most 30 minutes"),  # the default time
])
def test_a_partition_or_time_limit_the_cluster_lacks_is_one_line_naming_the_field(block, cli, message, monkeypatch):
    monkeypatch.setattr("tapa_lab.ablation.executor.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(scheduler, "partitions", lambda: [scheduler.Partition("debug", 30.0, True),
                                                          scheduler.Partition("gpu", 240.0, False)])
    with pytest.raises(ConfigError) as error:
        resolve_executor("slurm", block, cli)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert resolve_executor("slurm", {"partition": "gpu", "time": 240}, None).time == 240  # at the limit: fine


@pytest.mark.parametrize("limit,minutes", [("30:00", 30.0), ("1:00:00", 60.0), ("2-00:00:00", 2880.0),
                                           ("1-02:03:30", 1563.5), ("infinite", None)])
def test_sinfo_time_limits_are_read_in_minutes(limit, minutes):
    assert scheduler.parse_minutes(limit) == minutes


def test_slurm_submission_carries_the_grid_settings_with_the_command_line_winning(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit_slurm.shutil, "which", lambda name: f"/usr/bin/{name}")  # srun "exists"
    monkeypatch.setattr("tapa_lab.ablation.executor.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(scheduler, "partitions", lambda: None)  # no cluster to ask (tests/cluster/ has one)
    block = {"partition": "gpu", "account": "lab", "qos": "normal", "time": 240, "gpus_per_task": 1,
             "cpus_per_task": 8, "mem": "64G", "array_parallelism": 4}
    options = resolve_executor("slurm", block, SlurmOptions(qos="high", array_parallelism=2))
    executor = slurm_executor(tmp_path, options)
    assert executor.parameters == {"job_name": "tapa-lab", "partition": "gpu", "account": "lab", "qos": "high",
                                   "time": 240, "gpus_per_task": 1, "cpus_per_task": 8, "mem": "64G",
                                   "array_parallelism": 2}
    script = submitit_slurm._make_sbatch_string(command="python -m submitit.core._submit", folder=tmp_path,
                                                map_count=6, **executor.parameters)
    for flag in ("--partition=gpu", "--account=lab", "--qos=high", "--time=240", "--gpus-per-task=1",
                 "--cpus-per-task=8", "--mem=64G", "--array=0-5%2", "--job-name=tapa-lab", "--signal=USR2@90"):
        assert f"#SBATCH {flag}\n" in script, flag


def fake_training(fail_level: str):
    """A ``lab_process`` stand-in: records the command like the real one, writes a checkpoint and metrics, or fails
    for the cells of ``fail_level``."""

    def lab_process(args: list[str], log: Path, threads: int, lock=None) -> int:
        out, cell_id = log.parents[2], log.parent.name
        with log.open("a") as stream:
            stream.write(f"$ tapa-lab {' '.join(args)}\n")
            if fail_level in json.loads((log.parent / "cell.json").read_text())["levels"].values():
                stream.write("ValueError: data.seq_len = 100000 is longer than the corpus\n")
                return 1
        last_checkpoint(out, cell_id).parent.mkdir(parents=True, exist_ok=True)
        last_checkpoint(out, cell_id).write_bytes(b"checkpoint")
        line = {"step": 5, "epoch": 0, "train/loss": 3.5, "val/loss": 3.25}
        (run_dir(out, cell_id) / "metrics.jsonl").write_text(json.dumps(line) + "\n")
        return 0

    return lab_process


def status_text(out: Path, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line
    capsys.readouterr()
    status_grid(str(out))
    return capsys.readouterr().out


def test_debug_executor_submit_and_leave_then_rerun_submits_only_what_is_missing(write_grid, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.setattr(cell_run, "lab_process", fake_training("nope"))
    grid = load_grid(write_grid(minimal_grid(seeds=[1])))
    out = tmp_path / "out"
    cells = expand(grid, out)
    prepare_folder(grid, cells, out)
    console = Console(file=io.StringIO())

    def launch(wait: bool) -> list:
        executor = submitit.DebugExecutor(out / "submitit")
        return run_cells(grid, cells, out, console=console, evaluate=False,
                         launcher=ClusterLauncher(executor, out, 1, wait, console))

    assert {r.status for r in launch(wait=False)} == {"pending"}  # queued: nothing ran
    text = status_text(out, capsys, monkeypatch)
    assert text.count("queued") >= 2 and "done" not in text
    results = {r.cell_id: r for r in launch(wait=True)}  # nothing alive holds the cells: submitted again, run
    by_level = {row.levels["pe"]: row for row in load_rows(out)}
    assert by_level["rope"].result.status == "finished" and by_level["rope"].metrics["val/loss"] == 3.25
    assert by_level["nope"].result.status == "failed" and "data.seq_len" in by_level["nope"].result.error
    assert results[by_level["rope"].cell_id].status == "finished"
    text = status_text(out, capsys, monkeypatch)
    assert "done" in text and "failed" in text and "longer than the corpus" in text
    launch(wait=True)  # a rerun: the finished cell is left alone, the failed one is submitted again
    submissions = {level: json.loads((cell_dir(out, row.cell_id) / SUBMISSION_FILE).read_text())["submissions"]
                   for level, row in by_level.items()}
    assert submissions == {"rope": 2, "nope": 3}
    fits = (cell_dir(out, by_level["rope"].cell_id) / LOG_FILE).read_text().count("$ tapa-lab fit")
    assert fits == 1  # trained once
    assert all((cell_dir(out, row.cell_id) / "submitit.out").is_symlink() for row in by_level.values())


#: Steps of the interrupted cell: enough that SIGUSR2 lands mid-training even on an idle machine.
REQUEUE_STEPS = 200


@pytest.mark.slow
def test_local_executor_requeues_an_interrupted_cell_which_resumes_and_reports_the_failing_one(tmp_path, monkeypatch,
                                                                                              capsys):
    levels = {"nope": {"config": [str(EXPERIMENTS / "posenc" / "nope.yaml")]},
              "broken": {"config": [str(EXPERIMENTS / "posenc" / "nope.yaml")], "set": {"data.seq_len": 100000}}}
    spec = minimal_grid(seeds=[1], axes={"pe": {"levels": levels}})
    spec["set"].update({"trainer.max_steps": REQUEUE_STEPS, "trainer.val_check_interval": 10,
                        "trainer.limit_val_batches": 1})
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    grid = load_grid(tmp_path / "grid.yaml")
    out = tmp_path / "out"
    cells = expand(grid, out)
    prepare_folder(grid, cells, out)
    console = Console(file=io.StringIO())
    executor = submitit.LocalExecutor(out / "submitit")
    executor.update_parameters(timeout_min=60)  # no time-out: the interruption below is a preemption
    launcher = ClusterLauncher(executor, out, 1, True, console)
    grid_run = threading.Thread(target=run_cells, args=(grid, cells, out), daemon=True,
                                kwargs={"console": console, "evaluate": False, "launcher": launcher})
    grid_run.start()
    nope = next(cell for cell in cells if cell.levels["pe"] == "nope")
    deadline = time.monotonic() + 300
    while not last_checkpoint(out, nope.cell_id).is_file():
        assert time.monotonic() < deadline, "the cell never wrote a checkpoint"
        time.sleep(0.2)
    task = json.loads((cell_dir(out, nope.cell_id) / LOCK_FILE).read_text())["pid"]  # the submitit task
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before a time-out or preemption
    while _running(task):
        assert time.monotonic() < deadline, "the interrupted task never exited"
        time.sleep(0.05)
    interrupted_at = torch.load(last_checkpoint(out, nope.cell_id), weights_only=False)["global_step"]
    assert 1 <= interrupted_at < REQUEUE_STEPS  # the requeued task has not trained yet: this is where it resumes
    grid_run.join(600)
    assert not grid_run.is_alive()
    rows = {row.levels["pe"]: row for row in load_rows(out)}
    fits = [line for line in (cell_dir(out, nope.cell_id) / LOG_FILE).read_text().splitlines()
            if line.startswith("$ tapa-lab fit")]
    assert len(fits) == 2 and "--ckpt_path last" in fits[1]  # requeued by submitit, resumed from last.ckpt
    assert SLURM_FIT_ARGS[0] not in fits[0]  # Lightning's SLURM plugin only inside SLURM
    assert rows["nope"].result.status == "finished" and rows["nope"].metrics["steps"] == REQUEUE_STEPS
    assert rows["broken"].result.status == "failed" and "data.seq_len" in rows["broken"].result.error
    status = {s.row.levels["pe"]: s for s in grid_status(out)}
    assert (status["nope"].state, status["nope"].retried) == ("done", 1)
    assert status["broken"].state == "failed" and "data.seq_len" in status["broken"].note
    text = status_text(out, capsys, monkeypatch)
    assert "1 done, 1 failed" in text

    # exact resume: the requeued cell ends where the same config trained without interruption ends
    reference = tmp_path / "uninterrupted"
    config = cell_dir(out, nope.cell_id) / CONFIG_FILE
    assert lab_process(["fit", "--config", str(config), "--run_dir", str(reference)], tmp_path / "ref.log", 1) == 0
    resumed = run_dir(out, nope.cell_id)
    assert (resumed / "config.resume-1.yaml").is_file()  # the second training continued the same run folder
    for tag in ("train/loss", "val/loss"):
        series, expected = read_metrics(resumed, [tag])[tag], read_metrics(reference, [tag])[tag]
        assert series == expected and max(series) == REQUEUE_STEPS - 1, tag  # every step, the final one included
    weights = [torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
               for run in (resumed, reference)]
    assert weights[0]["global_step"] == weights[1]["global_step"] == REQUEUE_STEPS
    assert weights[0]["state_dict"].keys() == weights[1]["state_dict"].keys()
    assert all(torch.equal(weights[0]["state_dict"][name], weights[1]["state_dict"][name])
               for name in weights[1]["state_dict"])


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_multi_node_cell_is_one_job_of_a_task_per_device_started_by_srun(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit_slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr("tapa_lab.ablation.executor.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(scheduler, "partitions", lambda: None)  # no cluster to ask (tests/cluster/ has one)
    grid = load_grid(EXPERIMENTS / "ablations" / "ddp-2node-gpu.yaml")
    cells = expand(grid, tmp_path / "out")
    assert {task_layout(cell.config["trainer"]) for cell in cells} == {TaskLayout(nodes=2, tasks_per_node=4, gpu=True)}
    executor = slurm_executor(tmp_path, resolve_executor("slurm", grid.executor, None))
    multi = with_layout(executor, task_layout(cells[0].config["trainer"]))
    assert "nodes" not in executor.parameters  # the grid's one-task cells keep their settings
    script = submitit_slurm._make_sbatch_string(command="python -u -m submitit.core._submit /jobs", folder=tmp_path,
                                                map_count=len(cells), **multi.parameters)
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--array=0-1%2"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "--gpus-per-task" not in script  # every task sees its node's 4 GPUs; Lightning picks one by local rank
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert srun.startswith("srun --unbuffered --output") and srun.endswith("python -u -m submitit.core._submit /jobs")


def test_cells_of_each_task_layout_are_submitted_as_their_own_array(write_grid, tmp_path):
    submitted = []

    class Recording(submitit.DebugExecutor):
        def submit_array(self, fns):
            submitted.append((dict(self.parameters), {task.layout for task in fns}))
            return super().submit_array(fns)

    grid = load_grid(write_grid(minimal_grid(seeds=[1], set={**FIXTURE_SET, "trainer.devices": 2},
                                             axes={"nodes": {"key": "trainer.num_nodes", "values": [1, 2]}})))
    out = tmp_path / "out"
    cells = expand(grid, out)
    prepare_folder(grid, cells, out)
    console = Console(file=io.StringIO())
    run_cells(grid, cells, out, console=console, evaluate=False,
              launcher=ClusterLauncher(Recording(out / "submitit"), out, 1, False, console))
    assert sorted((p.get("nodes"), p.get("tasks_per_node"), layouts) for p, layouts in submitted) == [
        (1, 2, {TaskLayout(1, 2)}), (2, 2, {TaskLayout(2, 2)})]


def test_the_local_executor_refuses_a_multi_node_cell_in_one_line(write_grid, tmp_path, capsys):
    path = write_grid(minimal_grid(seeds=[1], set={**FIXTURE_SET, "trainer.num_nodes": 2, "trainer.devices": 1}))
    with pytest.raises(ConfigError) as error:
        run_grid(str(path), out_dir=str(tmp_path / "out"))
    message = str(error.value)
    assert "trainer.num_nodes = 2" in message and "--executor slurm" in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # refused before anything was written


class FakeEnvironment:
    def __init__(self, rank: int):
        self.global_rank = self.local_rank = rank


@pytest.mark.parametrize("rank", [0, 1])
def test_task_0_of_a_multi_task_cell_owns_it_and_the_others_run_the_same_fit(rank, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")  # recorded, so the task's own setting is undone after the test
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(cluster.submitit, "JobEnvironment", lambda: FakeEnvironment(rank))
    owned, followed = [], []
    monkeypatch.setattr(cluster, "run_phase", lambda *args: owned.append(args) or CellResult("c", "finished"))
    monkeypatch.setattr(cluster, "lab_process", lambda args, log, threads: followed.append((args, log.name)) or 0)
    cell = runner_cell()
    cell_dir(tmp_path, cell.cell_id).mkdir(parents=True)
    last_checkpoint(tmp_path, cell.cell_id).parent.mkdir(parents=True)
    last_checkpoint(tmp_path, cell.cell_id).write_bytes(b"checkpoint")
    task = CellTask("train", cell, tmp_path, 1, TaskLayout(nodes=2, tasks_per_node=1))
    assert task() == "finished" and os.environ["LOCAL_RANK"] == str(rank)
    if rank == 0:
        assert len(owned) == 1 and not followed
        return
    assert not owned and followed == [(["fit", "--config", str(cell_dir(tmp_path, cell.cell_id) / CONFIG_FILE),
                                        "--ckpt_path", "last"], "log.rank1.txt")]
    CellResult(cell.cell_id, "finished").write(cell_dir(tmp_path, cell.cell_id))
    assert task() == "skipped" and len(followed) == 1  # task 0 will not train a finished cell: neither does this one


def runner_cell() -> Cell:
    return Cell(cell_id="c0ffee000000", stage="train", levels={"pe": "rope"}, seed=1, init_from=None,
                config={"trainer": {}}, evaluation=None)
