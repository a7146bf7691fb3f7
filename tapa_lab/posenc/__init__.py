"""Positional encodings, one family per file; chosen in YAML by ``class_path`` (e.g. ``tapa_lab.posenc.TAPA``).

Nothing here lists the PEs: every module of this package is imported and each :class:`PositionalEncoding` subclass it
defines is re-exported under its class name, so a new PE is one file here (plus one YAML fragment in
``experiments/posenc/``) and ``tapa_lab.posenc.<Class>`` names it. :func:`pe_classes` is the same discovery for tests,
benchmarks and grids.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from tapa_lab.posenc.base import PositionalEncoding


def pe_classes() -> dict[str, type[PositionalEncoding]]:
    """Every concrete PE class defined in this package, by class name (private ``_Names`` excluded)."""
    found: dict[str, type[PositionalEncoding]] = {}
    for module_info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        module = importlib.import_module(module_info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, PositionalEncoding) and obj is not PositionalEncoding
                    and obj.__module__ == module.__name__ and not name.startswith("_")):
                found[name] = obj
    return dict(sorted(found.items()))


globals().update(pe_classes())
__all__ = ["PositionalEncoding", "pe_classes", *pe_classes()]
