"""The grid file: its format, its dataclasses and their validation (no torch, no Lightning).

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
    report: {baseline: {pe: rope}, metrics: [val/loss, ppl@1x]}   # baseline: a level or a list of levels
    executor: {partition: gpu, time: 240}         # cluster settings (`--executor slurm`; ablation/executor.py)

These are the file's dataclasses; :func:`tapa_lab.ablation.loader.load_grid` reads and checks a file into them, and
:func:`tapa_lab.ablation.expand.expand` builds every cell's config with the lab's own parser, so an unknown config
key or a bad value is rejected, naming the key, before anything trains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from tapa_lab.errors import ConfigError


class GridError(ConfigError):
    """A grid file is malformed; the message names the offending key."""


class GridWarning(UserWarning):
    """A grid file says something twice (a repeated value, two identical levels, a repeated key): it is merged."""


class Inherit:
    """The type of :data:`INHERIT`: a stage without its own ``evaluation`` uses the grid's."""

    def __repr__(self) -> str:
        return "INHERIT"


INHERIT: Final = Inherit()


@dataclass(frozen=True)
class Evaluation:
    """What ``tapa-lab eval`` is asked after training: which checkpoint, and the extra arguments (dotted keys)."""

    checkpoint: str = "last"
    args: dict[str, Any] = field(default_factory=dict)

    def command_args(self) -> list[str]:
        """The arguments after ``tapa-lab eval --run <run>``."""
        return ["--checkpoint", self.checkpoint, *(f"--{key}={cli_value(value)}" for key, value in self.args.items())]

    def fingerprint(self) -> str:
        """A hash of the request: results made under another request are recomputed."""
        return digest({"checkpoint": self.checkpoint, "args": self.args})


@dataclass(frozen=True)
class Level:
    """One level of an axis: fragments and dotted keys, plus per-stage overrides (each a :class:`Level` without
    stages)."""

    config: list[Path] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Level] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """A stage of the grid: every combination of levels trains once per seed in each stage, stage after stage.

    Attributes:
        name: the stage name.
        init_from: the earlier stage whose cell (same levels, same seed) initialises this one, or ``None``.
        config: fragments added after the grid's ``base``.
        set: dotted keys added after the grid's ``set``.
        evaluation: the stage's evaluation, ``None`` for none, or :data:`INHERIT` for the grid's.
    """

    name: str
    init_from: str | None = None
    config: list[Path] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)
    evaluation: Evaluation | None | Inherit = INHERIT


@dataclass(frozen=True)
class Axis:
    """An axis of the grid.

    Attributes:
        name: the axis name (a column of the report).
        levels: ``{level name: Level}``; a value axis has one level per value, named by the value (``"0.001"``).
        key: the config key of a value axis (``None`` for a level axis).
        per_level: ``{earlier axis: {its level: [values]}}``: values of this axis that replace ``levels`` there.
        select: the metric whose lowest mean over seeds picks this axis' level (a sweep), or ``None``.
    """

    name: str
    levels: dict[str, Level]
    key: str | None = None
    per_level: dict[str, dict[str, list]] = field(default_factory=dict)
    select: str | None = None

    def level_names(self, chosen: dict[str, str]) -> list[str]:
        """The levels of this axis given the levels already chosen for earlier axes (``per_level``)."""
        for other, table in self.per_level.items():
            if chosen.get(other) in table:
                return list(dict.fromkeys(level_name(v) for v in table[chosen[other]]))
        return list(self.levels)

    def level(self, name: str) -> Level:
        """The fragments and keys of one level (value axes: ``{key: value}``)."""
        if name in self.levels or self.key is None:  # only a value axis has per-level values
            return self.levels[name]
        values = {level_name(v): v for table in self.per_level.values() for vs in table.values() for v in vs}
        return Level(set={self.key: values[name]})


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
    stages: dict[str, Stage]
    evaluation: Evaluation | None
    baseline: dict[str, tuple[str, ...]]
    metrics: list[str]
    workers: int
    executor: dict[str, Any] = field(default_factory=dict)

    @property
    def select_axis(self) -> Axis | None:
        """The axis whose best level is chosen on validation (e.g. the learning rate), if any."""
        return next((axis for axis in self.axes if axis.select), None)

    def stage_evaluation(self, stage: Stage) -> Evaluation | None:
        """The evaluation of a stage's cells: its own, or the grid's when it names none."""
        return self.evaluation if isinstance(stage.evaluation, Inherit) else stage.evaluation

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

def level_name(value: Any) -> str:
    """The name of a value axis' level: the value as written (``0.001`` -> ``"0.001"``)."""
    return value if isinstance(value, str) else json.dumps(value)


def cli_value(value: Any) -> str:
    """A YAML literal jsonargparse reads back as ``value`` (``.inf`` included)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n").removesuffix("\n...")


def digest(payload: Any) -> str:
    """12 hex digits of the SHA-256 of ``payload`` as sorted JSON (evaluation fingerprints; cell ids before the
    canonical form, see :func:`cell_digest`)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def canonical(payload: Any) -> Any:
    """``payload`` with every integral float written as an int (``1.0`` -> ``1``), in nested dicts and lists.

    jsonargparse may resolve the same YAML value of an ``int | float`` field (``trainer.limit_val_batches``,
    ``trainer.val_check_interval``, ...) to ``1`` or ``1.0`` depending on which modules were imported before it; a cell
    id must not depend on that.
    """
    if isinstance(payload, dict):
        return {key: canonical(value) for key, value in payload.items()}
    if isinstance(payload, list | tuple):
        return [canonical(value) for value in payload]
    if isinstance(payload, float) and payload.is_integer():
        return int(payload)
    return payload


def cell_digest(config: Any) -> str:
    """A cell's id: :func:`digest` of the :func:`canonical` form of its resolved config."""
    return digest(canonical(config))
