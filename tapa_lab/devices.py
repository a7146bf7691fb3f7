"""Device resolution for the lab's commands: one meaning of ``auto`` and one error for a bad device string."""

from __future__ import annotations

import torch

from tapa_lab.errors import ConfigError


def resolve_device(device: str, field: str = "device") -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else must parse as a torch device.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:<n>``.
        field: the option's name as the command line spells it, for the error message.

    Raises:
        ConfigError: naming ``field`` when ``device`` is not a device, or is CUDA on a machine without one.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"{field} = {device!r} is not a device: use auto, cpu or cuda[:n].") from error
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field} = {device!r}: this machine has no CUDA device; use auto or cpu.")
    return target
