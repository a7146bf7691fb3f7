"""Every YAML under experiments/ (except ablation grids) parses and instantiates through the LightningCLI."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import auto_parser

from tapa_lab.cli import run_lightning
from tapa_lab.eval.command import evaluate
from tapa_lab.lit.module import LanguageModel
from tapa_lab.posenc import PositionalEncoding

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
FULL_CONFIGS = sorted([EXPERIMENTS / "smoke.yaml", *(EXPERIMENTS / "model").glob("*.yaml")])
PE_FRAGMENTS = sorted((EXPERIMENTS / "posenc").glob("*.yaml"))
EVAL_CONFIGS = sorted((EXPERIMENTS / "eval").glob("*.yaml"))
EXTENSION_CONFIGS = sorted((EXPERIMENTS / "extension").glob("*.yaml"))
OPTIM_FRAGMENTS = sorted((EXPERIMENTS / "optim").glob("*.yaml"))
DATA_FRAGMENTS = sorted((EXPERIMENTS / "data").glob("*.yaml"))
CPU_ONLY = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
            "--trainer.num_nodes", "1", "--trainer.precision", "32-true"]


def instantiate(*configs: Path) -> LanguageModel:
    args = [a for c in configs for a in ("--config", str(c))] + CPU_ONLY
    with torch.device("meta"):  # the 8B preset would not fit in memory otherwise
        cli = run_lightning(args, run=False)
    return cli.model


def test_every_config_is_covered():
    """No YAML is left out of the parse tests (ablation grids have their own tests)."""
    covered = (set(FULL_CONFIGS) | set(PE_FRAGMENTS) | set(EVAL_CONFIGS) | set(EXTENSION_CONFIGS)
               | set(OPTIM_FRAGMENTS) | set(DATA_FRAGMENTS))
    shipped = {p for p in EXPERIMENTS.rglob("*.yaml") if "ablations" not in p.parts}
    assert shipped == covered


@pytest.mark.parametrize("config", FULL_CONFIGS, ids=lambda p: p.stem)
def test_full_config_instantiates(config, in_tmp):
    model = instantiate(config)
    expected = yaml.safe_load(config.read_text())["model"]["architecture"]
    assert model.model.config.d_model == expected["d_model"]
    assert len(model.model.blocks) == expected["n_layers"]


@pytest.mark.parametrize("fragment", PE_FRAGMENTS, ids=lambda p: p.stem)
def test_pe_fragment_swaps_only_the_posenc(fragment, in_tmp):
    model = instantiate(EXPERIMENTS / "model" / "tiny.yaml", fragment)
    posenc = model.model.blocks[0].attn.posenc
    expected = yaml.safe_load(fragment.read_text())["model"]["posenc"]
    assert isinstance(posenc, PositionalEncoding)
    assert f"{type(posenc).__module__.rsplit('.', 1)[0]}.{type(posenc).__name__}" == expected["class_path"]
    for key, value in expected.get("init_args", {}).items():
        actual = getattr(posenc, key)
        assert (asdict(actual) if is_dataclass(actual) else actual) == value
    assert model.model.config.d_model == 128  # the tiny preset is untouched


@pytest.mark.parametrize("config", EVAL_CONFIGS, ids=lambda p: p.stem)
def test_eval_config_parses_into_the_eval_command(config):
    parser = auto_parser(evaluate, as_positional=False, exit_on_error=False)  # the parser `tapa-lab eval` uses
    init = parser.instantiate(parser.parse_args(["--config", str(config), "--run", "checkpoints/x/version_0"]))
    expected = yaml.safe_load(config.read_text())
    for section in ("perplexity", "passkey", "bias"):
        if section in expected:
            assert all(getattr(init[section], key) == value for key, value in expected[section].items()
                       if not isinstance(value, list)), section
    if init.perplexity is not None:
        assert init.perplexity.lengths_for(128) == [round(m * 128) for m in init.perplexity.multiples]
    if "corpus" in expected.get("data", {}):
        assert type(init.data.corpus).__name__ == expected["data"]["corpus"]["class_path"].rsplit(".", 1)[-1]


@pytest.mark.parametrize("config", EXTENSION_CONFIGS, ids=lambda p: p.stem)
def test_extension_config_switches_pe_and_length(config, in_tmp):
    expected = yaml.safe_load(config.read_text())
    base_pe = "tapa.yaml" if "TAPA" in expected["model"]["posenc"]["class_path"] else "rope.yaml"
    cli = run_lightning(["--config", str(EXPERIMENTS / "model" / "tiny.yaml"),
                         "--config", str(EXPERIMENTS / "posenc" / base_pe), "--config", str(config), *CPU_ONLY],
                        run=False)
    posenc = cli.model.model.blocks[0].attn.posenc
    assert f"tapa_lab.posenc.{type(posenc).__name__}" == expected["model"]["posenc"]["class_path"]
    for key, value in expected["model"]["posenc"]["init_args"].items():
        assert getattr(posenc, key) == value
    assert cli.datamodule.seq_len == expected["data"]["seq_len"]
    assert cli.trainer.logger.name == expected["trainer"]["logger"]["init_args"]["name"]


@pytest.mark.parametrize("fragment", OPTIM_FRAGMENTS, ids=lambda p: p.stem)
def test_optim_fragment_swaps_only_the_optimizer_or_schedule(fragment, in_tmp):
    expected = yaml.safe_load(fragment.read_text())
    groups = expected.get("model", {}).get("optim", {}).get("groups", [])
    tapa = [EXPERIMENTS / "posenc" / "tapa.yaml"] if groups else []  # the group fragments name TAPA's parameters
    model = instantiate(EXPERIMENTS / "model" / "tiny.yaml", *tapa, fragment)
    assert [asdict(group) for group in model.optim.groups] == [{"lr_scale": 1.0, "weight_decay": None, **group}
                                                                for group in groups]
    assert len(model.param_groups()) > 2 if groups else len(model.param_groups()) == 2
    for key, spec in (("optimizer", model.optimizer_spec), ("lr_scheduler", model.lr_scheduler_spec)):
        if key not in expected:
            assert spec is None, key  # the lab's default stays
            continue
        assert spec["class_path"] == expected[key]["class_path"]
        assert all(spec["init_args"][name] == value for name, value in expected[key]["init_args"].items())
    if "optimizer" in expected:
        assert model.optimizer_spec["init_args"]["lr"] == expected["model"]["optim"]["lr"]  # linked from model.optim
    assert model.model.config.d_model == 128  # the tiny preset is untouched


@pytest.mark.parametrize("fragment", DATA_FRAGMENTS, ids=lambda p: p.stem)
def test_data_fragment_sets_only_its_data_fields(fragment, in_tmp):
    args = ["--config", str(EXPERIMENTS / "model" / "tiny.yaml"), "--config", str(fragment), *CPU_ONLY]
    with torch.device("meta"):
        cli = run_lightning(args, run=False)
    for key, value in yaml.safe_load(fragment.read_text())["data"].items():
        got = getattr(cli.datamodule, key)
        if isinstance(value, dict) and "class_path" in value:  # a component: the named class, built
            assert type(got).__name__ == value["class_path"].rsplit(".", 1)[-1], key
        else:
            assert got == (tuple(value) if isinstance(value, list) else value), key
    assert cli.datamodule.seq_len == 128  # the tiny preset is untouched
