"""``model.optim.groups``: parameters chosen by name pattern get their own learning-rate scale and weight decay with
the default AdamW + schedule and with ``--optimizer``; the groups are recorded; a pattern matching nothing is one line
naming it; TAPA's phase schedule is logged; resume stays bit-exact."""

from __future__ import annotations

import json

import pytest
import torch
from fixture_run import FIXTURE_RUN

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning
from tapa_lab.errors import ConfigError
from tapa_lab.lit.module import warmup_cosine
from tapa_lab.lit.param_groups import ParamGroup, form_groups
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import TAPA

TAPA_GROUPS = ["--model.posenc", "tapa_lab.posenc.TAPA", "--model.posenc.learnable_alpha", "true",
               "--model.optim.groups", '[{match: "*.w[qk].phase", lr_scale: 0.1}, '
                                       '{match: "*.posenc.*", lr_scale: 2, weight_decay: 0.5}]']


def labelled(groups: list[dict]) -> dict[str, dict]:
    return {group["group"]: group for group in groups}


def test_first_matching_entry_takes_a_parameter_and_the_rest_keep_the_default_rule():
    model = DecoderLM(64, DecoderConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2), TAPA(learnable_alpha=True))
    named = list(model.named_parameters())
    groups = labelled(form_groups(named, [ParamGroup("*.wq.phase", lr_scale=0.1), ParamGroup("*.w[qk].*"),
                                          ParamGroup("*posenc*", weight_decay=0.3)], lr=1e-3, weight_decay=0.1))
    ids = {label: {id(p) for p in group["params"]} for label, group in groups.items()}
    by_name = dict(named)
    assert ids["*.wq.phase"] == {id(by_name[f"blocks.{i}.attn.wq.phase"]) for i in range(2)}
    assert ids["*.w[qk].*"] == {id(by_name[f"blocks.{i}.attn.{w}"]) for i in range(2)
                               for w in ("wq.amplitude", "wk.amplitude", "wk.phase")}  # wq.phase went first
    assert ids["*posenc*"] == {id(by_name[f"blocks.{i}.attn.posenc.log_alpha"]) for i in range(2)}
    assert groups["*.wq.phase"]["lr"] == pytest.approx(1e-4) and groups["*.wq.phase"]["weight_decay"] == 0.1
    assert groups["*posenc*"]["weight_decay"] == 0.3  # an explicit decay applies to vectors too
    assert all(p.dim() >= 2 for p in groups["decay"]["params"]) and groups["decay"]["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in groups["no_decay"]["params"]) and groups["no_decay"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups.values()) == len(named)  # every parameter exactly once


def test_a_pattern_that_matches_nothing_names_itself_and_lists_the_parameter_names():
    model = DecoderLM(64, DecoderConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2), TAPA())
    with pytest.raises(ConfigError) as error:
        form_groups(model.named_parameters(), [ParamGroup("*.phse")], lr=1e-3, weight_decay=0.1)
    message = str(error.value)
    assert "model.optim.groups[0].match = '*.phse'" in message and "blocks.<n>.attn.wq.phase" in message
    assert "\n" not in message


def test_groups_train_at_their_scaled_rates_and_are_recorded(in_tmp, capsys):
    cli = run_lightning(["fit", *FIXTURE_RUN, *TAPA_GROUPS, "--trainer.max_steps", "5"])
    optimizer = cli.trainer.optimizers[0]
    groups = labelled(optimizer.param_groups)
    multiplier = warmup_cosine(5, 3, 5, 0.1)  # the factor after the 5th scheduler step (min_lr_ratio)
    assert groups["decay"]["lr"] == pytest.approx(0.01 * multiplier)
    assert groups["*.w[qk].phase"]["lr"] == pytest.approx(0.001 * multiplier)
    assert groups["*.posenc.*"]["lr"] == pytest.approx(0.02 * multiplier)  # one group: its decay is explicit
    assert groups["*.posenc.*"]["weight_decay"] == 0.5
    record = json.loads((in_tmp / "checkpoints" / "TAPA" / "version_0" / "run_record_fit.json").read_text())
    recorded = {row["group"]: row for row in record["param_groups"]}
    assert recorded["*.w[qk].phase"]["names"] == ["model.blocks.<n>.attn.wq.phase", "model.blocks.<n>.attn.wk.phase"]
    assert recorded["*.w[qk].phase"]["lr"] == pytest.approx(0.001)
    assert "param group '*.w[qk].phase': lr 0.001" in capsys.readouterr().out


