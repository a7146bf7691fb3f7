"""LightningCLI's ``--optimizer`` / ``--lr_scheduler``: any torch optimizer and scheduler by class path, the shipped
WSD schedule, ``model.optim.lr`` as the one learning-rate key, exact resume, and clear errors before anything runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from fixture_run import FIXTURE_RUN

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning
from tapa_lab.lit.metrics_file import read_metrics
from tapa_lab.lit.schedules import WarmupStableDecay

OPTIM = Path(__file__).resolve().parents[2] / "experiments" / "optim"


def wsd(step: int, warmup: int, total: int, decay_steps: int) -> float:
    """WSD with a 1-sqrt decay to 0, written out independently of the class."""
    if step < warmup:
        return (step + 1) / warmup
    return 1.0 if step < total - decay_steps else 1 - math.sqrt((step - total + decay_steps) / decay_steps)


def test_wsd_multiplier_warms_up_holds_then_decays():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = WarmupStableDecay(optimizer, total_steps=20, warmup_steps=4, decay_fraction=0.25, decay="1-sqrt")
    assert [schedule.multiplier(s) for s in range(20)] == pytest.approx([wsd(s, 4, 20, 5) for s in range(20)])
    linear = WarmupStableDecay(optimizer, total_steps=10, warmup_steps=0, decay_fraction=0.5, min_lr_ratio=0.1)
    assert [linear.multiplier(s) for s in (0, 4, 5, 10)] == pytest.approx([1.0, 1.0, 1.0, 0.1])


@pytest.mark.slow
def test_sgd_and_wsd_fragments_train_with_model_optim_lr_as_the_peak(in_tmp):
    """The grid's learning-rate key model.optim.lr sets the peak of any optimizer; weight decay skips vectors."""
    cli = run_lightning(["fit", *FIXTURE_RUN, "--config", str(OPTIM / "sgd.yaml"), "--config", str(OPTIM / "wsd.yaml"),
                         "--model.optim.lr", "0.2", "--model.optim.warmup_steps", "2",
                         "--lr_scheduler.init_args.decay_fraction", "0.5", "--trainer.max_steps", "10",
                         "--model.posenc", "tapa_lab.posenc.RoPE"])
    run = in_tmp / "checkpoints" / "RoPE" / "version_0"
    metrics = read_metrics(run, ["lr-SGD/pg1", "train/loss"])
    assert metrics["lr-SGD/pg1"] == pytest.approx({s: 0.2 * wsd(s, 2, 10, 5) for s in range(10)})
    assert metrics["train/loss"][9] < metrics["train/loss"][0] - 1.0
    groups = cli.trainer.optimizers[0].param_groups
    assert type(cli.trainer.optimizers[0]) is torch.optim.SGD and [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert groups[0]["momentum"] == 0.9 and groups[0]["nesterov"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["optim"]["lr"] == 0.2 and "lr" not in saved["optimizer"]["init_args"]
    assert saved["lr_scheduler"]["class_path"] == "tapa_lab.lit.schedules.WarmupStableDecay"
    assert (run / "run_record_fit.json").is_file()


@pytest.mark.slow
def test_resume_with_any_optimizer_and_schedule_is_bit_exact(in_tmp):
    """Adam + OneCycleLR for 8 steps, snapshot at 4; a new run resumed from the snapshot ends on identical weights."""
    snapshot = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.dirpath", str(in_tmp / "snapshots"),
                "--trainer.callbacks.every_n_train_steps", "4", "--trainer.callbacks.save_top_k", "-1"]
    common = [*FIXTURE_RUN, "--trainer.max_steps", "8", "--model.posenc", "tapa_lab.posenc.RoPE",
              "--optimizer", "torch.optim.Adam", "--optimizer.betas", "[0.8, 0.9]",
              "--lr_scheduler", "torch.optim.lr_scheduler.OneCycleLR", "--lr_scheduler.max_lr", "0.02"]
    run_lightning(["fit", *common, *snapshot])
    (step4,) = (in_tmp / "snapshots").glob("*step=4*.ckpt")
    run_lightning(["fit", *common, "--ckpt_path", str(step4)])
    full, resumed = (torch.load(in_tmp / "checkpoints" / "RoPE" / f"version_{v}" / "checkpoints" / "last.ckpt",
                                weights_only=False) for v in (0, 1))
    assert full["global_step"] == resumed["global_step"] == 8
    assert all(torch.equal(full["state_dict"][k], resumed["state_dict"][k]) for k in full["state_dict"])
    losses = [read_metrics(in_tmp / "checkpoints" / "RoPE" / f"version_{v}", ["train/loss"])["train/loss"]
              for v in (0, 1)]
    assert sorted(losses[1]) == list(range(4, 8)) and all(losses[1][s] == losses[0][s] for s in range(4, 8))


@pytest.mark.parametrize(("args", "message"), [
    (["--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.1"], "set --model.optim.lr instead"),
    (["--lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"], "lr_scheduler = "),
    (["--lr_scheduler", "tapa_lab.lit.schedules.WarmupStableDecay", "--lr_scheduler.decay_fraction", "0"],
     "lr_scheduler.init_args.decay_fraction"),
    (["--optimizer", "torch.optim.SGD", "--optimizer.momentum", "-1"], "optimizer = torch.optim.SGD"),
], ids=["optimizer-lr", "plateau", "wsd-fraction", "sgd-momentum"])
def test_bad_optimizer_or_schedule_is_one_line_before_anything_runs(args, message, in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *FIXTURE_RUN, *args, "--trainer.max_steps", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list((in_tmp / "checkpoints").rglob("*.yaml"))
