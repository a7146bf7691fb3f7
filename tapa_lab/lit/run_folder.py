"""The run folder, ``checkpoints/<name>/version_<n>/``: which one a run uses, and the loggers pointed at it.

Every run's files (``config.yaml``, ``checkpoints/``, ``metrics.jsonl``, the run records, the TensorBoard or CSV
logger's files) live there whatever Lightning logger it uses; :class:`tapa_lab.cli.LabCLI` calls
:func:`pin_run_folder` before it builds the trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

from jsonargparse import Namespace

from tapa_lab.lit.loggers import folder_loggers, logger_configs, name_external_run

PINNED_VERSION_ENV = "TAPA_LAB_RUN_VERSION"
"""The version rank 0 chose, inherited by the DDP workers it launches (they must use the same folder)."""


def pin_run_folder(config: Namespace, create: bool = False) -> Path:
    """Choose the run folder, and point the loggers that write into a folder of their own (TensorBoard, CSV) at it.

    The folder is ``run_dir`` when the config names one (a saved ``config.yaml`` does, so passing it back resumes or
    evaluates that run). Otherwise it is ``<root>/<name>/version_<n>`` with the next free ``n`` (created at once with
    ``create``, so concurrent runs never share one): root and name are the TensorBoard or CSV logger's ``save_dir`` and
    ``name`` (``auto``, the default, is the PE's class name, e.g. ``checkpoints/TAPA/version_0``), or
    ``trainer.default_root_dir`` and the PE's class name with any other logger or none. A TensorBoard/CSV logger that
    names its version pins that folder (configs saved before ``run_dir``). MLflow and W&B log where they are configured
    to (the MLflow run is named ``<name>/version_<n>``); the lab's own files (``config.yaml``, ``checkpoints/``,
    ``metrics.jsonl``, run records) are in the run folder whatever the logger. Starting ``fit`` from scratch in a
    folder that holds checkpoints is refused (:func:`tapa_lab.cli.resolve_ckpt_path`), so nothing already trained is
    overwritten.

    Raises:
        ConfigError: naming ``trainer.logger`` when it is ``true`` or its package is not installed.
    """
    loggers = logger_configs(config)
    in_folder = folder_loggers(loggers)
    if config.get("run_dir") is not None:
        run_dir = Path(config.run_dir)
    else:
        pinned = in_folder[0].init_args if in_folder else Namespace()
        name = pinned.get("name")
        base = Path(pinned.get("save_dir") or config.trainer.get("default_root_dir") or "checkpoints") / (
            str(config.model.posenc.class_path).rsplit(".", 1)[-1] if name in (None, "auto") else name)
        version = pinned.get("version")
        if version is None:
            if os.environ.get("LOCAL_RANK", "0") != "0" and PINNED_VERSION_ENV in os.environ:
                version = int(os.environ[PINNED_VERSION_ENV])  # a DDP worker: use the folder rank 0 chose
            else:
                version = allocate_version(base) if create else next_version(base)
                os.environ[PINNED_VERSION_ENV] = str(version)  # inherited by the workers DDP launches
        run_dir = base / (version if isinstance(version, str) else f"version_{version}")
    for logger in in_folder:
        logger.init_args.save_dir = str(run_dir.parent.parent)
        logger.init_args.name = run_dir.parent.name
        logger.init_args.version = run_dir.name
    for logger in loggers:
        name_external_run(logger, run_dir)
    return run_dir


def next_version(base: Path) -> int:
    """One above the highest ``version_<n>`` under ``base`` (0 if none)."""
    taken = [int(p.name.split("_", 1)[1]) for p in base.glob("version_*") if p.name.split("_", 1)[1].isdigit()]
    return max(taken, default=-1) + 1


def allocate_version(base: Path) -> int:
    """Create the next free ``base/version_<n>`` and return ``n``; an exclusive ``mkdir`` makes concurrent runs with
    the same logger name take different folders."""
    base.mkdir(parents=True, exist_ok=True)
    version = next_version(base)
    while True:
        try:
            (base / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1
