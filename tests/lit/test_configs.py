"""Every YAML under experiments/ (except ablation grids) parses and instantiates through the LightningCLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tapa_lab.cli import run_lightning
from tapa_lab.lit.module import LanguageModel
from tapa_lab.posenc import PositionalEncoding

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
FULL_CONFIGS = sorted([EXPERIMENTS / "smoke.yaml", *(EXPERIMENTS / "model").glob("*.yaml")])
PE_FRAGMENTS = sorted((EXPERIMENTS / "posenc").glob("*.yaml"))
CPU_ONLY = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
            "--trainer.num_nodes", "1", "--trainer.precision", "32-true"]


def instantiate(*configs: Path) -> LanguageModel:
    args = [a for c in configs for a in ("--config", str(c))] + CPU_ONLY
    with torch.device("meta"):  # the 8B preset would not fit in memory otherwise
        cli = run_lightning(args, run=False)
    return cli.model


def test_every_config_is_covered():
    """No YAML is left out of the parse tests (ablation grids have their own tests)."""
    covered = set(FULL_CONFIGS) | set(PE_FRAGMENTS)
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
        assert getattr(posenc, key) == value
    assert model.model.config.d_model == 128  # the tiny preset is untouched
