"""A seconds-long CLI run of a tiny decoder on the committed fixture corpus, and a TensorBoard reader for its folder.

Imported as a plain module by the lit, eval and ablation tests (``from fixture_run import FIXTURE_RUN, scalars``).
"""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# A decoder small enough that a few dozen steps take seconds, on the fixture corpus.
FIXTURE_RUN = [
    "--seed_everything", "7",
    "--trainer.accelerator", "cpu",
    "--trainer.devices", "1",
    "--trainer.log_every_n_steps", "1",
    "--trainer.val_check_interval", "10",
    "--trainer.check_val_every_n_epoch", "null",
    "--trainer.limit_val_batches", "2",
    "--trainer.enable_progress_bar", "false",
    "--trainer.deterministic", "true",
    "--model.architecture.d_model", "32",
    "--model.architecture.n_layers", "1",
    "--model.architecture.n_heads", "2",
    "--model.optim.lr", "0.01",
    "--model.optim.warmup_steps", "3",
    "--data.corpus", "tapa_lab.data.Fixture",
    "--data.seq_len", "32",
    "--data.batch_size", "8",
    "--data.val_windows", "8",
]


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    """``{step: value}`` of one TensorBoard scalar of a run folder."""
    values: dict[int, float] = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({e.step: e.value for e in accumulator.Scalars(tag)})
    return values
