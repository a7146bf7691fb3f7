"""End-to-end training through the CLI on the committed fixture: every PE learns, resume is exact, errors are clear,
and DDP with two CPU processes trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning
from tapa_lab.posenc import pe_classes

PE_CLASS_PATHS = list(pe_classes())
QUICK_PES = ("TAPA", "RoPE", "ALiBi", "NoPE")
"""The PEs whose CLI fit is in the fast path; every PE trains in-process there too (tests/golden/), the rest of this
CLI fit under ``-m slow``."""


def test_pe_discovery_finds_the_shipped_families():
    assert {"NoPE", "ALiBi", "RoPE", "YaRN", "TAPA", "TAPALinearPhase"} <= set(PE_CLASS_PATHS)


@pytest.mark.parametrize("pe", [pe if pe in QUICK_PES else pytest.param(pe, marks=pytest.mark.slow)
                                for pe in PE_CLASS_PATHS])
def test_short_fit_decreases_loss(pe, in_tmp, fixture_run, scalars):
    run_lightning(["fit", *fixture_run, "--trainer.max_steps", "40",
                   "--model.posenc", f"tapa_lab.posenc.{pe}", "--model.posenc.backend", "torch"])
    run = in_tmp / "checkpoints" / pe / "version_0"
    losses = scalars(run, "train/loss")
    assert len(losses) == 40
    first = sum(losses[s] for s in sorted(losses)[:5]) / 5
    last = sum(losses[s] for s in sorted(losses)[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    assert scalars(run, "val/perplexity")
    record = json.loads((run / "run_record_fit.json").read_text())
    assert record["seed"] == 7 and record["data"]["manifest_hash"]


def test_resume_matches_uninterrupted_run(in_tmp, fixture_run, scalars):
    """Train 12 steps with a snapshot at step 6; resume a new run from the snapshot: steps 7-12 are identical."""
    snapshot = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.dirpath", str(in_tmp / "snapshots"),
                "--trainer.callbacks.every_n_train_steps", "6", "--trainer.callbacks.save_top_k", "-1"]
    common = [*fixture_run, "--trainer.max_steps", "12", "--model.posenc", "tapa_lab.posenc.TAPA",
              "--model.posenc.backend", "torch", "--model.posenc.learnable_alpha", "true"]
    run_lightning(["fit", *common, *snapshot])
    (step6,) = (in_tmp / "snapshots").glob("*step=6*.ckpt")
    run_lightning(["fit", *common, "--ckpt_path", str(step6)])
    full = scalars(in_tmp / "checkpoints" / "TAPA" / "version_0", "train/loss")
    resumed = scalars(in_tmp / "checkpoints" / "TAPA" / "version_1", "train/loss")
    assert sorted(resumed) == list(range(6, 12))
    for step in range(6, 12):
        assert resumed[step] == pytest.approx(full[step], rel=1e-6, abs=1e-6), step


def test_resume_last_from_saved_config_continues_the_same_run(in_tmp, fixture_run, scalars):
    run_lightning(["fit", *fixture_run, "--trainer.max_steps", "4", "--model.posenc", "tapa_lab.posenc.RoPE"])
    run = in_tmp / "checkpoints" / "RoPE" / "version_0"
    run_lightning(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_steps", "8"])
    assert sorted(scalars(run, "train/loss")) == list(range(8))
    assert not (in_tmp / "checkpoints" / "RoPE" / "version_1").exists()


def test_refuses_to_overwrite_a_run_and_explains(in_tmp, fixture_run, capsys):
    args = ["fit", *fixture_run, "--trainer.max_steps", "2", "--model.posenc", "tapa_lab.posenc.NoPE"]
    run_lightning(args)
    config = in_tmp / "checkpoints" / "NoPE" / "version_0" / "config.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    assert exit_info.value.code == 2
    assert "--ckpt_path last" in capsys.readouterr().err


@pytest.mark.parametrize("ckpt,message", [("missing.ckpt", "no such checkpoint"), ("corrupt.ckpt", "corrupt")])
def test_bad_checkpoint_is_a_clear_error(ckpt, message, in_tmp, fixture_run, capsys):
    (in_tmp / "corrupt.ckpt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *fixture_run, "--ckpt_path", str(in_tmp / ckpt)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "ckpt_path" in err and message in err


@pytest.mark.parametrize("override,field", [
    (["--model.posenc", "tapa_lab.posenc.TAPA", "--model.posenc.theta", "1.5"], "model.posenc.init_args.theta"),
    (["--model.posenc", "tapa_lab.posenc.YaRN", "--model.posenc.factor", "0.5"], "model.posenc.init_args.factor"),
    (["--model.architecture.n_kv_heads", "3"], "model.architecture.n_kv_heads"),
    (["--data.seq_len", "100000"], "data.seq_len"),
])
def test_bad_config_value_is_one_clear_message(override, field, in_tmp, fixture_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *fixture_run, "--trainer.max_steps", "1", *override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert field in err
    assert "Traceback" not in err


def test_unknown_pe_class_is_rejected(in_tmp, fixture_run, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *fixture_run, "--model.posenc", "tapa_lab.posenc.Rotary"])
    err = capsys.readouterr().err
    assert "model.posenc" in err and "Rotary" in err


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_trains(in_tmp, fixture_run, scalars):
    launched = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")  # a fresh launch
    env = {**{k: v for k, v in os.environ.items() if k not in launched}, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tapa_lab", "fit", *fixture_run, "--trainer.max_steps", "4",
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
               "--model.posenc", "tapa_lab.posenc.TAPA", "--model.posenc.backend", "torch"]
    result = subprocess.run(command, cwd=in_tmp, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(in_tmp) / "checkpoints" / "TAPA" / "version_0"
    record = json.loads((run / "run_record_fit.json").read_text())
    assert record["world_size"] == 2
    assert len(scalars(run, "train/loss")) == 4
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 4


def test_same_config_same_machine_same_metrics(in_tmp, fixture_run, scalars):
    args = ["fit", *fixture_run, "--trainer.max_steps", "10", "--model.posenc", "tapa_lab.posenc.ALiBi"]
    run_lightning(args)
    run_lightning(args)
    first = scalars(in_tmp / "checkpoints" / "ALiBi" / "version_0", "train/loss")
    second = scalars(in_tmp / "checkpoints" / "ALiBi" / "version_1", "train/loss")
    assert len(first) == 10 and first == second
