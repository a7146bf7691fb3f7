"""The lab's one configuration error: every bad value a user can type ends as one line naming the field.

The CLI (``tapa_lab.__main__``) prints a :class:`ConfigError` as ``tapa-lab: error: <message>`` and exits 2; nothing
else in the lab prints or exits on bad input.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field (as the CLI spells it) and what is allowed."""


def require(condition: bool, field: str, allowed: str, value: object) -> None:
    """Raise :class:`ConfigError` naming ``field``, the ``allowed`` values and the offending ``value``."""
    if not condition:
        raise ConfigError(f"{field} = {value!r} is not allowed: {field} must be {allowed}.")
