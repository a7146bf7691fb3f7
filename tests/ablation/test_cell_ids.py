"""Cell ids are canonical (the same whatever the process imported first, ``1`` and ``1.0`` alike) and grid folders
written with the earlier ids are migrated, keeping every trained cell."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from grid_cases import minimal_grid

from tapa_lab.ablation.expand import expand
from tapa_lab.ablation.layout import RESULT_FILE, TRAINED_MARKER, cell_dir
from tapa_lab.ablation.loader import load_grid
from tapa_lab.ablation.migrate import migrate_legacy_cells
from tapa_lab.ablation.spec import canonical, cell_digest

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_integral_floats_and_ints_give_one_id_and_other_values_do_not():
    assert cell_digest({"a": 1, "b": [2, {"c": 3}]}) == cell_digest({"a": 1.0, "b": [2.0, {"c": 3.0}]})
    assert cell_digest({"a": 1.5}) != cell_digest({"a": 1})
    assert cell_digest({"a": True}) != cell_digest({"a": 1})  # bools are not numbers here
    assert canonical({"x": [0.5, 4.0, "4.0", None]}) == {"x": [0.5, 4, "4.0", None]}


def test_a_process_importing_lightning_first_expands_the_same_ids_as_the_command(write_grid, tmp_path):
    path = write_grid(minimal_grid())
    script = ("import sys, json, lightning.pytorch; from pathlib import Path\n"
              "from tapa_lab.ablation.expand import expand; from tapa_lab.ablation.loader import load_grid\n"
              "print(json.dumps([c.cell_id for c in expand(load_grid(Path(sys.argv[1])), Path(sys.argv[2]))]))")
    other = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path)], capture_output=True, text=True,
                           check=True)
    import tapa_lab.__main__  # noqa: F401  the command's import order in this process

    assert json.loads(other.stdout.splitlines()[-1]) == [c.cell_id for c in expand(load_grid(path), tmp_path)]


def test_the_legacy_id_is_the_id_the_earlier_runs_of_a_committed_grid_had():
    # Expanded in another process with the command's import order, and in this one (where lightning came first and
    # `limit_val_batches: 8` may resolve to 8 instead of 8.0): the legacy ids are those the earlier runs had, in both.
    grid = str(RESULTS / "extrapolation" / "grid.yaml")
    script = ("import json, tapa_lab.__main__; from pathlib import Path\n"
              "from tapa_lab.ablation.expand import expand; from tapa_lab.ablation.loader import load_grid\n"
              "from tapa_lab.ablation.expand import legacy_form; from tapa_lab.ablation.spec import digest\n"
              f"cells = expand(load_grid(Path({grid!r})), Path('/nonexistent'))\n"
              "assert all(c.legacy_id == digest(legacy_form(c.config)) for c in cells)  # one stage: no parent\n"
              "print(json.dumps([[c.levels['pe'], c.legacy_id, c.cell_id] for c in cells]))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    cells = json.loads(run.stdout.splitlines()[-1])
    with (RESULTS / "extrapolation" / "metrics.csv").open() as stream:
        committed = {row["cell_id"] for row in csv.DictReader(stream)}
    unchanged = [(legacy, new) for pe, legacy, new in cells if pe != "tapa"]  # TAPA gained a field since the run
    assert len(unchanged) == 14 * 4 * 3
    assert {legacy for legacy, _ in unchanged} <= committed
    assert not {new for _, new in unchanged} & committed  # the canonical ids are new (these configs hold 8.0)
    here = [c for c in expand(load_grid(RESULTS / "extrapolation" / "grid.yaml"), Path("/nonexistent"))
            if c.levels["pe"] != "tapa"]
    assert {c.cell_id for c in here} == {new for _, new in unchanged}  # the same in this process
    assert {c.legacy_id for c in here} == {legacy for legacy, _ in unchanged}


def test_an_old_grid_folder_is_renamed_to_the_canonical_ids_keeping_its_results(write_grid, tmp_path):
    cells = expand(load_grid(write_grid(minimal_grid())), tmp_path)
    assert all(c.legacy_id != c.cell_id for c in cells)
    old = cells[0]
    folder = cell_dir(tmp_path, old.legacy_id)
    folder.mkdir(parents=True)
    (folder / TRAINED_MARKER).write_text("")
    (folder / RESULT_FILE).write_text(json.dumps({"cell_id": old.legacy_id, "status": "finished"}, indent=2))
    assert migrate_legacy_cells(cells, tmp_path) == [(old.legacy_id, old.cell_id)]
    moved = cell_dir(tmp_path, old.cell_id)
    assert not folder.exists() and (moved / TRAINED_MARKER).is_file()
    assert json.loads((moved / RESULT_FILE).read_text()) == {"cell_id": old.cell_id, "status": "finished"}
    assert migrate_legacy_cells(cells, tmp_path) == []  # idempotent: a second run renames nothing
