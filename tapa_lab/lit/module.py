"""LanguageModel: the LightningModule that trains and evaluates a :class:`~tapa_lab.model.DecoderLM`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from lightning.pytorch.cli import instantiate_class
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.text import Perplexity

from tapa_lab.data.document_ids import split_batch
from tapa_lab.errors import ConfigError, require
from tapa_lab.lit.checkpoint_io import load_checkpoint
from tapa_lab.lit.compile import CompileConfig, compile_module
from tapa_lab.lit.param_groups import ParamGroup, describe_groups, form_groups, validate_groups
from tapa_lab.lit.schedules import instantiate_scheduler
from tapa_lab.model import DecoderConfig, DecoderLM
from tapa_lab.posenc import PositionalEncoding
from tapa_lab.posenc.rope import RoPE

Batch = Tensor | tuple[Tensor, Tensor]
"""A batch of windows ``(B, L + 1)``, or ``(tokens, document_ids)`` with ``data.document_mask``."""


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1e-3
    """Peak learning rate (the paper used 1e-4 for RoPE and 2e-5 for TAPA at 7B scale)."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not norms, not per-head PE scalars)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    warmup_steps: int = 100
    """Linear warm-up steps from 0 to lr."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr at the end of the cosine."""
    groups: list[ParamGroup] = dataclass_field(default_factory=list)
    """Parameter groups with their own lr scale and weight decay, chosen by name pattern (first match wins), e.g.
    ``[{match: "*.w[qk].phase", lr_scale: 0.1}]`` (:mod:`tapa_lab.lit.param_groups`); empty: the two default
    groups."""

    def validate(self) -> None:
        require(self.lr > 0, "model.optim.lr", "> 0", self.lr)
        require(self.weight_decay >= 0, "model.optim.weight_decay", ">= 0", self.weight_decay)
        require(all(0 <= b < 1 for b in self.betas), "model.optim.betas", "two values in [0, 1)", self.betas)
        require(self.warmup_steps >= 0, "model.optim.warmup_steps", ">= 0", self.warmup_steps)
        require(0 <= self.min_lr_ratio <= 1, "model.optim.min_lr_ratio", "in [0, 1]", self.min_lr_ratio)
        validate_groups(self.groups)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up to 1, then cosine to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def training_flops(model: DecoderLM, batch_size: int, seq_len: int) -> int:
    """FLOPs of one forward + backward (PaLM appendix B): 6 N T for the matmuls plus 6 n_layers T L d / 2 for
    causal attention scores and values (FlashAttention convention: causal halves the work); ThroughputMonitor
    turns it into FLOP/s and MFU."""
    config = model.config
    matmul_params = sum(p.numel() for name, p in model.named_parameters() if p.dim() >= 2 and "embed" not in name)
    tokens = batch_size * seq_len
    return 6 * matmul_params * tokens + 6 * config.n_layers * tokens * seq_len * config.d_model


