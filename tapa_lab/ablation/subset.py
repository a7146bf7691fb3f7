"""``tapa-lab ablation run --only``: train and evaluate part of a grid, in the grid's own folder.

The folder still holds the whole grid (every cell's config, the grid file, the report over every cell), so a later
run without ``--only`` trains what is left and skips what this one finished: the cell ids do not depend on the
subset. A kept cell of a later stage keeps its parent (the cell whose checkpoint initialises it), whatever ``only``
says of the parent, so a subset never asks for a checkpoint that nothing trains. A grid that picks a level by its
mean over seeds (an axis with ``select``) must see all of that choice: a subset may not restrict that axis or the
seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from tapa_lab.ablation.layout import CellInfo
from tapa_lab.ablation.spec import GridError, level_name

SEED = "seed"

C = TypeVar("C", bound=CellInfo)


def restrict(cells: Sequence[C], only: dict[str, list[str | int | float]], swept: str | None = None) -> list[C]:
    """The cells whose level on every named axis (or whose seed) is one of those listed, plus their parents.

    Args:
        cells: a grid's cells in run order (:func:`~tapa_lab.ablation.expand.expand`).
        only: ``{axis or "seed": [levels]}``, e.g. ``{"pe": ["alibi", "kerple-power"], "seed": [1]}``; a value axis'
            levels are written as its values (``{"lr": [0.001]}``).
        swept: the grid's axis with ``select`` (its level is picked over all seeds), if any.

    Returns:
        The kept cells, in run order.

    Raises:
        GridError: an axis that the grid does not have, or a level that its axis does not have (the message lists
            the allowed names), an empty list, or a restriction of a swept axis or of the seeds of a sweep.
    """
    allowed: dict[str, dict[str, None]] = {SEED: dict.fromkeys(str(cell.seed) for cell in cells)}
    for cell in cells:
        for axis, level in cell.levels.items():
            allowed.setdefault(axis, {})[level] = None  # a dict keeps the run order of the levels
    wanted: dict[str, set[str]] = {}
    for axis, levels in only.items():
        if axis not in allowed:
            raise GridError(f"--only: the grid has no axis {axis!r}; allowed: {', '.join(allowed)}")
        if swept is not None and axis in (swept, SEED):
            raise GridError(f"--only.{axis}: the grid picks its {swept} level by the mean over every seed "
                            f"(select), so a subset cannot restrict {axis}; restrict another axis")
        if not levels:
            raise GridError(f"--only.{axis}: an empty list keeps no cell; allowed: {', '.join(allowed[axis])}")
        names = {str(level) if axis == SEED else level_name(level) for level in levels}
        unknown = sorted(names - set(allowed[axis]))
        if unknown:
            raise GridError(f"--only.{axis}: no level {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(allowed[axis])}")
        wanted[axis] = names

    def matches(cell: CellInfo) -> bool:
        values = {**cell.levels, SEED: str(cell.seed)}
        return all(values.get(axis) in names for axis, names in wanted.items())

    keep = {cell.cell_id for cell in cells if matches(cell)}
    by_id = {cell.cell_id: cell for cell in cells}
    for cell in reversed(cells):  # a parent runs before its children: walk back to pull parents of parents in
        if cell.cell_id in keep and cell.init_from in by_id:
            keep.add(cell.init_from)
    return [cell for cell in cells if cell.cell_id in keep]
