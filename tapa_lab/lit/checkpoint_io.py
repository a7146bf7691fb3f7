"""Checkpoint files: loading with errors that say what is wrong and what to do, and saving that never truncates.

Saving goes through :class:`AtomicCheckpointIO` (the Trainer's checkpoint plugin in the CLI): the checkpoint is
written to a temporary file in the destination folder, flushed to disk, and renamed over the destination, so a full
disk or a kill mid-write leaves every earlier checkpoint intact (Lightning's own writer buffers the whole checkpoint in
memory and moves it from the system temp folder, which copies across filesystems).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from tapa_lab.data.atomic import remove_stale_temporaries, temporary_sibling
from tapa_lab.errors import ConfigError


class DiskFullError(ConfigError):
    """A checkpoint could not be written for lack of space; the message names the folder and its free space.

    A :class:`ConfigError` so the CLI prints it as one line (the fix is a folder with room,
    ``trainer.logger.init_args.save_dir``, or freeing space).
    """


def load_checkpoint(path: Path, field: str, mmap: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint on CPU, or raise :class:`ConfigError` naming ``field``.

    Args:
        path: the ``.ckpt`` file.
        field: the config field that named it (for the message), e.g. ``model.init_from`` or ``ckpt_path``.
        mmap: map the tensors instead of reading them (cheap checks of large checkpoints).
    """
    if not path.is_file():
        raise ConfigError(f"{field} = '{path}': no such checkpoint file. Runs keep theirs under "
                          "checkpoints/<name>/version_<n>/checkpoints/ (last.ckpt and the best by val/loss).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ConfigError(f"{field} = '{path}' is not a readable checkpoint ({type(error).__name__}: {error}). "
                          "It may be truncated or corrupt: use another checkpoint of the run (last.ckpt or the "
                          "best one) or retrain.") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{field} = '{path}' is not a Lightning checkpoint (no 'state_dict' entry).")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint plugin, writing through a temporary file in the same folder.

    Raises:
        DiskFullError: the disk filled up while saving (the temporary file is removed; earlier checkpoints stay).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)  # partial files of a killed save
        tmp = temporary_sibling(path)
        try:
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException as error:
            tmp.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                free = shutil.disk_usage(path.parent).free
                raise DiskFullError(
                    f"no space left to save checkpoint {path.name} in {path.parent} ({free / 2**20:.1f} MiB free); "
                    "earlier checkpoints are intact. Free space or move the run (trainer.logger.init_args.save_dir) "
                    "and resume with --ckpt_path last.") from None
            raise


def best_model_path(last: dict[str, Any], folder: Path) -> Path | None:
    """The best checkpoint recorded by the monitoring ``ModelCheckpoint`` callback in ``last`` (a ``last.ckpt``).

    The record is the callback's ``best_model_path``; the file is looked up by name in ``folder`` (the run's
    ``checkpoints/``), so a moved run folder still resolves. ``None`` when nothing was recorded.
    """
    for key, state in last.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("monitor") and state.get("best_model_path"):
            return folder / Path(state["best_model_path"]).name
    return None
