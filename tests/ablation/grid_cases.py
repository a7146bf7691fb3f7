"""Grids for the ablation tests: a minimal valid grid on the fixture corpus, with fragment paths into experiments/."""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
#: Settings of a seconds-long cell: a 1-layer d=32 decoder on the committed fixture corpus.
FIXTURE_SET = {
    "trainer.accelerator": "cpu", "trainer.max_steps": 6, "trainer.val_check_interval": 3,
    "trainer.limit_val_batches": 2, "trainer.log_every_n_steps": 1, "model.architecture.d_model": 32,
    "model.architecture.n_layers": 1, "model.architecture.n_heads": 2, "model.architecture.n_kv_heads": 1,
    "data.corpus": "tapa_lab.data.Fixture", "data.seq_len": 32, "data.batch_size": 4, "data.val_windows": 4,
}


def minimal_grid(**overrides) -> dict:
    """A valid two-PE grid on the fixture corpus; ``overrides`` replace top-level keys."""
    grid = {
        "name": "test",
        "base": [str(EXPERIMENTS / "model" / "tiny.yaml")],
        "set": dict(FIXTURE_SET),
        "seeds": [1, 2],
        "axes": {"pe": {"levels": {"rope": {"config": [str(EXPERIMENTS / "posenc" / "rope.yaml")]},
                                   "nope": {"config": [str(EXPERIMENTS / "posenc" / "nope.yaml")]}}}},
    }
    grid.update(overrides)
    return grid
