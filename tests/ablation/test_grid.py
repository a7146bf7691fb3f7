"""Grid files: every shipped grid expands through the lab's parser; bad grids are refused, naming the key, before any
training; cells are identified by their resolved config; zip, per-level values and stages expand as documented."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from grid_cases import EXPERIMENTS, FIXTURE_SET, minimal_grid
from rich.console import Console

from tapa_lab.ablation.command import load_grid_showing_warnings
from tapa_lab.ablation.expand import expand
from tapa_lab.ablation.loader import load_grid
from tapa_lab.ablation.spec import GridError, GridWarning

SHIPPED = sorted((EXPERIMENTS / "ablations").glob("*.yaml"))


def test_the_shipped_grids_are_the_documented_ones():
    assert {p.stem for p in SHIPPED} >= {"extrapolation", "extrapolation-gpu", "extension", "tapa-alpha-theta",
                                         "tapa-phase", "smoke", "lr-sweep-gpu"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_grid_expands_and_validates(path, tmp_path):
    grid = load_grid(path)
    cells = expand(grid, tmp_path)
    combinations = len(list(grid.combinations()))
    assert len(cells) <= combinations * len(grid.seeds) * len(grid.stages)
    assert len({cell.cell_id for cell in cells}) == len(cells)
    assert {cell.seed for cell in cells} == set(grid.seeds)
    for cell in cells:
        assert cell.config["seed_everything"] == cell.seed
        assert "logger" not in cell.config["trainer"]


def test_same_config_same_cell_id_and_seed_changes_it(write_grid, tmp_path):
    first = expand(load_grid(write_grid(minimal_grid(), "a.yaml")), tmp_path)
    again = expand(load_grid(write_grid(minimal_grid(), "b.yaml")), tmp_path / "elsewhere")
    assert [c.cell_id for c in first] == [c.cell_id for c in again]  # the output folder is not part of the id
    assert len({c.cell_id for c in first}) == 4


def test_later_fragments_and_keys_win(write_grid, tmp_path):
    grid = minimal_grid(set={**FIXTURE_SET, "model.optim.lr": 0.02})
    grid["axes"]["pe"]["levels"]["rope"]["set"] = {"model.optim.lr": 0.05}
    cells = expand(load_grid(write_grid(grid)), tmp_path)
    lr = {(c.levels["pe"], c.seed): c.config["model"]["optim"]["lr"] for c in cells}
    assert lr[("rope", 1)] == 0.05 and lr[("nope", 1)] == 0.02
    assert cells[0].config["model"]["architecture"]["d_model"] == 32  # grid keys beat the tiny preset
    assert cells[0].config["model"]["posenc"]["class_path"] == "tapa_lab.posenc.RoPE"


def test_zip_moves_axes_together_and_product_crosses_the_rest(write_grid, tmp_path):
    axes = {"alpha": {"key": "model.posenc.init_args.alpha", "values": [0.1, 0.5]},
            "theta": {"key": "model.posenc.init_args.theta", "values": [0.25, 0.75]},
            "lr": {"key": "model.optim.lr", "values": [0.001, 0.003, 0.01]}}
    grid = minimal_grid(base=[str(EXPERIMENTS / "model" / "tiny.yaml"), str(EXPERIMENTS / "posenc" / "tapa.yaml")],
                        axes=axes, zip=[["alpha", "theta"]], seeds=[0])
    cells = expand(load_grid(write_grid(grid)), tmp_path)
    pairs = {(c.config["model"]["posenc"]["init_args"]["alpha"], c.config["model"]["posenc"]["init_args"]["theta"])
             for c in cells}
    assert pairs == {(0.1, 0.25), (0.5, 0.75)}
    assert len(cells) == 2 * 3


def test_per_level_values_give_each_pe_its_own_sweep(write_grid, tmp_path):
    axes = minimal_grid()["axes"]
    axes["lr"] = {"key": "model.optim.lr", "values": [0.001, 0.003], "per_level": {"pe": {"nope": [0.01]}},
                  "select": "val/loss"}
    grid = load_grid(write_grid(minimal_grid(axes=axes, seeds=[0])))
    cells = expand(grid, tmp_path)
    assert sorted((c.levels["pe"], c.config["model"]["optim"]["lr"]) for c in cells) == [
        ("nope", 0.01), ("rope", 0.001), ("rope", 0.003)]
    assert grid.select_axis.name == "lr"


def test_stages_chain_checkpoints_and_share_identical_parents(tmp_path):
    grid = load_grid(EXPERIMENTS / "ablations" / "extension.yaml")
    cells = expand(grid, tmp_path)
    pretrain = [c for c in cells if c.stage == "pretrain"]
    extend = [c for c in cells if c.stage == "extend"]
    assert len(pretrain) == 2 * 3  # rope, rope-pi and rope-yarn pretrain identically: one cell per seed
    assert len(extend) == 4 * 3
    parents = {c.cell_id: c for c in pretrain}
    for cell in extend:
        parent = parents[cell.init_from]
        assert parent.seed == cell.seed
        assert cell.config["model"]["init_from"] == str(tmp_path / "cells" / parent.cell_id / "run" / "checkpoints"
                                                        / "last.ckpt")
        assert cell.config["data"]["seq_len"] == 512 and parent.config["data"]["seq_len"] == 128
    yarn = next(c for c in extend if c.levels["pe"] == "rope-yarn")
    assert yarn.config["model"]["posenc"]["class_path"] == "tapa_lab.posenc.YaRN"
    assert all(c.evaluation is None for c in pretrain) and all(c.evaluation is not None for c in extend)


@pytest.mark.parametrize("change,key", [
    ({"axez": {}}, "axez"),
    ({"axes": {"pe": {"levels": {"rope": {"confg": []}}}}}, "confg"),
    ({"axes": {"pe": {"levels": {}}}}, "axes.pe.levels: the axis is empty"),
    ({"axes": {"lr": {"key": "model.optim.lr", "values": []}}}, "axes.lr.values: the axis is empty"),
    ({"axes": {"lr": {"key": "model.optim.lr"}}}, "axes.lr"),
    ({"seeds": [1, "2"]}, "seeds"),
    ({"seeds": [1.5]}, "seeds"),
    ({"seeds": 3}, "seeds"),
    ({"seeds": [True]}, "seeds"),
    ({"seeds": []}, "seeds"),
    ({"base": ["experiments/model/missing.yaml"]}, "base[0]"),
    ({"zip": [["pe", "nothing"]]}, "nothing"),
    ({"stages": {"extend": {"init_from": "pretrain"}}}, "stages.extend.init_from"),
    ({"report": {"baseline": {"pe": "alibi"}}}, "report.baseline.pe"),
    ({"report": {"baseline": {"pe": ["rope", "alibi"]}}}, "report.baseline.pe = 'alibi'"),
    ({"report": {"baseline": {"pe": []}}}, "report.baseline.pe: a level or a non-empty list"),
    ({"report": {"baseline": {"posenc": "rope"}}}, "posenc"),
    ({"evaluation": {"checkpoint": "last", "argz": {}}}, "argz"),
])
def test_malformed_grid_is_refused_naming_the_key(change, key, write_grid):
    with pytest.raises(GridError) as error:
        load_grid(write_grid(minimal_grid(**change)))
    assert key in str(error.value)


@pytest.mark.parametrize("where,key", [
    ("set", "model.optim.lrr"),
    ("set", "trainer.max_stepz"),
    ("level", "model.posenc.init_args.alphax"),
    ("axis", "data.seq_lenn"),
])
def test_unknown_config_key_is_refused_at_expansion_naming_it(where, key, write_grid, tmp_path):
    grid = minimal_grid()
    if where == "set":
        grid["set"][key] = 1
    elif where == "level":
        grid["axes"]["pe"]["levels"]["rope"]["set"] = {key: 0.5}
    else:
        grid["axes"]["len"] = {"key": key, "values": [16, 32]}
    with pytest.raises(GridError) as error:
        expand(load_grid(write_grid(grid)), tmp_path)
    assert key.rsplit(".", 1)[-1] in str(error.value)
    assert not (tmp_path / "cells").exists()  # nothing was written, let alone trained


def test_bad_config_value_is_refused_at_expansion_naming_the_field(write_grid, tmp_path):
    grid = minimal_grid(base=[str(EXPERIMENTS / "model" / "tiny.yaml"), str(EXPERIMENTS / "posenc" / "tapa.yaml")],
                        axes={"theta": {"key": "model.posenc.init_args.theta", "values": [0.5, 1.5]}})
    with pytest.raises(GridError) as error:
        expand(load_grid(write_grid(grid)), tmp_path)
    assert "theta" in str(error.value) and "1.5" in str(error.value)


def test_a_parameter_group_matching_nothing_in_a_cell_is_refused_at_expansion(write_grid, tmp_path):
    grid = minimal_grid()
    grid["axes"]["pe"]["levels"]["rope"]["set"] = {"model.optim.groups": [{"match": "*.attn.wq.phase"}]}
    with pytest.raises(GridError) as error:
        expand(load_grid(write_grid(grid)), tmp_path)
    message = str(error.value)
    assert "pe=rope" in message and "model.optim.groups[0].match = '*.attn.wq.phase'" in message
    assert "attn.wq.weight" in message  # the names it could have matched


def test_relative_fragments_are_read_from_the_lab_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the lab root: fragments resolve through the grid's own location
    grid = load_grid(EXPERIMENTS / "ablations" / "smoke.yaml")
    assert all(Path(p).is_file() for p in grid.base)


def test_repeated_values_are_merged_with_a_warning_naming_them(write_grid, tmp_path):
    axes = {"lr": {"key": "model.optim.lr", "values": [0.001, 0.003, 0.001]}}
    with pytest.warns(GridWarning, match=r"axes\.lr\.values: 0\.001 repeated"):
        grid = load_grid(write_grid(minimal_grid(axes=axes, seeds=[0])))
    assert list(grid.axes[0].levels) == ["0.001", "0.003"]


def test_identical_levels_are_named_in_a_warning(write_grid):
    axes = minimal_grid()["axes"]
    axes["pe"]["levels"]["rope-again"] = dict(axes["pe"]["levels"]["rope"])
    with pytest.warns(GridWarning, match=r"axes\.pe\.levels: 'rope' and 'rope-again' are identical"):
        load_grid(write_grid(minimal_grid(axes=axes)))


def test_a_key_repeated_in_the_yaml_is_named_in_a_warning(write_grid):
    path = write_grid(minimal_grid())
    text = path.read_text().replace("  pe:\n    levels:\n", "  pe:\n    levels:\n      nope: {}\n", 1)
    path.write_text(text)
    with pytest.warns(GridWarning, match="key 'nope' is repeated"):
        load_grid(path)


def test_a_grid_without_repeats_warns_nothing_and_the_command_prints_warnings_as_one_line(write_grid):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridWarning)
        load_grid(write_grid(minimal_grid(), "clean.yaml"))
    console = Console(file=io.StringIO(), width=200)
    axes = {"lr": {"key": "model.optim.lr", "values": [0.001, 0.001]}}
    load_grid_showing_warnings(write_grid(minimal_grid(axes=axes)), console)
    assert console.file.getvalue() == "warning: axes.lr.values: 0.001 repeated; each value is one level.\n"
