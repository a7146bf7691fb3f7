"""Ablation grids: the YAML format, its validation and its expansion into cells.

A grid names base config fragments, axes, seeds, optional stages and the evaluation to run after training
(docs/ablation.md is the user's guide)::

    name: extrapolation
    base: [experiments/model/tiny.yaml]          # fragments composed like repeated --config (later wins)
    set: {trainer.max_steps: 600}                 # dotted config keys for every cell
    seeds: [1, 2, 3]
    axes:
      pe:                                         # a level axis: named bundles of fragments and keys
        levels:
          rope: {config: [experiments/posenc/rope.yaml]}
          tapa: {config: [experiments/posenc/tapa.yaml], set: {model.posenc.init_args.alpha: 0.1}}
      lr:                                         # a value axis: one key, a list of values
        key: model.optim.lr
        values: [0.001, 0.003]
        per_level: {pe: {tapa: [0.0003, 0.001]}}  # values that depend on an earlier axis' level
        select: val/loss                          # keep the best value (mean over seeds, minimised) per other levels
    zip: [[a, b]]                                 # axes that vary together; the others form a product
    stages:                                       # optional; default one stage named "train"
      pretrain: {}
      extend: {init_from: pretrain, set: {data.seq_len: 512}}
    evaluation: {checkpoint: last, args: {perplexity.multiples: [1, 2, 4]}}   # `tapa-lab eval` after training
    report: {baseline: {pe: rope}, metrics: [val/loss, ppl@1x]}

Every cell's config is built by the lab's own parser, so an unknown key or a bad value is rejected, naming the key,
before anything trains. A cell's id is a hash of its resolved config: identical cells (e.g. the shared pretraining of
RoPE and RoPE+PI in a context-extension grid) are one run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser

from tapa_lab.errors import ConfigError

GRID_KEYS = {"name", "description", "base", "set", "seeds", "axes", "zip", "stages", "evaluation", "report", "workers"}
LEVEL_AXIS_KEYS = {"levels"}
VALUE_AXIS_KEYS = {"key", "values", "per_level", "select"}
LEVEL_KEYS = {"config", "set", "stages"}
STAGE_KEYS = {"init_from", "config", "set", "evaluation"}
EVALUATION_KEYS = {"checkpoint", "args"}
REPORT_KEYS = {"baseline", "metrics"}
DEFAULT_STAGE = "train"
#: Flags every cell gets: no progress bar in the subprocess logs, and a guard that stops a diverged run.
RUNNER_ARGS = ("--trainer.enable_progress_bar=false",
               "--trainer.callbacks+=tapa_lab.ablation.guard.NonFiniteLossGuard")
#: What makes the parser instantiate on any machine (the -gpu grids name a GPU accelerator).
PORTABLE_ARGS = ("--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
                 "--trainer.num_nodes=1", "--trainer.precision=32-true")


class GridError(ConfigError):
    """A grid file is malformed; the message names the offending key."""


@dataclass(frozen=True)
class Evaluation:
    """What ``tapa-lab eval`` is asked after training: which checkpoint, and the extra arguments (dotted keys)."""

    checkpoint: str = "last"
    args: dict[str, Any] = field(default_factory=dict)

    def command_args(self) -> list[str]:
        """The arguments after ``tapa-lab eval --run <run>``."""
        return ["--checkpoint", self.checkpoint, *(f"--{key}={_cli_value(value)}" for key, value in self.args.items())]

    def fingerprint(self) -> str:
        """A hash of the request: results made under another request are recomputed."""
        return _digest({"checkpoint": self.checkpoint, "args": self.args})


@dataclass(frozen=True)
class Cell:
    """One training run of the grid: a stage, one level per axis, a seed, and its resolved config.

    Attributes:
        cell_id: 12 hex digits of the SHA-256 of the resolved config (logger excluded).
        stage: the stage name.
        levels: the level of each axis, ``{axis: level name}`` (value axes name the value, e.g. ``"0.001"``).
        seed: ``seed_everything`` of the run.
        config: the resolved config (every field, defaults included), without the logger.
        init_from: the id of the cell whose last checkpoint initialises this one (a later stage), or ``None``.
        evaluation: the evaluation to run after training, or ``None``.
    """

    cell_id: str
    stage: str
    levels: dict[str, str]
    seed: int
    config: dict[str, Any]
    init_from: str | None
    evaluation: Evaluation | None

    @property
    def label(self) -> str:
        """``pe=rope, lr=0.001`` (the levels without the seed)."""
        return ", ".join(f"{axis}={level}" for axis, level in self.levels.items())


@dataclass(frozen=True)
class Axis:
    """An axis of the grid.

    Attributes:
        name: the axis name (a column of the report).
        levels: ``{level name: {"config": [fragments], "set": {dotted key: value}, "stages": {stage: {...}}}}``; a
            value axis has one level per value, named by the value (``"0.001"``).
        key: the config key of a value axis (``None`` for a level axis).
        per_level: ``{earlier axis: {its level: [values]}}``: values of this axis that replace ``levels`` there.
        select: the metric whose lowest mean over seeds picks this axis' level (a sweep), or ``None``.
    """

    name: str
    levels: dict[str, dict[str, Any]]
    key: str | None = None
    per_level: dict[str, dict[str, list]] = field(default_factory=dict)
    select: str | None = None

    def level_names(self, chosen: dict[str, str]) -> list[str]:
        """The levels of this axis given the levels already chosen for earlier axes (``per_level``)."""
        for other, table in self.per_level.items():
            if chosen.get(other) in table:
                return [_level_name(v) for v in table[chosen[other]]]
        return list(self.levels)

    def level(self, name: str) -> dict[str, Any]:
        """The fragments and keys of one level (value axes: ``{key: value}``)."""
        if name in self.levels:
            return self.levels[name]
        values = {_level_name(v): v for table in self.per_level.values() for vs in table.values() for v in vs}
        return {"config": [], "set": {self.key: values[name]}, "stages": {}}


@dataclass
class Grid:
    """A validated grid file (see the module docstring for the format)."""

    name: str
    path: Path
    description: str
    base: list[Path]
    set: dict[str, Any]
    seeds: list[int]
    axes: list[Axis]
    zip_groups: list[list[str]]
    stages: dict[str, dict[str, Any]]
    evaluation: Evaluation | None
    baseline: dict[str, str]
    metrics: list[str]
    workers: int

    @property
    def select_axis(self) -> Axis | None:
        """The axis whose best level is chosen on validation (e.g. the learning rate), if any."""
        return next((axis for axis in self.axes if axis.select), None)

    def combinations(self) -> Iterator[dict[str, str]]:
        """Every combination of levels, ``{axis: level}``, axes in file order; zipped axes move together."""
        units: list[list[str]] = []
        for axis in self.axes:
            group = next((g for g in self.zip_groups if axis.name in g), [axis.name])
            if group not in units:
                units.append(group)
        yield from self._expand(units, {})

    def _expand(self, units: list[list[str]], chosen: dict[str, str]) -> Iterator[dict[str, str]]:
        if not units:
            yield {axis.name: chosen[axis.name] for axis in self.axes}
            return
        by_name = {axis.name: axis for axis in self.axes}
        unit, rest = units[0], units[1:]
        columns = [by_name[name].level_names(chosen) for name in unit]
        for row in zip(*columns, strict=True):
            yield from self._expand(rest, {**chosen, **dict(zip(unit, row, strict=True))})


def load_grid(path: str | Path, check_fragments: bool = True) -> Grid:
    """Read and check a grid file's structure (keys, axes, seeds, fragments); configs are checked by :func:`expand`.

    Args:
        path: the grid YAML.
        check_fragments: resolve every config fragment to an existing file (off for the report, which reads a copy
            of the grid inside its output folder and needs no fragment).

    Raises:
        GridError: naming the offending key.
    """
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid = {str(path)!r}: no such file.")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise GridError(f"{path}: a grid is a mapping of {sorted(GRID_KEYS)}.")
    _check_keys(raw, GRID_KEYS, "grid")
    root = _lab_root(path) if check_fragments else None
    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise GridError(f"seeds = {seeds!r}: seeds must be a non-empty list of integers.")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"seeds = {seeds!r}: seeds must be distinct.")
    axes = [_axis(name, spec, root) for name, spec in _mapping(raw.get("axes", {}), "axes").items()]
    names = [axis.name for axis in axes]
    for axis in axes:
        for other, table in axis.per_level.items():
            earlier = names[:names.index(axis.name)]
            if other not in earlier:
                raise GridError(f"axes.{axis.name}.per_level.{other}: not an axis declared before {axis.name!r}.")
            unknown = set(table) - set(next(a for a in axes if a.name == other).levels)
            if unknown:
                raise GridError(f"axes.{axis.name}.per_level.{other}: unknown levels {sorted(unknown)}.")
    if sum(1 for axis in axes if axis.select) > 1:
        raise GridError("axes: at most one axis may have `select`.")
    zip_groups = raw.get("zip", [])
    if not isinstance(zip_groups, list) or not all(isinstance(g, list) and len(g) >= 2 for g in zip_groups):
        raise GridError(f"zip = {zip_groups!r}: zip is a list of lists of at least two axis names.")
    for group in zip_groups:
        for name in group:
            if name not in names:
                raise GridError(f"zip: unknown axis {name!r}; axes are {names}.")
            if sum(name in g for g in zip_groups) > 1:
                raise GridError(f"zip: axis {name!r} is in more than one group.")
        if any(next(a for a in axes if a.name == n).per_level for n in group):
            raise GridError(f"zip: {group} holds an axis with per_level values; zip axes need fixed levels.")
        if len({len(next(a for a in axes if a.name == n).levels) for n in group}) != 1:
            raise GridError(f"zip: axes {group} have different numbers of levels.")
    stages = _stages(raw.get("stages"), root)
    for axis in axes:
        for level_name, level in axis.levels.items():
            for stage in level["stages"]:
                if stage not in stages:
                    raise GridError(f"axes.{axis.name}.levels.{level_name}.stages: unknown stage {stage!r}; "
                                    f"stages are {list(stages)}.")
    report = _mapping(raw.get("report", {}), "report")
    _check_keys(report, REPORT_KEYS, "report")
    baseline = {str(k): _level_name(v) for k, v in _mapping(report.get("baseline", {}), "report.baseline").items()}
    for axis_name, level in baseline.items():
        axis = next((a for a in axes if a.name == axis_name), None)
        if axis is None:
            raise GridError(f"report.baseline: unknown axis {axis_name!r}; axes are {names}.")
        if axis.select:
            raise GridError(f"report.baseline.{axis_name}: the selected axis cannot be the compared one.")
        if level not in axis.levels:
            raise GridError(f"report.baseline.{axis_name} = {level!r}: not a level of {axis_name} "
                            f"({list(axis.levels)}).")
    metrics = report.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise GridError(f"report.metrics = {metrics!r}: a list of metric names.")
    workers = raw.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        raise GridError(f"workers = {workers!r}: a positive integer.")
    return Grid(name=str(raw.get("name", path.stem)), path=path, description=str(raw.get("description", "")),
                base=[_fragment(p, root, f"base[{i}]") for i, p in enumerate(_list(raw.get("base", []), "base"))],
                set=_settings(raw.get("set", {}), "set"), seeds=seeds, axes=axes, zip_groups=zip_groups,
                stages=stages, evaluation=_evaluation(raw.get("evaluation"), "evaluation"), baseline=baseline,
                metrics=metrics, workers=workers)


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
    by_levels: dict[tuple[str, tuple, int], str] = {}
    for stage_name, stage in grid.stages.items():
        evaluation = stage["evaluation"] if "evaluation" in stage["explicit"] else grid.evaluation
        for levels in grid.combinations():
            level_specs = [axis.level(levels[axis.name]) for axis in grid.axes]
            fragments = [*grid.base, *stage["config"]]
            settings = {**grid.set, **stage["set"]}
            for spec in level_specs:
                fragments += spec["config"]
                settings.update(spec["set"])
            for spec in level_specs:
                stage_spec = spec["stages"].get(stage_name, {})
                fragments += stage_spec.get("config", [])
                settings.update(stage_spec.get("set", {}))
            args = [*(a for f in fragments for a in ("--config", str(f))),
                    *(f"--{key}={_cli_value(value)}" for key, value in settings.items()), *RUNNER_ARGS]
            where = f"stage {stage_name!r}, {', '.join(f'{k}={v}' for k, v in levels.items()) or 'base'}"
            resolved = _resolve(parser, args, where)  # seeds and parent checkpoints are filled in below
            for seed in grid.seeds:
                config = json.loads(json.dumps(resolved))
                config["seed_everything"] = seed
                config["trainer"].pop("logger", None)
                parent = None
                if stage["init_from"] is not None:
                    parent = by_levels[(stage["init_from"], tuple(levels.items()), seed)]
                    config["model"]["init_from"] = f"cell:{parent}"  # the identity: the parent cell, not its path
                cell_id = _digest(config)
                if parent is not None:
                    config["model"]["init_from"] = str(last_checkpoint(out_dir, parent))
                by_levels[(stage_name, tuple(levels.items()), seed)] = cell_id
                cells.setdefault(cell_id, Cell(cell_id=cell_id, stage=stage_name, levels=levels, seed=seed,
                                               config=config, init_from=parent, evaluation=evaluation))
    return list(cells.values())


def cell_dir(out_dir: Path, cell_id: str) -> Path:
    """``<out_dir>/cells/<cell_id>/``: the cell's config, record, logs and Lightning run folder (``run/``)."""
    return out_dir / "cells" / cell_id


