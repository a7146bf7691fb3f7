"""The golden run: the first training losses of a fixed tiny decoder on the committed fixture corpus, per encoding.

The cases are every PE fragment of ``experiments/posenc/`` (named by its stem: ``alibi``, ``tapa-linear``, ...), plus,
under its class name, any class :func:`tapa_lab.posenc.pe_classes` discovers that no fragment names (trained with its
defaults), so a new PE is covered by its one file and its one YAML. Each case trains :class:`LanguageModel` through a
Lightning ``Trainer`` on :class:`TextDataModule` (the lab's own training step, AdamW + warm-up + cosine and training
stream), on CPU, one process, with the PyTorch attention path (``backend: torch``); the losses are the values
``training_step`` returns.

Imported as a plain module by ``test_golden_losses.py`` and ``regenerate.py`` (beside it).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser

from tapa_lab.data.fixture import Fixture
from tapa_lab.lit.datamodule import TextDataModule
from tapa_lab.lit.module import LanguageModel, OptimConfig
from tapa_lab.model import DecoderConfig
from tapa_lab.posenc import PositionalEncoding, pe_classes

ROOT = Path(__file__).resolve().parents[2]
POSENC_FRAGMENTS = ROOT / "experiments" / "posenc"
GOLDEN_FILE = Path(__file__).resolve().parent / "losses.json"
REGENERATE = "python tests/golden/regenerate.py"
"""The command that writes missing lines of ``losses.json`` (``--all`` rewrites every line, ``--names`` some)."""

RUN: dict[str, Any] = {
    "seed": 7, "steps": 12, "threads": 1,
    "architecture": {"d_model": 32, "n_layers": 1, "n_heads": 2},
    "optim": {"lr": 0.01, "warmup_steps": 3},
    "data": {"seq_len": 32, "batch_size": 8, "val_windows": 8},
}
"""The fixed tiny run (the shape of tests/fixture_run.py's CLI run); stored in the golden file's header. One thread:
the run is then bitwise the same under torch 2.13.0 and 2.14.1, and seconds long on a busy 2-core machine."""

TOLERANCE = 2e-5
"""Largest allowed |fresh - golden| at any step: about twice the largest spread measured (:data:`CALIBRATION`: the
same run on another CPU, whose MKL/oneDNN kernels sum in another order), 4x below the closest two cases."""

CALIBRATION = {
    "spread": "largest |loss - golden| over all cases and steps",
    "torch 2.13.0 vs 2.14.1, 1 thread": 0.0,
    "1 vs 2 threads (either torch)": 1.67e-6,
    "same torch and threads, run twice": 0.0,
    "the case that moves at 2 threads": "fire (every other case: 0)",
    "another CPU (AMD EPYC, no AVX-512, vs the machine that wrote the file), 1 or 2 threads": 9.06e-6,
    "the cases that move there": "tapa-linear 9.1e-6, nope 4.8e-6, fire 2.1e-6, rope-yarn 1.9e-6, tapa-phase-norm "
                                 "1.7e-6 (every other case <= 1e-6)",
    "ALiBi slopes x 1.01 (tests/golden/test_golden_losses.py)": 3.55e-3,
    "closest two cases (tapa vs tapa-learnable-alpha)": 8.18e-5,
    "measured": "2026-12-03, two x86-64 Linux machines (2 shared cores each; the file was written on the first), torch "
                "2.13.0+cpu and 2.14.1+cu130 (on CPU), python tests/golden/regenerate.py --compare --threads 1|2",
}
"""How :data:`TOLERANCE` was chosen; written into the golden file's header."""


@dataclass(frozen=True)
class Case:
    """One golden line: a name and the PE it trains (``class_path`` and ``init_args``)."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)

    def build(self) -> PositionalEncoding:
        """The PE with the case's arguments, on the PyTorch attention path, built by jsonargparse as the CLI builds it
        (nested dataclass arguments such as TAPA's ``phase_schedule`` included)."""
        cls = pe_classes()[self.class_path.rsplit(".", 1)[-1]]
        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--posenc", type=PositionalEncoding)
        spec = {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": {**self.init_args, "backend": "torch"}}
        return parser.instantiate_classes(parser.parse_object({"posenc": spec})).posenc


def cases() -> list[Case]:
    """Every PE fragment of ``experiments/posenc/`` by stem, then each discovered class no fragment names."""
    found = []
    for path in sorted(POSENC_FRAGMENTS.glob("*.yaml")):
        posenc = yaml.safe_load(path.read_text())["model"]["posenc"]
        found.append(Case(path.stem, posenc["class_path"], dict(posenc.get("init_args") or {})))
    named = {case.class_path.rsplit(".", 1)[-1] for case in found}
    found += [Case(name, f"tapa_lab.posenc.{name}") for name in pe_classes() if name not in named]
    return found


class _Losses(L.Callback):
    """Collects the loss ``training_step`` returns, one float per optimizer step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.values.append(float(outputs["loss"]))


@contextmanager
def _isolated(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads and full-precision float32 matmuls, then restore the process's threads,
    matmul precision and determinism setting.

    The precision is pinned because ``tapa-lab``'s entry point sets ``high`` for the rest of its process (TF32 on GPUs;
    oneDNN may use reduced-precision matmuls on CPUs that have them), and tests that call ``main()`` run in the same
    process before or after this one in whatever order pytest (or pytest-xdist) chooses."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision()
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])
        torch.set_float32_matmul_precision(before[2])


def train_losses(case: Case, data_dir: Path, threads: int = RUN["threads"]) -> list[float]:
    """The first ``RUN["steps"]`` training losses of ``case``'s tiny run (fixture corpus cached in ``data_dir``)."""
    with _isolated(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and loggers, not about the losses
        L.seed_everything(RUN["seed"], verbose=False)
        data = TextDataModule(corpus=Fixture(), data_dir=str(data_dir), **RUN["data"])
        model = LanguageModel(posenc=case.build(), architecture=DecoderConfig(**RUN["architecture"]),
                              optim=OptimConfig(**RUN["optim"]), vocab_size=data.vocab_size)
        losses = _Losses()
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=RUN["steps"], logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, deterministic=True, callbacks=[losses])
        trainer.fit(model, datamodule=data)
    return losses.values


def deviation(fresh: list[float], golden: list[float]) -> float:
    """Largest |fresh - golden| over the steps; infinite when the runs have different lengths."""
    if len(fresh) != len(golden):
        return float("inf")
    return max(abs(a - b) for a, b in zip(fresh, golden, strict=True))


def read_golden(path: Path = GOLDEN_FILE) -> dict[str, Any]:
    """The golden file: ``{"about", "command", "run", "tolerance", "measured", "losses": {name: [loss, ...]}}``."""
    return json.loads(path.read_text()) if path.is_file() else {"losses": {}}


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banner (GPU/TPU availability, tips) for the many tiny fits."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
