"""Optimizer parameter groups chosen by name pattern, each with its own learning-rate scale and weight decay.

``model.optim.groups`` lists :class:`ParamGroup` entries; a parameter joins the first entry whose ``match`` (an
``fnmatch`` pattern) matches its name as ``LanguageModel.named_parameters()`` spells it, e.g.
``model.blocks.0.attn.wq.phase``. Every other parameter stays in the two default groups: matrices with
``model.optim.weight_decay``, vectors and scalars (norms, per-head PE scalars) with none. TAPA gives its amplitude and
phase rows of W_q and W_k their own parameters (``attn.wq.amplitude``, ``attn.wq.phase``, ``attn.wk.*``) for this::

    model:
      optim:
        lr: 3.0e-3
        groups:
        - {match: "*.w[qk].phase", lr_scale: 0.1}     # the phase projections at a tenth of the rate
        - {match: "*.posenc.*", weight_decay: 0.0}

A group's learning rate is ``lr_scale * model.optim.lr`` and any schedule (the default warm-up + cosine, or
``--lr_scheduler``) multiplies each group's rate alike; with ``--optimizer`` the same groups are passed to the chosen
optimizer. The groups formed are printed when fitting starts and written to ``run_record_fit.json``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from tapa_lab.errors import ConfigError, require

FIELD = "model.optim.groups"


@dataclass
class ParamGroup:
    """Parameters chosen by name, with their own learning-rate scale and weight decay."""

    match: str
    """``fnmatch`` pattern over parameter names (e.g. ``*.wq.phase``, ``*.posenc.*``); one that matches nothing is
    refused, listing the names."""
    lr_scale: float = 1.0
    """The group's learning rate as a multiple of ``model.optim.lr``; >= 0 (0 freezes the group)."""
    weight_decay: float | None = None
    """The group's weight decay; null: the default rule (``model.optim.weight_decay`` on matrices, 0 on vectors)."""


def validate_groups(groups: list[ParamGroup]) -> None:
    """Check every entry's values, naming the field."""
    for index, group in enumerate(groups):
        require(bool(group.match), f"{FIELD}[{index}].match", "a non-empty name pattern", group.match)
        require(group.lr_scale >= 0, f"{FIELD}[{index}].lr_scale", ">= 0", group.lr_scale)
        require(group.weight_decay is None or group.weight_decay >= 0, f"{FIELD}[{index}].weight_decay",
                "null or >= 0", group.weight_decay)


def name_shapes(names: Iterable[str]) -> list[str]:
    """Parameter names with layer indices folded (``model.blocks.<n>.attn.wq.phase``), each once, in order."""
    return list(dict.fromkeys(re.sub(r"\.\d+\.", ".<n>.", name) for name in names))


def form_groups(named: Iterable[tuple[str, nn.Parameter]], groups: list[ParamGroup], lr: float,
                weight_decay: float | None) -> list[dict[str, Any]]:
    """torch param groups: the two default groups first, then one or two per ``groups`` entry (its matrices and its
    vectors, when ``weight_decay`` is null and both exist).

    Args:
        named: ``(name, parameter)`` pairs of the module (frozen parameters are left out).
        groups: the configured entries.
        lr: ``model.optim.lr``.
        weight_decay: the matrices' default decay; ``None``: leave it to the optimizer (``--optimizer``).

    Returns:
        Dicts with ``params``, ``group`` (a label: ``decay``, ``no_decay``, ``<pattern>``, ``<pattern> (no_decay)``),
        and ``lr`` / ``weight_decay`` where they differ from the optimizer's own.

    Raises:
        ConfigError: an entry matches no parameter (naming it and listing the parameter names).
    """
    named = [(name, param) for name, param in named if param.requires_grad]
    chosen: list[list[tuple[str, nn.Parameter]]] = [[] for _ in groups]
    default: list[tuple[str, nn.Parameter]] = []
    for name, param in named:
        index = next((i for i, group in enumerate(groups) if fnmatch.fnmatchcase(name, group.match)), None)
        (default if index is None else chosen[index]).append((name, param))
    for index, members in enumerate(chosen):
        if not members:
            raise ConfigError(f"{FIELD}[{index}].match = {groups[index].match!r} matches no parameter (or only ones "
                              f"an earlier entry took); parameter names: {', '.join(name_shapes(n for n, _ in named))}")
    out = [_group("decay", [p for _, p in default if p.dim() >= 2], weight_decay),
           _group("no_decay", [p for _, p in default if p.dim() < 2], 0.0)]
    for group, members in zip(groups, chosen, strict=True):
        extra = {"lr": lr * group.lr_scale}
        if group.weight_decay is not None:
            out.append(_group(group.match, [p for _, p in members], group.weight_decay, extra))
            continue
        matrices, vectors = [p for _, p in members if p.dim() >= 2], [p for _, p in members if p.dim() < 2]
        if matrices:
            out.append(_group(group.match, matrices, weight_decay, extra))
        if vectors:
            out.append(_group(f"{group.match} (no_decay)", vectors, 0.0, extra))
    return out


def _group(label: str, params: list[nn.Parameter], weight_decay: float | None,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    group: dict[str, Any] = {"params": params, "group": label, **(extra or {})}
    if weight_decay is not None:
        group["weight_decay"] = weight_decay
    return group


def describe_groups(groups: list[dict[str, Any]], named: Iterable[tuple[str, nn.Parameter]], lr: float
                    ) -> list[dict[str, Any]]:
    """What :func:`form_groups` formed, for the log and the run record: label, parameter names (folded), tensors,
    elements, learning rate and weight decay of each group."""
    names = {id(param): name for name, param in named}
    return [{"group": g["group"], "names": name_shapes(names[id(p)] for p in g["params"]),
             "tensors": len(g["params"]), "elements": sum(p.numel() for p in g["params"]),
             "lr": g.get("lr", lr), "weight_decay": g.get("weight_decay", "optimizer default")} for g in groups]