class LanguageModel(L.LightningModule):
    """Next-token language modelling with a decoder and a pluggable positional encoding.

    Args:
        posenc: the positional encoding, chosen by ``class_path`` (e.g. ``tapa_lab.posenc.TAPA``).
        architecture: the decoder's shape (presets in experiments/model/).
        optim: optimiser and schedule.
        vocab_size: number of token ids; linked from ``data.vocab_size``, do not set by hand.
        init_from: a checkpoint whose model weights initialise this model before training (optimizer fresh): the
            second stage of context extension. Shapes must match; the PE may differ in scaling (e.g. RoPE -> YaRN).
        compile: ``torch.compile`` of the decoder (off by default; :mod:`tapa_lab.lit.compile`).
    """

    def __init__(self, posenc: PositionalEncoding = lazy_instance(RoPE), architecture: DecoderConfig = DecoderConfig(),
                 optim: OptimConfig = OptimConfig(), vocab_size: int = 258, init_from: str | None = None,
                 compile: CompileConfig = CompileConfig()) -> None:
        super().__init__()
        optim.validate()
        self.optim = optim
        self.optimizer_spec: dict[str, Any] | None = None
        self.lr_scheduler_spec: dict[str, Any] | None = None
        self.model = DecoderLM(vocab_size, architecture, posenc)
        self.param_groups()  # a group pattern that matches nothing is refused here, before anything is written
        self.val_perplexity = Perplexity()
        self.test_perplexity = Perplexity()
        if init_from is not None:
            self.load_weights(init_from)
        compile_module(self.model, compile)

    def use_optimizer(self, optimizer: dict[str, Any] | None, lr_scheduler: dict[str, Any] | None) -> None:
        """Train with LightningCLI's ``--optimizer`` and/or ``--lr_scheduler`` instead of the defaults.

        Args:
            optimizer: ``{"class_path": ..., "init_args": {...}}`` of any ``torch.optim.Optimizer`` (its ``lr`` is
                ``model.optim.lr``, linked by the CLI); ``None``: AdamW from ``model.optim``. Either way matrices
                decay and norms and per-head PE scalars do not (their group has ``weight_decay`` 0).
            lr_scheduler: the same for any step-based scheduler (stepped every optimizer step, see
                :func:`tapa_lab.lit.schedules.instantiate_scheduler`); ``None``: warm-up + cosine from ``model.optim``.
        """
        probe = [torch.zeros(1, requires_grad=True)]
        probe_optimizer = torch.optim.SGD(probe, lr=1.0)
        for field, spec in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler)):
            if spec is None:
                continue
            try:  # build both once on a probe parameter, so bad arguments are refused before anything runs
                if field == "optimizer":
                    probe_optimizer = instantiate_class([{"params": probe}], spec)
                else:
                    instantiate_scheduler(probe_optimizer, spec, total_steps=1, warmup_steps=self.optim.warmup_steps)
            except ConfigError:
                raise
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{field} = {spec['class_path']} does not accept its init_args: {error}") from None
        self.optimizer_spec = optimizer
        self.lr_scheduler_spec = lr_scheduler

    def load_weights(self, path: str) -> None:
        """Copy model weights from a Lightning checkpoint; error naming the field on missing file or shape mismatch."""
        state = load_checkpoint(Path(path), field="model.init_from")["state_dict"]
        own = self.state_dict()
        mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
        missing = [k for k in own if k not in state]
        if mismatched or missing:
            raise ConfigError(
                f"model.init_from = {path!r} does not match this model: "
                f"missing {missing[:5]}, shape mismatch {mismatched[:5]}. Use the same architecture and a PE with the "
                "same parameters as the run that wrote the checkpoint.")
        self.load_state_dict({k: state[k] for k in own}, strict=True)

    def forward(self, tokens: Tensor, positions: Tensor | None = None, document_ids: Tensor | None = None) -> Tensor:
        """``tokens (B, L)`` -> logits ``(B, L, V)``; ``document_ids (B, L)`` restricts attention to each document."""
        return self.model(tokens, positions, document_ids=document_ids)

    def loss(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Mean next-token NLL of a batch ``(B, L + 1)`` (or ``(tokens, document_ids)``, both ``(B, L + 1)``); also
        returns the logits ``(B, L, V)``."""
        tokens, ids = split_batch(batch)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = self(inputs) if ids is None else self(inputs, document_ids=ids[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()), logits

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self.flops_per_batch = training_flops(self.model, *split_batch(batch)[0][:, :-1].shape)
        scalars: dict[str, float] = {}
        for module in self.model.modules():  # PE schedules (TAPA's phase temperature) follow the optimizer step
            if isinstance(module, PositionalEncoding):
                scalars.update(module.on_train_step(self.global_step))
        for name, value in scalars.items():
            self.log(f"posenc/{name}", value)

    def on_validation_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.flops_per_batch = training_flops(self.model, *split_batch(batch)[0][:, :-1].shape) // 3  # forward only

    def on_test_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.flops_per_batch = training_flops(self.model, *split_batch(batch)[0][:, :-1].shape) // 3  # forward only

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, _ = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/perplexity", loss.detach().exp())
        return loss

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0 (the usual windows) logs ``val/loss`` and ``val/perplexity``; with the data module's
        ``val_multiples``, each loader also logs its ``val/loss@<m>x`` (:meth:`TextDataModule.val_loss_tags`)."""
        loss, logits = self.loss(batch)
        tokens = split_batch(batch)[0]
        for tag in self._val_loss_tags()[dataloader_idx]:
            self.log(tag, loss, prog_bar=tag == "val/loss", sync_dist=True, add_dataloader_idx=False,
                     batch_size=tokens.shape[0])
        if dataloader_idx == 0:
            self.val_perplexity(logits.float(), tokens[:, 1:])
            self.log("val/perplexity", self.val_perplexity, prog_bar=True, add_dataloader_idx=False)

    def _val_loss_tags(self) -> list[list[str]]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        tags = getattr(datamodule, "val_loss_tags", None)
        return tags() if tags is not None else [["val/loss"]]

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, logits = self.loss(batch)
        tokens = split_batch(batch)[0]
        self.test_perplexity(logits.float(), tokens[:, 1:])
        self.log("test/loss", loss, sync_dist=True, batch_size=tokens.shape[0])
        self.log("test/perplexity", self.test_perplexity)

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's param groups (:func:`tapa_lab.lit.param_groups.form_groups`): matrices decay, vectors do
        not, and each ``model.optim.groups`` entry has its own lr scale and weight decay."""
        decay = self.optim.weight_decay if self.optimizer_spec is None else None
        return form_groups(self.named_parameters(), self.optim.groups, self.optim.lr, decay)

    def describe_param_groups(self) -> list[dict[str, Any]]:
        """The groups formed, for the fit log and the run record (label, names, sizes, lr, weight decay)."""
        return describe_groups(self.param_groups(), self.named_parameters(), self.optim.lr)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        groups = self.param_groups()
        if self.optim.groups and self.trainer.is_global_zero:
            for row in self.describe_param_groups():
                print(f"param group {row['group']!r}: lr {row['lr']:g}, weight_decay {row['weight_decay']}, "
                      f"{row['tensors']} tensors / {row['elements']:,} elements: {', '.join(row['names'])}")
        if self.optimizer_spec is None:
            optimizer = torch.optim.AdamW(groups, lr=self.optim.lr, betas=self.optim.betas, eps=self.optim.eps)
        else:
            optimizer = instantiate_class(groups, self.optimizer_spec)
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler: LRScheduler
        if self.lr_scheduler_spec is None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(
                step, self.optim.warmup_steps, total_steps, self.optim.min_lr_ratio))
        else:
            scheduler = instantiate_scheduler(optimizer, self.lr_scheduler_spec, total_steps, self.optim.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

