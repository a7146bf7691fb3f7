"""The report from a grid folder of made-up results (no training): the sweep picks each PE's best learning rate on
validation, only the chosen cells reach the main table and the tests, pairs are made across learning rates, and the
plots (perplexity by length, passkey heatmaps) and hparams are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tapa_lab.ablation.plots import line_styles
from tapa_lab.ablation.report import write_report
from tapa_lab.ablation.results import CellResult
from tapa_lab.ablation.stats import paired_test, summarize

GRID = {
    "name": "fake",
    "description": "made-up results",
    "base": ["experiments/model/tiny.yaml"],
    "seeds": [1, 2, 3],
    "axes": {"pe": {"levels": {"rope": {}, "tapa": {}}},
             "lr": {"key": "model.optim.lr", "values": [0.001, 0.003], "select": "val/loss"}},
    "evaluation": {"checkpoint": "last", "args": {}},
    "report": {"baseline": {"pe": "rope"}, "metrics": ["val/loss", "ppl@1x", "ppl@4x"]},
}
# val/loss by (pe, lr): rope is best at 0.003, tapa at 0.001
VAL_LOSS = {("rope", "0.001"): 2.5, ("rope", "0.003"): 2.3, ("tapa", "0.001"): 2.2, ("tapa", "0.003"): 2.6}
PPL_4X = {"rope": [40.0, 44.0, 47.0], "tapa": [14.0, 15.0, 15.5]}


def fake_eval(ppl_1x: float, ppl_4x: float) -> dict:
    return {"checkpoint": "last.ckpt", "train_seq_len": 128, "protocol": {},
            "perplexity": [{"length": 128, "multiple": 1.0, "perplexity": ppl_1x, "nll": float(np.log(ppl_1x)),
                            "tokens": 100, "mode": "sliding", "stride": 64},
                           {"length": 512, "multiple": 4.0, "perplexity": ppl_4x, "nll": float(np.log(ppl_4x)),
                            "tokens": 100, "mode": "sliding", "stride": 256}],
            "position_loss": [],
            "passkey": {"lengths": [128, 512], "depths": [0.0, 0.5, 1.0], "accuracy": [[1, 1, 0.5], [0.5, 0, 0]],
                        "mean_accuracy": 0.5, "trials": 2},
            "bias": None}



@pytest.fixture
def grid_folder(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.yaml").write_text(yaml.safe_dump(GRID))
    ids = []
    for (pe, lr), loss in VAL_LOSS.items():
        selected = (pe, lr) in (("rope", "0.003"), ("tapa", "0.001"))
        for i, seed in enumerate(GRID["seeds"]):
            cell_id = f"{pe}-{lr}-{seed}"
            ids.append(cell_id)
            folder = out / "cells" / cell_id
            folder.mkdir(parents=True)
            (folder / "cell.json").write_text(json.dumps({"cell_id": cell_id, "stage": "train", "seed": seed,
                                                          "levels": {"pe": pe, "lr": lr}, "init_from": None}))
            metrics = {"val/loss": loss + 0.01 * i}
            if selected:
                results = fake_eval(10.0 + i, PPL_4X[pe][i])
                (folder / "run" / "eval").mkdir(parents=True)
                (folder / "run" / "eval" / "results.json").write_text(json.dumps(results))
                metrics.update({"ppl@1x": 10.0 + i, "nll@1x": float(np.log(10.0 + i)), "ppl@4x": PPL_4X[pe][i],
                                "nll@4x": float(np.log(PPL_4X[pe][i]))})
            CellResult(cell_id, "finished", None, metrics, {"train": 60.0}, evaluated=selected).write(folder)
    (out / "cells.json").write_text(json.dumps(ids))
    return out


def table_row(report: str, label: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {label} | "))


def test_main_table_keeps_each_pe_at_its_best_learning_rate(grid_folder):
    report = write_report(grid_folder).read_text()
    main = report.split("## Appendix")[0]
    assert "| pe=rope, lr=0.003 | 3 |" in main and "| pe=tapa, lr=0.001 | 3 |" in main
    assert "pe=rope, lr=0.001" not in main and "pe=tapa, lr=0.003" not in main
    expected = summarize(PPL_4X["tapa"])
    assert f"{expected.mean:.4g} ± {expected.std:.2g} [{expected.ci_low:.4g}, {expected.ci_high:.4g}]" in table_row(
        main, "pe=tapa, lr=0.001")
    sweep = report.split("## Appendix: `lr` sweep")[1]
    assert table_row(sweep, "pe=rope, lr=0.003").endswith("| yes |")
    assert table_row(sweep, "pe=rope, lr=0.001").endswith("|  |")


def test_paired_tests_pair_each_pe_at_its_own_learning_rate_by_seed(grid_folder):
    report = write_report(grid_folder).read_text()
    expected = paired_test(np.log(PPL_4X["tapa"]), np.log(PPL_4X["rope"]))
    row = table_row(report.split("Paired tests against")[1], "pe=tapa, lr=0.001 | nll@4x")
    assert f"| 3 | {expected.mean_diff:+.4g} | {expected.t_pvalue:.3g} | n < 6 |" in row


def test_one_seed_gives_the_difference_and_says_there_is_no_test(grid_folder):
    grid = yaml.safe_load((grid_folder / "grid.yaml").read_text())
    grid["seeds"] = [1]
    (grid_folder / "grid.yaml").write_text(yaml.safe_dump(grid))
    ids = [cell_id for cell_id in json.loads((grid_folder / "cells.json").read_text()) if cell_id.endswith("-1")]
    (grid_folder / "cells.json").write_text(json.dumps(ids))
    report = write_report(grid_folder).read_text()
    row = table_row(report.split("Paired tests against")[1], "pe=tapa, lr=0.001 | nll@4x")
    assert f"| 1 | {np.log(PPL_4X['tapa'][0] / PPL_4X['rope'][0]):+.4g} | n < 2 | n < 6 | n < 2 |" in row
    assert "nan" not in report.split("Paired tests against")[1].split("![")[0]


def test_plots_and_hparams_are_written(grid_folder):
    write_report(grid_folder)
    folder = grid_folder / "report"
    for name in ("ppl_vs_length_train.png", "passkey_train.png"):
        assert (folder / name).stat().st_size > 10_000
        assert f"]({name})" in (folder / "report.md").read_text()
    assert len(list((folder / "tensorboard").glob("*/events.out.tfevents.*"))) == 12


def test_a_list_of_baselines_gives_one_table_of_tests_each(grid_folder):
    """baseline {pe: [rope, tapa]}: tapa is tested against rope and rope against tapa, with opposite differences."""
    grid = yaml.safe_load((grid_folder / "grid.yaml").read_text())
    grid["report"]["baseline"] = {"pe": ["rope", "tapa"]}
    (grid_folder / "grid.yaml").write_text(yaml.safe_dump(grid))
    report = write_report(grid_folder).read_text().split("## Appendix")[0]
    tests = report.split("Paired tests against `pe=rope`")[1]
    against_rope, against_tapa = tests.split("Paired tests against `pe=tapa`")
    tapa_row = table_row(against_rope, "pe=tapa, lr=0.001").split(" | ")
    rope_row = table_row(against_tapa, "pe=rope, lr=0.003").split(" | ")
    assert tapa_row[1] == rope_row[1] == "val/loss"
    assert float(tapa_row[3]) == pytest.approx(-float(rope_row[3]))
    assert float(tapa_row[3]) == pytest.approx(2.2 - 2.3)


@pytest.mark.parametrize("n", [1, 6, 10, 15, 20, 45])
def test_every_curve_of_a_large_grid_has_its_own_style(n):
    """15 PEs on one plot: no two lines share colour, marker and line style (matplotlib's cycle repeats after 10)."""
    styles = line_styles(n)
    assert len(styles) == n and len(set(styles)) == n
    if n <= 20:
        assert len({color for color, _, _ in styles}) == n


def write_curves(grid_folder: Path, losses: dict[str, list[list[float]]]) -> None:
    """Give each selected cell a ``metrics.jsonl`` with ``val/loss@1x``/``@16x`` at logged steps 99, 199, ... (the
    ``@16x`` value is the ``@1x`` one + 1; a non-finite point and a training tag that must be ignored)."""
    for pe, lr in (("rope", "0.003"), ("tapa", "0.001")):
        for i, seed in enumerate(GRID["seeds"]):
            lines = [{"step": 100 * k + 99, "epoch": 0, "val/loss": value, "val/loss@1x": value,
                      "val/loss@16x": value + 1} for k, value in enumerate(losses[pe][i])]
            lines += [{"step": 5, "epoch": 0, "train/loss": 9.0}, {"step": 9999, "epoch": 0, "val/loss@1x": np.nan}]
            path = grid_folder / "cells" / f"{pe}-{lr}-{seed}" / "run" / "metrics.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 12, "val/lo')  # cut off


CURVES = {"rope": [[3.0, 2.0, 1.5], [3.1, 2.1, 1.4], [2.9, 2.2, 1.6]],
          "tapa": [[3.5, 2.4, 1.55], [3.65, 2.3, 1.5], [3.4, 2.5, 1.7]]}


def test_curves_are_tabulated_plotted_and_tested_against_the_baseline_at_each_step(grid_folder):
    write_curves(grid_folder, CURVES)
    report = write_report(grid_folder).read_text()
    section = report.split("### Validation over training")[1].split("## ")[0]
    one_x, sixteen_x = section.split("`val/loss@1x` by step:")[1].split("`val/loss@16x` by step:")
    assert "| cell | 100 | 200 | 300 |" in one_x and "val/loss by step" not in section  # @1x duplicates val/loss
    means = [f"{np.mean([row[k] for row in CURVES['tapa']]):.4g}" for k in range(3)]
    assert table_row(one_x, "pe=tapa, lr=0.001") == "| pe=tapa, lr=0.001 | " + " | ".join(means) + " |"
    assert table_row(sixteen_x, "pe=rope, lr=0.003") == "| pe=rope, lr=0.003 | 4 | 3.1 | 2.5 |"
    expected = paired_test([row[2] for row in CURVES["tapa"]], [row[2] for row in CURVES["rope"]])
    diff = table_row(one_x, "pe=tapa, lr=0.001 - pe=rope, lr=0.003").split(" | ")
    assert diff[-1] == f"{expected.mean_diff:+.3f} (p {expected.t_pvalue:.3g}) |"
    rows = (grid_folder / "report" / "curves_train.csv").read_text().splitlines()
    assert rows[0] == "tag,cell,seed,step,value" and len(rows) == 1 + 2 * 2 * 3 * 3  # tags x cells x seeds x steps
    assert (grid_folder / "report" / "learning_curves_train.png").stat().st_size > 10_000


def test_no_curves_section_without_a_curve(grid_folder):
    """One validation per run (or no metrics file): nothing to plot over training."""
    write_curves(grid_folder, {pe: [[v[0]] for v in values] for pe, values in CURVES.items()})
    report = write_report(grid_folder).read_text()
    assert "Validation over training" not in report
    assert not (grid_folder / "report" / "learning_curves_train.png").exists()
