"""Context extension (stage 2): a run continued from a checkpoint loads its weights and switches the PE scaling."""

from __future__ import annotations

from pathlib import Path

import yaml
from fixture_run import FIXTURE_RUN, scalars

from tapa_lab.cli import run_lightning
from tapa_lab.eval.load import load_run
from tapa_lab.posenc import YaRN

EXTENSION = Path(__file__).resolve().parents[2] / "experiments" / "extension"


def test_extension_run_loads_weights_and_switches_rope_to_yarn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_lightning(["fit", *FIXTURE_RUN, "--trainer.max_steps", "10", "--model.posenc", "tapa_lab.posenc.RoPE",
                   "--model.posenc.backend", "torch"])
    stage1 = tmp_path / "checkpoints" / "RoPE" / "version_0"
    last = stage1 / "checkpoints" / "last.ckpt"
    stage1_files = sorted(p.name for p in (stage1 / "checkpoints").iterdir())
    run_lightning(["fit", "--config", str(stage1 / "config.yaml"), "--config", str(EXTENSION / "rope-yarn-4x.yaml"),
                   "--model.init_from", str(last), "--model.posenc.original_max_len", "32", "--data.seq_len", "128",
                   "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.log_every_n_steps", "1"])
    run = tmp_path / "checkpoints" / "extension-rope-yarn-4x" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_from"] == str(last) and config["data"]["seq_len"] == 128
    assert sorted(p.name for p in (stage1 / "checkpoints").iterdir()) == stage1_files  # stage 1 is left alone

    posenc = load_run(run, "last").model.model.blocks[0].attn.posenc
    assert isinstance(posenc, YaRN) and posenc.factor == 4.0 and posenc.original_max_len == 32
    assert posenc.backend == "torch" and posenc.base == 10000.0  # stage 1's RoPE arguments carry over

    # weights loaded: stage 2 starts near stage 1's final loss, far below a fresh model's ln(258) = 5.55
    stage1_loss = scalars(stage1, "train/loss")
    stage2_loss = scalars(run, "train/loss")
    assert stage2_loss[0] < 4.6 and stage2_loss[0] < stage1_loss[0] - 0.8, (stage1_loss, stage2_loss)
