"""Helpers of the tests against a real SLURM scheduler: the lab's command in a subprocess, grids of tiny cells, polling.

The grid commands run as a user types them (``python -m tapa_lab ablation run --grid ... --executor slurm``, i.e. the
``tapa-lab`` command); the grid folders are under pytest's ``tmp_path``, so the cluster's nodes must see this
machine's /tmp (true of the one-node cluster of ``slurm.sh``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from tapa_lab.ablation.layout import INDEX_FILE, LOG_FILE, SUBMISSION_FILE, cell_dir, last_checkpoint
from tapa_lab.lit.metrics_file import read_metrics

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
NOPE = {"config": [str(EXPERIMENTS / "posenc" / "nope.yaml")]}
BROKEN = {"config": [str(EXPERIMENTS / "posenc" / "nope.yaml")], "set": {"data.seq_len": 100000}}
#: The settings of every cell: the tiny preset on the committed fixture corpus, short windows, CPU.
CELL_SET = {"trainer.accelerator": "cpu", "trainer.limit_val_batches": 1, "trainer.log_every_n_steps": 1,
            "trainer.val_check_interval": 10, "data.corpus": "tapa_lab.data.Fixture", "data.seq_len": 32,
            "data.batch_size": 4, "data.val_windows": 4}


def write_grid(path: Path, name: str, levels: dict[str, Any], steps: int, **settings: Any) -> Path:
    """A one-seed grid of tiny ``steps``-step cells, one per level of the ``pe`` axis; ``settings`` join ``set``."""
    spec = {"name": name, "base": [str(EXPERIMENTS / "model" / "tiny.yaml")],
            "set": {**CELL_SET, "trainer.max_steps": steps, **settings}, "seeds": [1],
            "axes": {"pe": {"levels": levels}}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def lab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``tapa-lab <args>`` in a subprocess (tables wide enough for one line per row); its output is kept."""
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "tapa_lab", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def submit(grid: Path, out: Path, *slurm: str) -> subprocess.CompletedProcess[str]:
    """``tapa-lab ablation run --grid <grid> --out_dir <out> --executor slurm --wait false <slurm...>``, checked."""
    done = lab("ablation", "run", "--grid", str(grid), "--out_dir", str(out), "--executor", "slurm", "--wait", "false",
               "--evaluate", "false", *slurm)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def status_rows(out: Path) -> dict[str, str]:
    """``tapa-lab ablation status --out_dir <out>``: each cell's table row, by its ``pe`` level."""
    done = lab("ablation", "status", "--out_dir", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return {line.split("pe=")[1].split()[0]: line for line in done.stdout.splitlines() if "pe=" in line}


def cells(out: Path) -> dict[str, str]:
    """The grid's cell ids by their ``pe`` level."""
    ids = json.loads((out / INDEX_FILE).read_text())
    return {json.loads((cell_dir(out, i) / "cell.json").read_text())["levels"]["pe"]: i for i in ids}


def job_of(out: Path, cell_id: str) -> str:
    """The SLURM job (array task ``<array>_<index>``) the cell was last submitted as."""
    return json.loads((cell_dir(out, cell_id) / SUBMISSION_FILE).read_text())["job_id"]


def submissions(out: Path, cell_id: str) -> int:
    """How often ``run`` submitted the cell."""
    return json.loads((cell_dir(out, cell_id) / SUBMISSION_FILE).read_text())["submissions"]


def fits(out: Path, cell_id: str) -> list[str]:
    """The ``tapa-lab fit`` command lines of the cell's log, one per training started."""
    log = cell_dir(out, cell_id) / LOG_FILE
    return [line for line in log.read_text().splitlines() if line.startswith("$ tapa-lab fit")] if log.is_file() else []


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 300, every: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something true (returned); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def scontrol(*args: str) -> None:
    """``scontrol <args>``; fails the test with SLURM's message if it refuses."""
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"scontrol {' '.join(args)}: {done.stderr.strip()}"


def squeue_field(job_id: str, field: str) -> str:
    """One ``squeue --format`` field of a job (``%T`` state, ``%M`` time used, ...), or ``""`` when it is gone."""
    done = subprocess.run(["squeue", "--noheader", "--states=all", f"--jobs={job_id}", f"--format={field}"],
                          capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip()


def assert_same_run(resumed: Path, reference: Path, steps: int) -> None:
    """The resumed run logged every step's ``train/loss`` and ``val/loss`` as the reference did, and its final weights
    equal the reference's bit for bit."""
    for tag in ("train/loss", "val/loss"):
        series, expected = read_metrics(resumed, [tag])[tag], read_metrics(reference, [tag])[tag]
        assert series == expected and max(series) == steps - 1, tag
    weights = [torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
               for run in (resumed, reference)]
    assert weights[0]["global_step"] == weights[1]["global_step"] == steps
    assert weights[0]["state_dict"].keys() == weights[1]["state_dict"].keys()
    assert all(torch.equal(weights[0]["state_dict"][k], weights[1]["state_dict"][k]) for k in weights[1]["state_dict"])


def checkpoint_step(out: Path, cell_id: str) -> int:
    """The global step of the cell's ``last.ckpt``."""
    return int(torch.load(last_checkpoint(out, cell_id), map_location="cpu", weights_only=False)["global_step"])