def last_checkpoint(out_dir: Path, cell_id: str) -> Path:
    """The ``last.ckpt`` a cell's training writes."""
    return cell_dir(out_dir, cell_id) / "run" / "checkpoints" / "last.ckpt"


def run_config(cell: Cell, out_dir: Path) -> dict[str, Any]:
    """The cell's resolved config with its TensorBoard logger pinned to ``<cell dir>/run``."""
    config = json.loads(json.dumps(cell.config, default=str))
    config["trainer"]["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(out_dir / "cells"), "name": cell.cell_id, "version": "run"},
    }
    return config


def _lab_parser() -> ArgumentParser:
    """The parser of ``tapa-lab fit``'s config (built once per process), raising instead of exiting on errors."""
    from tapa_lab.cli import run_lightning

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


def _axis(name: str, spec: Any, root: Path | None) -> Axis:
    spec = _mapping(spec, f"axes.{name}")
    if "levels" in spec:
        _check_keys(spec, LEVEL_AXIS_KEYS, f"axes.{name}")
        levels = _mapping(spec["levels"], f"axes.{name}.levels")
        if not levels:
            raise GridError(f"axes.{name}.levels: the axis is empty.")
        return Axis(name=name, levels={str(level): _level(value, root, f"axes.{name}.levels.{level}")
                                       for level, value in levels.items()})
    _check_keys(spec, VALUE_AXIS_KEYS, f"axes.{name}")
    if "key" not in spec or "values" not in spec:
        raise GridError(f"axes.{name}: an axis has either `levels`, or `key` and `values`.")
    values = _list(spec["values"], f"axes.{name}.values")
    if not values:
        raise GridError(f"axes.{name}.values: the axis is empty.")
    per_level = {str(k): {_level_name(lv): _list(vs, f"axes.{name}.per_level.{k}.{lv}")
                          for lv, vs in _mapping(table, f"axes.{name}.per_level.{k}").items()}
                 for k, table in _mapping(spec.get("per_level", {}), f"axes.{name}.per_level").items()}
    for k, table in per_level.items():
        for lv, vs in table.items():
            if not vs:
                raise GridError(f"axes.{name}.per_level.{k}.{lv}: the axis is empty.")
    select = spec.get("select")
    if select is not None and not isinstance(select, str):
        raise GridError(f"axes.{name}.select = {select!r}: a metric name such as val/loss.")
    key = str(spec["key"])
    return Axis(name=name, key=key, per_level=per_level, select=select,
                levels={_level_name(v): {"config": [], "set": {key: v}, "stages": {}} for v in values})


