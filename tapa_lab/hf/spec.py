"""A PE or tokenizer as a plain ``{"class_path", "init_args"}`` dict (as in the YAML configs) and back.

A PE's constructor arguments are read back from the same-named attributes every PE keeps (``alpha``, ``factor``,
``original_max_len``, ``backend``...); learned values (e.g. TAPA's per-head alpha) are weights, not arguments.
"""

from __future__ import annotations

import importlib
import inspect

from tapa_lab.errors import ConfigError
from tapa_lab.posenc.base import PositionalEncoding


def posenc_spec(posenc: PositionalEncoding) -> dict:
    """``{"class_path": "tapa_lab.posenc.TAPA", "init_args": {...}}`` that rebuilds ``posenc`` (before binding).

    Raises:
        TypeError: when a constructor argument is not kept as an attribute of the same name.
    """
    cls = type(posenc)
    init_args = {}
    for name, param in inspect.signature(cls).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(posenc, name):
            raise TypeError(f"{cls.__name__} does not keep its constructor argument {name!r} as an attribute, so it "
                            "cannot be exported; store it as self.{name}.")
        init_args[name] = getattr(posenc, name)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def import_class(class_path: str, base: type, field: str) -> type:
    """The class named by ``class_path`` (``package.module.Class``), checked to subclass ``base``.

    Raises:
        ConfigError: naming ``field`` when the path does not name such a class.
    """
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise ConfigError(f"{field} = {class_path!r} is not allowed: {field} must name a subclass of "
                          f"{base.__module__}.{base.__qualname__} importable here.")
    return cls


def build_posenc(spec: dict) -> PositionalEncoding:
    """A new, unbound PE from :func:`posenc_spec`'s dict."""
    cls = import_class(spec["class_path"], PositionalEncoding, "posenc.class_path")
    return cls(**spec.get("init_args", {}))
