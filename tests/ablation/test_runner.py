"""The smoke grid end to end on the fixture corpus, with two injected bad cells: every cell trains in its own process,
a crashed cell and a diverged one are recorded and the grid goes on, the report's numbers agree with the per-seed CSV,
and a rerun skips finished cells, retries failed ones and resumes an interrupted one from its last checkpoint."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from grid_cases import EXPERIMENTS

from tapa_lab.ablation.command import report_grid, run_grid
from tapa_lab.ablation.report_format import format_summary
from tapa_lab.ablation.results import load_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """Run the smoke grid plus a cell that crashes (sequence longer than the corpus) and one that diverges (infinite
    learning rate), with two workers; returns ``(grid file, output folder)``."""
    folder = tmp_path_factory.mktemp("grid")
    grid = yaml.safe_load((EXPERIMENTS / "ablations" / "smoke.yaml").read_text())
    grid["base"] = [str(EXPERIMENTS / p) for p in ("model/tiny.yaml",)]
    for level in grid["axes"]["pe"]["levels"].values():
        level["config"] = [str(EXPERIMENTS.parent / p) for p in level["config"]]
    grid["axes"]["pe"]["levels"]["broken"] = {"config": [str(EXPERIMENTS / "posenc" / "nope.yaml")],
                                              "set": {"data.seq_len": 100000}}
    grid["axes"]["pe"]["levels"]["diverging"] = {"config": [str(EXPERIMENTS / "posenc" / "nope.yaml")],
                                                 "set": {"model.optim.lr": float("inf")}}
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # data/ (the packed fixture) lands here
        run_grid(str(path), out_dir=str(folder / "out"), workers=2)
    return path, folder / "out"


def by_pe(out: Path) -> dict[str, list]:
    rows: dict[str, list] = {}
    for row in load_rows(out):
        rows.setdefault(row.levels["pe"], []).append(row)
    return rows


def test_every_cell_is_recorded_and_failures_do_not_stop_the_grid(grid_run):
    _, out = grid_run
    rows = by_pe(out)
    assert {r.result.status for pe in ("rope", "tapa") for r in rows[pe]} == {"finished"}
    assert all(r.result.evaluated and "ppl@4x" in r.metrics for pe in ("rope", "tapa") for r in rows[pe])
    assert {r.result.status for r in rows["broken"]} == {"failed"}
    assert all("data.seq_len" in r.result.error for r in rows["broken"])
    assert {r.result.status for r in rows["diverging"]} == {"diverged"}
    assert all("training loss" in r.result.error for r in rows["diverging"])
    for row in rows["rope"]:
        cell = out / "cells" / row.cell_id
        config = yaml.safe_load((cell / "config.yaml").read_text())
        assert config["run_dir"] == str(cell / "run")
        (record_path,) = (cell / "run").glob("run_record_*.json")
        record = json.loads(record_path.read_text())
        assert record["seed"] == row.seed and record["data"]["manifest_hash"]
        assert (cell / "run" / "eval" / "results.json").is_file()


def test_report_lists_cells_with_intervals_that_match_the_csv(grid_run):
    _, out = grid_run
    report = (out / "report" / "report.md").read_text()
    with (out / "report" / "metrics.csv").open() as stream:
        csv_rows = list(csv.DictReader(stream))
    assert len(csv_rows) == 8
    for pe in ("rope", "tapa"):
        seeds = [r for r in csv_rows if r["pe"] == pe]
        assert sorted(int(r["seed"]) for r in seeds) == [1, 2]
        for metric in ("val/loss", "ppl@1x", "ppl@4x"):
            summary = format_summary([float(r[metric]) for r in seeds])
            assert f"| pe={pe} | 2 |" in report
            assert summary in next(line for line in report.splitlines() if line.startswith(f"| pe={pe} | 2 |"))
    assert "Paired tests against `pe=rope`" in report
    assert "| pe=tapa | nll@4x | 2 |" in report
    problems = report.split("## Cells that did not finish", 1)[1]
    assert problems.count("| failed |") == 2 and problems.count("| diverged |") == 2
    assert (out / "report" / "ppl_vs_length_train.png").stat().st_size > 10_000
    hparams = sorted((out / "report" / "tensorboard").glob("*/events.out.tfevents.*"))
    assert len(hparams) == 4 and {p.parent.name for p in hparams} == {r["cell_id"] for r in csv_rows
                                                                      if r["status"] == "finished"}


def test_report_regenerates_identically_without_training(grid_run):
    _, out = grid_run
    before = (out / "report" / "report.md").read_text()
    (out / "report" / "report.md").unlink()
    report_grid(str(out))
    assert (out / "report" / "report.md").read_text() == before


def test_rerun_skips_finished_retries_failed_resumes_interrupted_and_reproduces(grid_run):
    path, out = grid_run
    rows = by_pe(out)
    finished = rows["rope"][0]
    interrupted = rows["rope"][1]  # as if the runner was stopped after its last checkpoint, before its record
    for name in ("result.json", "trained", "evaluated"):
        (out / "cells" / interrupted.cell_id / name).unlink()
    shutil.rmtree(out / "cells" / interrupted.cell_id / "run" / "eval")
    fresh = rows["tapa"][0]  # trained again from nothing: the same numbers
    shutil.rmtree(out / "cells" / fresh.cell_id / "run")
    for name in ("result.json", "trained", "evaluated", "log.txt"):
        (out / "cells" / fresh.cell_id / name).unlink()
    before = (out / "cells" / finished.cell_id / "result.json").read_text()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path.parent)
        run_grid(str(path), out_dir=str(out), workers=2)

    def commands(cell_id: str) -> list[str]:
        log = (out / "cells" / cell_id / "log.txt").read_text()
        return [line for line in log.splitlines() if line.startswith("$ tapa-lab")]

    assert (out / "cells" / finished.cell_id / "result.json").read_text() == before
    assert len(commands(finished.cell_id)) == 2  # one fit, one eval: nothing ran again
    assert len([c for c in commands(rows["broken"][0].cell_id) if " fit " in c]) == 2  # a failed cell is retried
    assert len(commands(rows["diverging"][0].cell_id)) == 1  # a diverged one is final
    resumed = commands(interrupted.cell_id)
    assert "--ckpt_path last" in resumed[-2] and " eval " in resumed[-1]
    after = by_pe(out)
    assert after["rope"][1].result.status == "finished"
    assert after["rope"][1].metrics["ppl@4x"] == pytest.approx(interrupted.metrics["ppl@4x"])
    retrained = after["tapa"][0]
    assert "--ckpt_path" not in commands(fresh.cell_id)[0]
    for metric in ("train/loss", "val/loss", "ppl@1x", "ppl@4x"):
        assert retrained.metrics[metric] == fresh.metrics[metric], metric  # same machine, same numbers