def _level(spec: Any, root: Path | None, where: str) -> dict[str, Any]:
    spec = _mapping(spec if spec is not None else {}, where)
    _check_keys(spec, LEVEL_KEYS, where)
    stages = {}
    for stage, override in _mapping(spec.get("stages", {}), f"{where}.stages").items():
        override = _mapping(override, f"{where}.stages.{stage}")
        _check_keys(override, {"config", "set"}, f"{where}.stages.{stage}")
        stages[str(stage)] = {"config": _fragments(override.get("config", []), root, f"{where}.stages.{stage}.config"),
                              "set": _settings(override.get("set", {}), f"{where}.stages.{stage}.set")}
    return {"config": _fragments(spec.get("config", []), root, f"{where}.config"),
            "set": _settings(spec.get("set", {}), f"{where}.set"), "stages": stages}


def _stages(raw: Any, root: Path | None) -> dict[str, dict[str, Any]]:
    raw = _mapping(raw if raw is not None else {DEFAULT_STAGE: {}}, "stages")
    if not raw:
        raise GridError("stages: empty; leave it out for one stage.")
    stages: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        spec = _mapping(spec if spec is not None else {}, f"stages.{name}")
        _check_keys(spec, STAGE_KEYS, f"stages.{name}")
        init_from = spec.get("init_from")
        if init_from is not None and init_from not in stages:
            raise GridError(f"stages.{name}.init_from = {init_from!r}: not a stage declared before it "
                            f"({list(stages)}).")
        stages[str(name)] = {"init_from": init_from, "explicit": set(spec),
                             "config": _fragments(spec.get("config", []), root, f"stages.{name}.config"),
                             "set": _settings(spec.get("set", {}), f"stages.{name}.set"),
                             "evaluation": _evaluation(spec.get("evaluation"), f"stages.{name}.evaluation")}
    return stages


