"""Loading checkpoints with errors that say what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tapa_lab.errors import ConfigError


def load_checkpoint(path: Path, field: str) -> dict[str, Any]:
    """Load a Lightning checkpoint on CPU, or raise :class:`ConfigError` naming ``field``.

    Args:
        path: the ``.ckpt`` file.
        field: the config field that named it (for the message), e.g. ``model.init_from`` or ``ckpt_path``.
    """
    if not path.is_file():
        raise ConfigError(f"{field} = '{path}': no such checkpoint file. Runs keep theirs under "
                          "checkpoints/<name>/version_<n>/checkpoints/ (last.ckpt and the best by val/loss).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ConfigError(f"{field} = '{path}' is not a readable checkpoint ({type(error).__name__}: {error}). "
                          "It may be truncated or corrupt: use another checkpoint of the run (last.ckpt or the "
                          "best one) or retrain.") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{field} = '{path}' is not a Lightning checkpoint (no 'state_dict' entry).")
    return checkpoint
