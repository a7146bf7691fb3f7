"""Reading a grid file: the YAML into :mod:`tapa_lab.ablation.spec`'s dataclasses, every key checked.

A malformed file raises :class:`~tapa_lab.ablation.spec.GridError` naming the key (``axes.lr.values``,
``stages.extend.init_from``). What a file says twice is merged, with a :class:`~tapa_lab.ablation.spec.GridWarning`
naming it: a value repeated in an axis, two levels of one axis with identical contents (their cells would be one run),
a key repeated in one mapping (YAML keeps the last).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from tapa_lab.ablation.spec import (
    INHERIT,
    Axis,
    Evaluation,
    Grid,
    GridError,
    GridWarning,
    Level,
    Stage,
    level_name,
)

GRID_KEYS = {"name", "description", "base", "set", "seeds", "axes", "zip", "stages", "evaluation", "report", "workers",
             "executor"}
LEVEL_AXIS_KEYS = {"levels"}
VALUE_AXIS_KEYS = {"key", "values", "per_level", "select"}
LEVEL_KEYS = {"config", "set", "stages"}
STAGE_KEYS = {"init_from", "config", "set", "evaluation"}
EVALUATION_KEYS = {"checkpoint", "args"}
REPORT_KEYS = {"baseline", "metrics"}
DEFAULT_STAGE = "train"


def load_grid(path: str | Path, check_fragments: bool = True) -> Grid:
    """Read and check a grid file's structure (keys, axes, seeds, fragments); configs are checked by
    :func:`~tapa_lab.ablation.expand.expand`.

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
    try:
        raw = yaml.load(path.read_text(), Loader=_WarningLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        raise GridError(f"grid = {str(path)!r}: not valid YAML ({' '.join(str(error).split())}).") from None
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
    zip_groups = _zip_groups(raw.get("zip", []), axes)
    stages = _stages(raw.get("stages"), root)
    for axis in axes:
        for name, level in axis.levels.items():
            for stage in level.stages:
                if stage not in stages:
                    raise GridError(f"axes.{axis.name}.levels.{name}.stages: unknown stage {stage!r}; "
                                    f"stages are {list(stages)}.")
    report = _mapping(raw.get("report", {}), "report")
    _check_keys(report, REPORT_KEYS, "report")
    baseline = {str(k): tuple(level_name(x) for x in (v if isinstance(v, list) else [v]))
                for k, v in _mapping(report.get("baseline", {}), "report.baseline").items()}
    for axis_name, levels in baseline.items():
        compared = next((a for a in axes if a.name == axis_name), None)
        if compared is None:
            raise GridError(f"report.baseline: unknown axis {axis_name!r}; axes are {names}.")
        if compared.select:
            raise GridError(f"report.baseline.{axis_name}: the selected axis cannot be the compared one.")
        if not levels:
            raise GridError(f"report.baseline.{axis_name}: a level or a non-empty list of levels of {axis_name} "
                            f"({list(compared.levels)}).")
        for baseline_level in levels:
            if baseline_level not in compared.levels:
                raise GridError(f"report.baseline.{axis_name} = {baseline_level!r}: not a level of {axis_name} "
                                f"({list(compared.levels)}).")
    metrics = report.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise GridError(f"report.metrics = {metrics!r}: a list of metric names.")
    workers = raw.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise GridError(f"workers = {workers!r}: a positive integer.")
    return Grid(name=str(raw.get("name", path.stem)), path=path, description=str(raw.get("description", "")),
                base=[_fragment(p, root, f"base[{i}]") for i, p in enumerate(_list(raw.get("base", []), "base"))],
                set=_settings(raw.get("set", {}), "set"), seeds=seeds, axes=axes, zip_groups=zip_groups,
                stages=stages, evaluation=_evaluation(raw.get("evaluation"), "evaluation"), baseline=baseline,
                metrics=metrics, workers=workers, executor=dict(_mapping(raw.get("executor", {}), "executor")))

def _axis(name: str, spec: Any, root: Path | None) -> Axis:
    spec = _mapping(spec, f"axes.{name}")
    if "levels" in spec:
        _check_keys(spec, LEVEL_AXIS_KEYS, f"axes.{name}")
        raw_levels = _mapping(spec["levels"], f"axes.{name}.levels")
        if not raw_levels:
            raise GridError(f"axes.{name}.levels: the axis is empty.")
        levels = {str(level): _level(value, root, f"axes.{name}.levels.{level}") for level, value in raw_levels.items()}
        seen: dict[str, str] = {}
        for level, content in levels.items():
            key = repr(content)
            if key in seen:
                _warn(f"axes.{name}.levels: {seen[key]!r} and {level!r} are identical; their cells train once, "
                      f"labelled {seen[key]!r}.")
            seen.setdefault(key, level)
        return Axis(name=name, levels=levels)
    _check_keys(spec, VALUE_AXIS_KEYS, f"axes.{name}")
    if "key" not in spec or "values" not in spec:
        raise GridError(f"axes.{name}: an axis has either `levels`, or `key` and `values`.")
    values = _distinct(_list(spec["values"], f"axes.{name}.values"), f"axes.{name}.values")
    if not values:
        raise GridError(f"axes.{name}.values: the axis is empty.")
    per_level = {str(k): {level_name(lv): _distinct(_list(vs, f"axes.{name}.per_level.{k}.{lv}"),
                                                    f"axes.{name}.per_level.{k}.{lv}")
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
                levels={level_name(v): Level(set={key: v}) for v in values})


def _distinct(values: list, where: str) -> list:
    """``values`` without repeats (by level name), warning about each repeated one."""
    names = [level_name(v) for v in values]
    repeated = [name for i, name in enumerate(names) if name in names[:i]]
    if repeated:
        _warn(f"{where}: {', '.join(dict.fromkeys(repeated))} repeated; each value is one level.")
    return list({name: v for name, v in zip(names, values, strict=True)}.values())


def _level(spec: Any, root: Path | None, where: str) -> Level:
    spec = _mapping(spec if spec is not None else {}, where)
    _check_keys(spec, LEVEL_KEYS, where)
    stages = {}
    for stage, override in _mapping(spec.get("stages", {}), f"{where}.stages").items():
        override = _mapping(override, f"{where}.stages.{stage}")
        _check_keys(override, {"config", "set"}, f"{where}.stages.{stage}")
        at = f"{where}.stages.{stage}"
        stages[str(stage)] = Level(config=_fragments(override.get("config", []), root, f"{at}.config"),
                                   set=_settings(override.get("set", {}), f"{at}.set"))
    return Level(config=_fragments(spec.get("config", []), root, f"{where}.config"),
                 set=_settings(spec.get("set", {}), f"{where}.set"), stages=stages)


def _stages(raw: Any, root: Path | None) -> dict[str, Stage]:
    raw = _mapping(raw if raw is not None else {DEFAULT_STAGE: {}}, "stages")
    if not raw:
        raise GridError("stages: empty; leave it out for one stage.")
    stages: dict[str, Stage] = {}
    for name, spec in raw.items():
        spec = _mapping(spec if spec is not None else {}, f"stages.{name}")
        _check_keys(spec, STAGE_KEYS, f"stages.{name}")
        init_from = spec.get("init_from")
        if init_from is not None and init_from not in stages:
            raise GridError(f"stages.{name}.init_from = {init_from!r}: not a stage declared before it "
                            f"({list(stages)}).")
        evaluation = _evaluation(spec["evaluation"], f"stages.{name}.evaluation") if "evaluation" in spec else INHERIT
        stages[str(name)] = Stage(name=str(name), init_from=init_from, evaluation=evaluation,
                                  config=_fragments(spec.get("config", []), root, f"stages.{name}.config"),
                                  set=_settings(spec.get("set", {}), f"stages.{name}.set"))
    return stages


def _zip_groups(raw: Any, axes: list[Axis]) -> list[list[str]]:
    if not isinstance(raw, list) or not all(isinstance(g, list) and len(g) >= 2 for g in raw):
        raise GridError(f"zip = {raw!r}: zip is a list of lists of at least two axis names.")
    by_name = {axis.name: axis for axis in axes}
    for group in raw:
        for name in group:
            if name not in by_name:
                raise GridError(f"zip: unknown axis {name!r}; axes are {list(by_name)}.")
            if sum(name in g for g in raw) > 1:
                raise GridError(f"zip: axis {name!r} is in more than one group.")
        if any(by_name[n].per_level for n in group):
            raise GridError(f"zip: {group} holds an axis with per_level values; zip axes need fixed levels.")
        if len({len(by_name[n].levels) for n in group}) != 1:
            raise GridError(f"zip: axes {group} have different numbers of levels.")
    return raw


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


def _warn(message: str) -> None:
    warnings.warn(message, GridWarning, stacklevel=3)


class _WarningLoader(yaml.SafeLoader):
    """PyYAML's safe loader, warning when a mapping repeats a key (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [self.construct_object(key, deep=True) for key, _ in node.value]
        repeated = [key for i, key in enumerate(keys) if key in keys[:i]]
        if repeated:
            _warn(f"line {node.start_mark.line + 1}: key {repeated[0]!r} is repeated in one mapping; the last one "
                  "counts.")
        return super().construct_mapping(node, deep=deep)
