"""Expanding a grid into cells: each cell's config built and checked by ``tapa-lab fit``'s own parser.

This is the one bridge between the grid format and the LightningCLI (:func:`tapa_lab.cli.run_lightning`). A cell's id
is a hash of the canonical form of its resolved config (:func:`~tapa_lab.ablation.spec.cell_digest`): identical
cells (e.g. the shared pretraining of RoPE and RoPE+PI in a context-extension grid) are one run, whatever the calling
process imported first.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser

from tapa_lab.ablation.layout import CellInfo, last_checkpoint
from tapa_lab.ablation.spec import Evaluation, Grid, GridError, cell_digest, cli_value, digest
from tapa_lab.cli import run_lightning
from tapa_lab.errors import ConfigError

#: Flags every cell gets: no progress bar in the subprocess logs, and a guard that stops a diverged run.
RUNNER_ARGS = ("--trainer.enable_progress_bar=false",
               "--trainer.callbacks+=tapa_lab.ablation.guard.NonFiniteLossGuard")
#: What makes the parser instantiate on any machine (the -gpu grids name a GPU accelerator).
PORTABLE_ARGS = ("--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
                 "--trainer.num_nodes=1", "--trainer.precision=32-true")


@dataclass(frozen=True)
class Cell(CellInfo):
    """One training run of the grid: its identity (:class:`~tapa_lab.ablation.layout.CellInfo`), its resolved
    config and its evaluation.

    Attributes:
        config: the resolved config (every field, defaults included), without the logger.
        evaluation: the evaluation to run after training, or ``None``.
        legacy_id: the id this cell had before ids were canonical (the plain digest of its config as ``tapa-lab
            ablation run`` resolved it then, :func:`legacy_form`): a grid folder written then is migrated to the
            canonical ids (:func:`tapa_lab.ablation.migrate.migrate_legacy_cells`).
    """

    config: dict[str, Any]
    evaluation: Evaluation | None
    legacy_id: str | None = None


def expand(grid: Grid, out_dir: Path) -> list[Cell]:
    """Every cell of every stage, each config built and checked by the lab's parser; nothing is trained.

    Args:
        grid: a loaded grid.
        out_dir: the grid's output folder (later stages name their parent cell's checkpoint in it).

    Returns:
        The cells in run order (stage by stage); identical configs appear once.

    Raises:
        GridError: naming the cell and the parser's message (which names the offending key).
    """
    parser = _lab_parser()
    cells: dict[str, Cell] = {}
    by_levels: dict[tuple[str, tuple, int], tuple[str, str]] = {}  # -> (cell id, legacy id)
    for stage in grid.stages.values():
        for levels in grid.combinations():
            level_specs = [axis.level(levels[axis.name]) for axis in grid.axes]
            fragments = [*grid.base, *stage.config]
            settings = {**grid.set, **stage.set}
            for spec in level_specs:
                fragments += spec.config
                settings.update(spec.set)
            for spec in level_specs:
                override = spec.stages.get(stage.name)
                if override is not None:
                    fragments += override.config
                    settings.update(override.set)
            args = [*(a for f in fragments for a in ("--config", str(f))),
                    *(f"--{key}={cli_value(value)}" for key, value in settings.items()), *RUNNER_ARGS]
            where = f"stage {stage.name!r}, {', '.join(f'{k}={v}' for k, v in levels.items()) or 'base'}"
            resolved = _resolve(parser, args, where)  # seeds and parent checkpoints are filled in below
            for seed in grid.seeds:
                config = json.loads(json.dumps(resolved))
                config["seed_everything"] = seed
                config["trainer"].pop("logger", None)
                parent = legacy_parent = None
                if stage.init_from is not None:
                    parent, legacy_parent = by_levels[(stage.init_from, tuple(levels.items()), seed)]
                    config["model"]["init_from"] = f"cell:{legacy_parent}"
                    legacy_id = digest(legacy_form(config))
                    config["model"]["init_from"] = f"cell:{parent}"  # the identity: the parent cell, not its path
                    cell_id = cell_digest(config)
                    config["model"]["init_from"] = str(last_checkpoint(out_dir, parent))
                else:
                    cell_id, legacy_id = cell_digest(config), digest(legacy_form(config))
                by_levels[(stage.name, tuple(levels.items()), seed)] = (cell_id, legacy_id)
                cells.setdefault(cell_id, Cell(cell_id=cell_id, stage=stage.name, levels=levels, seed=seed,
                                               init_from=parent, config=config,
                                               evaluation=grid.stage_evaluation(stage), legacy_id=legacy_id))
    return list(cells.values())


#: Trainer fields typed ``int | float | None`` that the command read as floats before ids were canonical
#: (``limit_val_batches: 8`` -> 8.0), whatever a process resolves them to now.
LEGACY_FLOAT_FIELDS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                       "overfit_batches", "gradient_clip_val")


def legacy_form(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as ``tapa-lab ablation run`` resolved it before December 2026 (the payload of the legacy ids): the
    :data:`LEGACY_FLOAT_FIELDS` as floats, and the fields added with canonical ids (``model.optim.groups``, TAPA's
    ``phase_schedule``) left out while they hold their defaults."""
    trainer = dict(config["trainer"])
    for key in LEGACY_FLOAT_FIELDS:
        if type(trainer.get(key)) is int:
            trainer[key] = float(trainer[key])
    model = json.loads(json.dumps(config["model"]))
    if model.get("optim", {}).get("groups") == []:
        del model["optim"]["groups"]
    init_args = model.get("posenc", {}).get("init_args", {})
    if "phase_schedule" in init_args and init_args["phase_schedule"] is None:
        del init_args["phase_schedule"]
    return {**config, "trainer": trainer, "model": model}


def _lab_parser() -> ArgumentParser:
    """The parser of ``tapa-lab fit``'s config (built once per process), raising instead of exiting on errors."""
    global _PARSER
    if _PARSER is None:
        loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)  # no "GPU available" or "Seed set" lines from building the parser
        try:
            with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # sys.argv is `ablation run ...`
                _PARSER = run_lightning(list(PORTABLE_ARGS), run=False).parser
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
        _PARSER.exit_on_error = False
    return _PARSER


_PARSER: ArgumentParser | None = None


def _resolve(parser: ArgumentParser, args: list[str], where: str) -> dict[str, Any]:
    """Parse ``args`` as ``tapa-lab fit`` would, instantiate the model and data on the meta device (so constructors
    check values), and return the resolved config as a plain dict.

    Raises:
        GridError: naming ``where`` and the parser's or constructor's message (which names the key).
    """
    try:
        namespace = parser.parse_args(args)
        portable = namespace.clone()
        for key, value in (arg.removeprefix("--").split("=", 1) for arg in PORTABLE_ARGS):
            portable[key] = int(value) if value.isdigit() else value
        with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
            parser.instantiate(portable)
    except (ConfigError, ValueError, TypeError, argparse.ArgumentError) as error:
        raise GridError(f"{where}: {error}") from None
    return yaml.safe_load(parser.dump(namespace, skip_unset=False, skip_validation=True))
