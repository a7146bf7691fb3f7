"""Grid folders written before cell ids were canonical: their cell folders renamed to the canonical ids.

Until December 2026 a cell id was the plain digest of its resolved config, which could differ between processes that
imported their modules in another order (``1`` or ``1.0`` for the same ``int | float`` value). Ids are now the digest
of the canonical form (:func:`tapa_lab.ablation.spec.cell_digest`). A rerun of ``tapa-lab ablation run`` over an
old folder renames each ``cells/<legacy id>/`` to ``cells/<cell id>/`` before anything else happens, so every
trained or evaluated cell is kept: nothing is retrained. The Lightning run inside keeps its checkpoints; its
``config.yaml`` still names the old folder (a resume writes ``config.resume-<n>.yaml`` beside it with the new one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from tapa_lab.ablation.layout import RESULT_FILE, CellInfo, cell_dir, write_atomic


def migrate_legacy_cells(cells: Sequence[CellInfo], out_dir: Path) -> list[tuple[str, str]]:
    """Rename the folders of ``cells`` still under their legacy id (see the module docstring).

    Args:
        cells: the grid's cells (:class:`~tapa_lab.ablation.expand.Cell`, whose ``legacy_id`` names the old folder).
        out_dir: the grid folder.

    Returns:
        The ``(legacy id, cell id)`` pairs renamed (empty for a folder written with canonical ids, or a new one).
    """
    renamed = []
    for cell in cells:
        legacy = getattr(cell, "legacy_id", None)
        if legacy is None or legacy == cell.cell_id:
            continue
        old, new = cell_dir(out_dir, legacy), cell_dir(out_dir, cell.cell_id)
        if not old.is_dir() or new.exists():
            continue
        os.rename(old, new)  # atomic on one file system: the folder is under one name or the other
        result = new / RESULT_FILE
        if result.is_file():
            record = json.loads(result.read_text())
            record["cell_id"] = cell.cell_id
            write_atomic(result, json.dumps(record, indent=2))
        renamed.append((legacy, cell.cell_id))
    return renamed