def test_groups_reach_an_optimizer_chosen_with_the_cli(in_tmp):
    cli = run_lightning(["fit", *FIXTURE_RUN, *TAPA_GROUPS, "--trainer.max_steps", "2",
                         "--optimizer", "torch.optim.SGD", "--optimizer.weight_decay", "0.01"])
    groups = labelled(cli.trainer.optimizers[0].param_groups)
    assert type(cli.trainer.optimizers[0]) is torch.optim.SGD
    assert groups["decay"]["weight_decay"] == 0.01 and groups["*.w[qk].phase"]["weight_decay"] == 0.01
    assert groups["*.posenc.*"]["weight_decay"] == 0.5 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["*.w[qk].phase"]["initial_lr"] == pytest.approx(0.001)


def test_a_group_pattern_matching_nothing_is_one_line_before_anything_is_written(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *FIXTURE_RUN, "--trainer.max_steps", "2", "--model.optim.groups", '[{match: "*.phase_*"}]'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model.optim.groups[0].match = '*.phase_*' matches no parameter" in err and "Traceback" not in err
    assert not (in_tmp / "checkpoints").exists() or not list((in_tmp / "checkpoints").rglob("*.yaml"))


def test_the_phase_temperature_schedule_is_logged_to_tensorboard(in_tmp, scalars):
    run_lightning(["fit", *FIXTURE_RUN, "--trainer.max_steps", "4", "--model.posenc", "tapa_lab.posenc.TAPA",
                   "--model.posenc.phase_schedule", "{start: 4.0, end: 1.0, steps: 2, shape: linear}"])
    logged = scalars(in_tmp / "checkpoints" / "TAPA" / "version_0", "posenc/phase_temperature")
    assert logged == pytest.approx({0: 4.0, 1: 2.5, 2: 1.0, 3: 1.0})
    last = torch.load(in_tmp / "checkpoints" / "TAPA" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["state_dict"]["model.blocks.0.attn.posenc.phase_inverse_temperature"].item() == 1.0


@pytest.mark.slow
def test_resume_with_groups_and_a_phase_schedule_is_bit_exact(in_tmp):
    """8 steps with groups and a schedule, snapshot at 4; a run resumed from the snapshot ends on identical weights."""
    snapshot = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.dirpath", str(in_tmp / "snapshots"),
                "--trainer.callbacks.every_n_train_steps", "4", "--trainer.callbacks.save_top_k", "-1"]
    common = [*FIXTURE_RUN, *TAPA_GROUPS, "--trainer.max_steps", "8",
              "--model.posenc.phase_schedule", "{start: 4.0, end: 1.0, steps: 6}"]
    run_lightning(["fit", *common, *snapshot])
    (step4,) = (in_tmp / "snapshots").glob("*step=4*.ckpt")
    run_lightning(["fit", *common, "--ckpt_path", str(step4)])
    full, resumed = (torch.load(in_tmp / "checkpoints" / "TAPA" / f"version_{v}" / "checkpoints" / "last.ckpt",
                                weights_only=False) for v in (0, 1))
    assert full["global_step"] == resumed["global_step"] == 8
    assert all(torch.equal(full["state_dict"][k], resumed["state_dict"][k]) for k in full["state_dict"])
    assert [g["lr"] for g in full["optimizer_states"][0]["param_groups"]] == \
        [g["lr"] for g in resumed["optimizer_states"][0]["param_groups"]]
