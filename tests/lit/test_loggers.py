"""Any Lightning logger: metrics.jsonl holds what the logger got, and the run folder, ``--ckpt_path last`` resume and
``tapa-lab eval`` work the same with TensorBoard (default), CSV, MLflow (local file store), W&B (offline; when wandb is
installed) and no logger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fixture_run import FIXTURE_RUN, scalars

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning
from tapa_lab.lit.metrics_file import METRICS_FILE, read_metrics


def train_loss_steps(run: Path) -> list[int]:
    """The step of every ``train/loss`` line of a run's metrics.jsonl, in file order (duplicates kept)."""
    lines = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    return [line["step"] for line in lines if "train/loss" in line]


def test_metrics_file_equals_tensorboard_and_resume_drops_replayed_steps(in_tmp):
    run_lightning(["fit", *FIXTURE_RUN, "--trainer.max_steps", "12", "--model.posenc", "tapa_lab.posenc.RoPE"])
    run = in_tmp / "checkpoints" / "RoPE" / "version_0"
    metrics = read_metrics(run, ["train/loss", "val/loss", "never/logged"])
    for tag in ("train/loss", "val/loss"):
        assert metrics[tag] == pytest.approx(scalars(run, tag), rel=1e-6), tag  # TensorBoard stores float32
    assert sorted(metrics["val/loss"]) == [9] and metrics["never/logged"] == {}
    # a kill after step 14 leaves lines the checkpoint (step 12) does not know: the resumed run replaces them
    with (run / METRICS_FILE).open("a") as stream:
        stream.write(json.dumps({"step": 13, "epoch": 0, "train/loss": 99.0}) + "\n" + '{"step": 14, "tra')
    run_lightning(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_steps", "16"])
    assert train_loss_steps(run) == list(range(16))
    resumed = read_metrics(run, ["train/loss"])["train/loss"]
    assert all(resumed[step] == metrics["train/loss"][step] for step in range(12)) and resumed[13] != 99.0


def _csv(run: Path, tmp: Path) -> None:
    rows = (run / "metrics.csv").read_text().splitlines()
    assert "train/loss" in rows[0].split(",") and len(rows) > 6


def _mlflow(run: Path, tmp: Path) -> None:
    """The fit and the resume are two MLflow runs named after the run folder: 4 steps, then 2 more."""
    assert [p.read_text() for p in tmp.glob("mlruns/*/*/tags/mlflow.runName")] == ["RoPE/version_0"] * 2
    losses = [len(p.read_text().splitlines()) for p in tmp.glob("mlruns/*/*/metrics/train/loss")]
    assert sorted(losses) == [2, 4]


def _wandb(run: Path, tmp: Path) -> None:
    assert list((tmp / "checkpoints" / "wandb").glob("offline-run-*"))  # W&B keeps its store next to the runs


def _nothing(run: Path, tmp: Path) -> None:
    assert not list(run.glob("events.out.tfevents.*"))


LOGGERS = {
    "csv": (["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"], _csv),
    "mlflow": (["--trainer.logger", "lightning.pytorch.loggers.MLFlowLogger",
                "--trainer.logger.tracking_uri", "file:./mlruns"], _mlflow),
    "wandb": (["--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.offline", "true"],
              _wandb),
    "none": (["--trainer.logger", "false"], _nothing),
}


@pytest.mark.slow
@pytest.mark.parametrize("logger", list(LOGGERS))
def test_run_folder_resume_and_eval_work_with_any_logger(logger, in_tmp, monkeypatch):
    if logger == "wandb":
        pytest.importorskip("wandb")  # in the loggers extra, not in dev: W&B starts a service (~20 s)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    args, check_logger = LOGGERS[logger]
    run_lightning(["fit", *FIXTURE_RUN, *args, "--trainer.max_steps", "4", "--model.posenc", "tapa_lab.posenc.RoPE"])
    run = in_tmp / "checkpoints" / "RoPE" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["run_dir"] == "checkpoints/RoPE/version_0"
    assert (run / "run_record_fit.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    run_lightning(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_steps", "6"])
    assert train_loss_steps(run) == list(range(6))
    assert sorted(p.name for p in (in_tmp / "checkpoints" / "RoPE").iterdir()) == ["version_0"]
    check_logger(run, in_tmp)
    main(["eval", "--run", str(run), "--checkpoint", "last", "--perplexity.multiples", "[1]",
          "--perplexity.max_tokens", "64", "--data.split", "validation"])
    result = json.loads((run / "eval" / "results.json").read_text())
    assert result["checkpoint"].endswith("last.ckpt") and result["perplexity"][0]["length"] == 32


@pytest.mark.parametrize(("args", "message"), [
    (["--trainer.logger", "true"], "trainer.logger = true"),
    (["--trainer.logger", "lightning.pytorch.loggers.MLFlowLogger"], "trainer.logger.init_args.tracking_uri"),
], ids=["logger-true", "mlflow-file-store"])
def test_a_logger_the_lab_cannot_pin_is_one_line_before_anything_runs(args, message, in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *FIXTURE_RUN, *args, "--trainer.max_steps", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (in_tmp / "checkpoints").exists()