def _evaluation(raw: Any, where: str) -> Evaluation | None:
    if raw is None:
        return None
    raw = _mapping(raw, where)
    _check_keys(raw, EVALUATION_KEYS, where)
    return Evaluation(checkpoint=str(raw.get("checkpoint", "last")), args=_settings(raw.get("args", {}), where))


def _settings(raw: Any, where: str) -> dict[str, Any]:
    settings = _mapping(raw, where)
    for key in settings:
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise GridError(f"{where}: {key!r} is not a dotted config key such as model.optim.lr.")
    return dict(settings)


def _fragments(raw: Any, root: Path | None, where: str) -> list[Path]:
    return [_fragment(p, root, f"{where}[{i}]") for i, p in enumerate(_list(raw, where))]


def _fragment(raw: Any, root: Path | None, where: str) -> Path:
    path = Path(str(raw))
    if root is None:
        return path
    for candidate in (path, root / path):
        if candidate.is_file():
            return candidate.resolve()
    raise GridError(f"{where} = {str(raw)!r}: no such config fragment (relative paths are read from the current "
                    f"folder or from {root}).")


def _lab_root(grid_path: Path) -> Path:
    """The folder holding ``experiments/`` above the grid (where relative fragment paths are also looked up)."""
    for parent in grid_path.resolve().parents:
        if (parent / "experiments").is_dir():
            return parent
    return Path.cwd()


def _mapping(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise GridError(f"{where} = {raw!r}: expected a mapping.")
    return raw


def _list(raw: Any, where: str) -> list:
    if not isinstance(raw, list):
        raise GridError(f"{where} = {raw!r}: expected a list.")
    return raw


def _check_keys(raw: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise GridError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}.")


def _level_name(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _cli_value(value: Any) -> str:
    """A YAML literal jsonargparse reads back as ``value`` (``.inf`` included)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n").removesuffix("\n...")


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
