"""Checks of ``fit --ckpt_path`` made before a run folder is touched, and the names a later run's files get there.

A resume is refused, with nothing written, when the checkpoint was made by another model (PE class or arguments,
architecture, tensor shapes) or another training stream (seed, lengths, corpus). A later run in an existing run folder
never rewrites that run's ``config.yaml``: its config goes beside it as ``config.resume-<n>.yaml`` (``fit``) or
``config.<subcommand>-<n>.yaml`` (``validate``, ``test``, ``predict``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace

from tapa_lab.errors import ConfigError
from tapa_lab.lit.checkpoint_callbacks import RunIdentity
from tapa_lab.lit.checkpoint_io import load_checkpoint

IGNORED_POSENC_ARGS = ("backend",)  # how attention is computed, not what: a run may resume on another backend
IGNORED_ARCHITECTURE_ARGS = ("init_std",)  # used at initialisation only


def _plain(value: Any) -> Any:
    """``value`` as plain JSON (tuples become lists, namespaces dicts), so saved and parsed values compare equal."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    return json.loads(json.dumps(value, default=str))


def run_identity(model_config: Namespace | dict) -> dict[str, Any]:
    """What makes a checkpoint's weights mean the same thing: the PE (class and arguments) and the architecture.

    Args:
        model_config: the ``model`` section of a run config (parsed, or a saved ``config.yaml``'s dict).
    """
    model_config = _plain(model_config)
    posenc = model_config.get("posenc") or {}
    if isinstance(posenc, str):
        posenc = {"class_path": posenc}
    init_args = {k: v for k, v in (posenc.get("init_args") or {}).items() if k not in IGNORED_POSENC_ARGS}
    architecture = {k: v for k, v in (model_config.get("architecture") or {}).items()
                    if k not in IGNORED_ARCHITECTURE_ARGS}
    return {"model.posenc": {"class_path": posenc.get("class_path"), "init_args": init_args},
            "model.architecture": architecture}


def _writer_identity(checkpoint: dict, path: Path) -> dict[str, Any] | None:
    """The identity recorded in the checkpoint, else the one of the run folder's ``config.yaml`` that holds it."""
    recorded = checkpoint.get("callbacks", {}).get(RunIdentity.__name__)
    if recorded:
        return recorded
    config_path = path.parent.parent / "config.yaml"
    if not config_path.is_file():
        return None
    saved = yaml.safe_load(config_path.read_text()) or {}
    return run_identity(saved["model"]) if isinstance(saved.get("model"), dict) else None


def _differ(saved: Any, current: Any) -> bool:
    """Whether two identity values differ; dicts are compared on their common keys only, so an argument added to
    the lab since the checkpoint was written (absent there, at its default here) does not refuse a resume."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return any(_differ(saved[key], current[key]) for key in saved.keys() & current.keys())
    return saved != current


def _describe(identity: dict[str, Any], key: str) -> str:
    value = identity[key]
    if key == "model.posenc":
        args = ", ".join(f"{k}={v!r}" for k, v in value["init_args"].items())
        return f"{str(value['class_path']).rsplit('.', 1)[-1]}({args})"
    return json.dumps(value, sort_keys=True)


def check_model(path: Path, checkpoint: dict, identity: dict[str, Any], model: L.LightningModule) -> None:
    """Refuse a checkpoint written by another PE or architecture than this config's (naming both).

    Raises:
        ConfigError: naming ``ckpt_path``, the checkpoint's and this config's values, and ``model.init_from`` (the way
            to start a new run from another model's weights).
    """
    hint = ("Resume with the config of the run that wrote it, or start a new run from its weights with "
            "--model.init_from (fresh optimizer and step).")
    writer = _writer_identity(checkpoint, path)
    if writer is not None:
        differ = [f"{key} = {_describe(writer, key)} in the checkpoint but {_describe(identity, key)} in this config"
                  for key in identity if key in writer and _differ(writer[key], identity[key])]
        if differ:
            raise ConfigError(f"ckpt_path = '{path}' was written by another model: {'; '.join(differ)}. {hint}")
    state, own = checkpoint["state_dict"], model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ConfigError(f"ckpt_path = '{path}' does not match this config's model (model.posenc / "
                          f"model.architecture): missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch "
                          f"{mismatched[:5]}. {hint}")


def check_stream(checkpoint: dict, datamodule: L.LightningDataModule, trainer: L.Trainer) -> None:
    """Refuse a checkpoint whose training stream (seed, lengths, corpus) differs from this config's.

    Lightning makes the same check, but only after the run folder has been written to; this one runs first. It needs
    the token cache, so it runs on each node's first process only (the others follow it).

    Raises:
        ConfigError: naming the fields that differ (from :meth:`StreamLoader.load_state_dict`).
    """
    saved = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
    if not saved or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    datamodule.trainer = trainer
    loader = datamodule.train_dataloader()
    if hasattr(loader, "load_state_dict"):
        loader.load_state_dict(saved[0])


def check_resume(ckpt_path: str, identity: dict[str, Any], model: L.LightningModule,
                 datamodule: L.LightningDataModule | None, trainer: L.Trainer) -> None:
    """All checks of ``fit --ckpt_path`` (model, then stream), before anything is written."""
    path = Path(ckpt_path)
    checkpoint = load_checkpoint(path, field="ckpt_path", mmap=True)
    check_model(path, checkpoint, identity, model)
    if datamodule is not None:
        check_stream(checkpoint, datamodule, trainer)


def later_config_name(run_dir: Path, subcommand: str) -> str:
    """``config.resume-<n>.yaml`` (fit) or ``config.<subcommand>-<n>.yaml``, ``n`` one above the folder's highest."""
    label = "resume" if subcommand == "fit" else subcommand
    pattern = re.compile(rf"config\.{re.escape(label)}-(\d+)\.yaml")
    taken = [int(m.group(1)) for p in run_dir.glob(f"config.{label}-*.yaml") if (m := pattern.fullmatch(p.name))]
    return f"config.{label}-{max(taken, default=0) + 1}.yaml"
