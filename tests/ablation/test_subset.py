"""``tapa-lab ablation run --only``: the chosen cells (with their parents) are trained, the folder keeps the whole
grid, a later full run trains only the rest, and a subset naming an axis, a level or a sweep it cannot is refused
with the allowed names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grid_cases import EXPERIMENTS, minimal_grid

from tapa_lab.ablation import command
from tapa_lab.ablation.command import run_grid
from tapa_lab.ablation.expand import expand
from tapa_lab.ablation.layout import CellInfo
from tapa_lab.ablation.loader import load_grid
from tapa_lab.ablation.results import load_rows
from tapa_lab.ablation.spec import GridError
from tapa_lab.ablation.subset import restrict


def info(cell_id: str, pe: str, seed: int, parent: str | None = None, stage: str = "main") -> CellInfo:
    return CellInfo(cell_id, stage, {"pe": pe, "lr": "0.001"}, seed, parent)


CELLS = [info("a1", "rope", 1), info("a2", "rope", 2), info("b1", "alibi", 1), info("b2", "alibi", 2)]


def ids(cells) -> list[str]:
    return [cell.cell_id for cell in cells]


def test_levels_of_several_axes_and_seeds_combine_by_and_keeping_run_order():
    assert ids(restrict(CELLS, {"pe": ["alibi", "rope"]})) == ["a1", "a2", "b1", "b2"]
    assert ids(restrict(CELLS, {"pe": ["alibi"]})) == ["b1", "b2"]
    assert ids(restrict(CELLS, {"pe": ["alibi"], "seed": [1]})) == ["b1"]
    assert ids(restrict(CELLS, {"seed": [2], "lr": [0.001]})) == ["a2", "b2"]  # a value axis' level as its value


def test_a_later_stage_cell_keeps_its_parent_and_the_parent_of_that():
    cells = [info("p", "rope", 1, stage="pretrain"), info("m", "rope-pi", 1, "p", "extend"),
             info("x", "rope-yarn", 1, "m", "extra"), info("o", "alibi", 1)]
    assert ids(restrict(cells, {"pe": ["rope-yarn"]})) == ["p", "m", "x"]


def test_the_shipped_extension_grid_subset_trains_its_extend_cells_with_their_pretraining(tmp_path):
    cells = expand(load_grid(EXPERIMENTS / "ablations" / "extension.yaml"), tmp_path)
    chosen = restrict(cells, {"pe": ["rope-yarn"], "seed": [1]})
    assert [(c.stage, c.levels["pe"], c.seed) for c in chosen] == [("pretrain", "rope", 1), ("extend", "rope-yarn", 1)]
    assert chosen[1].init_from == chosen[0].cell_id


@pytest.mark.parametrize("only,names", [
    ({"posenc": ["rope"]}, ["'posenc'", "seed, pe, lr"]),
    ({"pe": ["alibi", "kerple"]}, ["--only.pe", "'kerple'", "rope, alibi"]),
    ({"seed": [3]}, ["--only.seed", "'3'", "1, 2"]),
    ({"pe": []}, ["--only.pe", "empty", "rope, alibi"]),
])
def test_an_axis_or_level_the_grid_lacks_is_refused_listing_the_allowed_ones(only, names):
    with pytest.raises(GridError) as raised:
        restrict(CELLS, only)
    assert all(name in str(raised.value) for name in names), str(raised.value)


@pytest.mark.parametrize("axis", ["lr", "seed"])
def test_a_sweep_cannot_be_cut_by_its_own_axis_or_by_seeds(axis):
    with pytest.raises(GridError, match=f"--only.{axis}: the grid picks its lr level"):
        restrict(CELLS, {axis: [1]}, swept="lr")
    assert ids(restrict(CELLS, {"pe": ["rope"]}, swept="lr")) == ["a1", "a2"]


def test_run_grid_trains_only_the_chosen_cells_and_records_the_subset(write_grid, tmp_path, monkeypatch):
    trained: list[list[str]] = []

    def fake_run_cells(grid, cells, out_dir, *args):
        trained.append([cell.label() + f" seed {cell.seed}" for cell in cells])
        return []

    monkeypatch.setattr(command, "run_cells", fake_run_cells)
    monkeypatch.setattr(command, "write_report", lambda folder: folder / "report.md")
    out = tmp_path / "out"
    run_grid(str(write_grid(minimal_grid())), out_dir=str(out), only={"pe": ["nope"], "seed": [2]})
    assert trained == [["pe=nope seed 2"]]
    assert len(json.loads((out / "cells.json").read_text())) == 4  # the folder holds the whole grid
    history = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
    assert history["command"].endswith("""--only '{"pe": ["nope"], "seed": [2]}'""")


@pytest.mark.slow
def test_a_full_run_after_a_subset_trains_the_rest_and_not_the_subset_again(write_grid, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/ (the packed fixture) lands here
    path, out = write_grid(minimal_grid(seeds=[1])), tmp_path / "out"
    run_grid(str(path), out_dir=str(out), evaluate=False, only={"pe": ["nope"]})
    status = {row.levels["pe"]: row.result.status for row in load_rows(out)}
    assert status == {"nope": "finished", "rope": "pending"}
    nope = next(row for row in load_rows(out) if row.levels["pe"] == "nope")
    checkpoint = Path(out / "cells" / nope.cell_id / "run" / "checkpoints" / "last.ckpt")
    written = checkpoint.stat().st_mtime_ns
    run_grid(str(path), out_dir=str(out), evaluate=False)
    assert {row.result.status for row in load_rows(out)} == {"finished"}
    assert checkpoint.stat().st_mtime_ns == written
