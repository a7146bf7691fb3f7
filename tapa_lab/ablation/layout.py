"""A grid's output folder: every file name, spelled once here, and the paths built from them.

Layout (``checkpoints/ablations/<grid name>/`` by default)::

    grid.yaml                    the grid file as run
    cells.json                   the cell ids in run order
    history.jsonl                one line per invocation: command, start, wall time, workers, threads
    cells/<cell id>/config.yaml  the cell's resolved config: `tapa-lab fit --config <it>` trains the cell
    cells/<cell id>/cell.json    stage, levels, seed, parent cell (a CellInfo)
    cells/<cell id>/run/         the Lightning run folder (events, checkpoints/last.ckpt, run_record_*.json, eval/)
    cells/<cell id>/log.txt      the processes' output (``log.rank<k>.txt``: task k > 0 of a multi-task cell)
    cells/<cell id>/lock         held (fcntl) by the process training or evaluating the cell; holds its pid
    cells/<cell id>/result.json  status, error, metrics, wall times (see results.CellResult)
    cells/<cell id>/trained      training finished and its last.ckpt exists; ``evaluated`` holds the fingerprint of
                                 the evaluation done
    cells/<cell id>/submission.json, submitit.out, submitit.err   the cell's last cluster job and links to its
                                 submitit logs (``--executor slurm``; the job files are under submitit/)
    submitit/                    the cluster executor's job files
    report/                      written by report.write_report

``result.json`` and the markers are written atomically (a temporary file renamed over the old one).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GRID_COPY = "grid.yaml"
INDEX_FILE = "cells.json"
HISTORY_FILE = "history.jsonl"
CELLS_DIR = "cells"
CONFIG_FILE = "config.yaml"
INFO_FILE = "cell.json"
RUN_DIR = "run"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
LOG_FILE = "log.txt"
RANK_LOG = "log.rank{rank}.txt"
LOCK_FILE = "lock"
RESULT_FILE = "result.json"
TRAINED_MARKER = "trained"
EVALUATED_MARKER = "evaluated"
DIVERGED_FILE = "diverged.json"
EVAL_RESULTS = ("eval", "results.json")
SUBMITIT_DIR = "submitit"
SUBMISSION_FILE = "submission.json"
SUBMITIT_LOGS = ("submitit.out", "submitit.err")
REPORT_DIR = "report"


@dataclass(frozen=True)
class CellInfo:
    """Who a cell is (``cells/<id>/cell.json``): the part a grid's cells and a folder's rows share.

    Attributes:
        cell_id: 12 hex digits of the SHA-256 of the resolved config (logger excluded).
        stage: the stage name.
        levels: the level of each axis, ``{axis: level name}`` (value axes name the value, e.g. ``"0.001"``).
        seed: ``seed_everything`` of the run.
        init_from: the id of the cell whose last checkpoint initialises this one (a later stage), or ``None``.
    """

    cell_id: str
    stage: str
    levels: dict[str, str]
    seed: int
    init_from: str | None

    def label(self, exclude: tuple[str, ...] = ()) -> str:
        """``pe=rope, lr=0.001`` (the levels without the seed and without the axes in ``exclude``)."""
        return ", ".join(f"{axis}={level}" for axis, level in self.levels.items() if axis not in exclude) or "all"

    def info(self) -> CellInfo:
        """Only the identity fields (a subclass' extra fields dropped)."""
        return CellInfo(self.cell_id, self.stage, self.levels, self.seed, self.init_from)


def cell_dir(out_dir: Path, cell_id: str) -> Path:
    """``<out_dir>/cells/<cell_id>/``: the cell's config, record, logs and Lightning run folder (``run/``)."""
    return out_dir / CELLS_DIR / cell_id


def run_dir(out_dir: Path, cell_id: str) -> Path:
    """The Lightning run folder of a cell (``cells/<id>/run``)."""
    return cell_dir(out_dir, cell_id) / RUN_DIR


def last_checkpoint(out_dir: Path, cell_id: str) -> Path:
    """The ``last.ckpt`` a cell's training writes."""
    return run_dir(out_dir, cell_id) / CHECKPOINTS_DIR / LAST_CHECKPOINT


def run_config(config: dict[str, Any], out_dir: Path, cell_id: str) -> dict[str, Any]:
    """A cell's resolved config pinned to its run folder (``run_dir``: ``<cell dir>/run``), logging to TensorBoard.

    The cell id appears only inside paths: a bare id such as ``13139e899592`` would be read back as a float.
    """
    config = json.loads(json.dumps(config, default=str))
    config["run_dir"] = str(run_dir(out_dir, cell_id))
    config["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                   "init_args": {"save_dir": str(cell_dir(out_dir, cell_id))}}
    return config


def write_info(out_dir: Path, info: CellInfo) -> None:
    """Write ``cell.json``."""
    write_atomic(cell_dir(out_dir, info.cell_id) / INFO_FILE, json.dumps(asdict(info.info()), indent=2))


def read_info(out_dir: Path, cell_id: str) -> CellInfo:
    """Read ``cell.json``."""
    raw = json.loads((cell_dir(out_dir, cell_id) / INFO_FILE).read_text())
    return CellInfo(raw["cell_id"], raw["stage"], raw["levels"], raw["seed"], raw.get("init_from"))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk and rename it over ``path``: a reader
    sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
