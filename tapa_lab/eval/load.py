"""Loading a finished run for evaluation: its model and data module from ``config.yaml``, weights from a checkpoint.

Only the ``model`` and ``data`` sections of the saved LightningCLI config are parsed and instantiated (with the same
``data.vocab_size -> model.vocab_size`` link as the CLI); no Trainer, logger or run folder is created. A stage-2 run's
``model.init_from`` is ignored here: the evaluated checkpoint supplies every weight. So is ``model.compile``: evaluation
runs the decoder eagerly (its many lengths and the KV cache would recompile it again and again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from lightning.pytorch.cli import LightningArgumentParser

from tapa_lab.errors import ConfigError
from tapa_lab.lit.checkpoint_io import best_model_path, load_checkpoint
from tapa_lab.lit.datamodule import TextDataModule
from tapa_lab.lit.module import LanguageModel


@dataclass
class LoadedRun:
    """A run ready to evaluate.

    Attributes:
        run_dir: the run folder.
        checkpoint: the checkpoint whose weights were loaded.
        model: the language model, in eval mode.
        datamodule: the run's data module (not set up yet).
        config: the run's saved config (plain YAML dict).
    """

    run_dir: Path
    checkpoint: Path
    model: LanguageModel
    datamodule: TextDataModule
    config: dict

    @property
    def train_seq_len(self) -> int:
        """The training length of the run (``data.seq_len``)."""
        return self.datamodule.seq_len


def _parser() -> LightningArgumentParser:
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(LanguageModel, "model", subclass_mode=False)
    parser.add_lightning_class_args(TextDataModule, "data", subclass_mode=False)
    parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
    return parser


def instantiate_run_config(config: dict) -> tuple[LanguageModel, TextDataModule]:
    """Instantiate the ``model`` and ``data`` sections of a saved run config (random weights)."""
    parser = _parser()
    model_section = {k: v for k, v in config["model"].items() if k not in ("init_from", "vocab_size", "compile")}
    namespace = parser.parse_object({"model": model_section, "data": config.get("data", {})})
    objects = parser.instantiate(namespace)
    return objects.model, objects.data


def resolve_checkpoint(run_dir: Path, checkpoint: str) -> Path:
    """``best`` (the file the run's checkpoint callback recorded as best, read from ``last.ckpt``), ``last`` or a path.

    ``best`` never guesses from file names or times: a stray or truncated ``best-*.ckpt`` cannot win over the record,
    and the recorded file must load.

    Raises:
        ConfigError: naming ``checkpoint`` when no such file exists, ``last.ckpt`` records no best checkpoint, or the
            recorded one does not load.
    """
    folder = run_dir / "checkpoints"
    if checkpoint == "last":
        path = folder / "last.ckpt"
    elif checkpoint == "best":
        last = load_checkpoint(folder / "last.ckpt", field="checkpoint (best: read from last.ckpt)", mmap=True)
        best = best_model_path(last, folder)
        if best is None:
            raise ConfigError(f"checkpoint = 'best': {folder / 'last.ckpt'} records no best checkpoint (was validation "
                              "ever run?). Use --checkpoint last or a file path.")
        path = best
        load_checkpoint(path, field="checkpoint (best)", mmap=True)
    else:
        path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint = {checkpoint!r}: no such file ({path}). Use best, last or a .ckpt path.")
    return path


def _posenc_of(config_path: Path) -> dict | None:
    """The ``model.posenc`` section of a run config, or ``None`` when the file is missing."""
    if not config_path.is_file():
        return None
    return (yaml.safe_load(config_path.read_text()) or {}).get("model", {}).get("posenc")


def load_state(model: LanguageModel, path: Path) -> None:
    """Copy a checkpoint's weights into ``model``, or raise :class:`ConfigError` naming what does not match.

    Raises:
        ConfigError: naming ``checkpoint`` with the missing, unexpected and mis-shaped tensors (the architecture or
            the PE of the config differs from the run that wrote the checkpoint).
    """
    state = load_checkpoint(path, field="checkpoint")["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"checkpoint = '{path}' does not match the run's config (model.architecture / model.posenc): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]}. Evaluate a "
            "checkpoint of this run, or pass the config of the run that wrote it.")
    model.load_state_dict(state, strict=True)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> LoadedRun:
    """Load a run folder's model (weights from ``checkpoint``) and data module.

    Args:
        run_dir: ``checkpoints/<name>/version_<n>/`` holding ``config.yaml``.
        checkpoint: ``best``, ``last`` or a ``.ckpt`` path.
        device: where the model goes.

    Raises:
        ConfigError: naming ``run`` (no config), ``checkpoint`` (missing, unreadable, or written by a run whose PE or
            shapes differ from this config).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"run = '{run_dir}': no config.yaml there; pass a run folder such as "
                          "checkpoints/<name>/version_<n>.")
    config = yaml.safe_load(config_path.read_text())
    path = resolve_checkpoint(run_dir, checkpoint)
    writer_posenc = _posenc_of(path.parent.parent / "config.yaml")
    if writer_posenc is not None and writer_posenc != config["model"]["posenc"]:
        raise ConfigError(f"checkpoint = '{path}' was written by a run with model.posenc = {writer_posenc}, but "
                          f"{config_path} has model.posenc = {config['model']['posenc']}; evaluate it with its own "
                          "run.")
    model, datamodule = instantiate_run_config(config)
    load_state(model, path)
    model.to(torch.device(device)).eval()
    return LoadedRun(run_dir, path, model, datamodule, config)
