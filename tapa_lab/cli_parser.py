"""The CLI's argument parser: errors come first and alone, and a broken ``--config`` file is named.

jsonargparse prints the whole usage (about 85 lines for ``fit``) before a parse error and reports YAML syntax errors
in ``--config`` files as ``<unicode string>``; here an error is one ``tapa-lab: error:`` message plus a ``--help`` hint,
and a config file that is not valid YAML is a :class:`ConfigError` naming the file, line and column.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from tapa_lab.errors import ConfigError

CONFIG_FLAGS = ("-c", "--config")


class LabArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors print the message and a ``--help`` hint only (exit status 2)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"tapa-lab: error: {message}\n  (all options: {prog} --help)\n")
        self.exit(2)


def config_files(args: Sequence[str]) -> list[Path]:
    """The existing files named by ``-c`` / ``--config`` in ``args`` (a config may also be given inline)."""
    values = []
    for index, arg in enumerate(args):
        if arg in CONFIG_FLAGS and index + 1 < len(args):
            values.append(args[index + 1])
        elif arg.startswith("--config="):
            values.append(arg.split("=", 1)[1])
    return [Path(value) for value in values if Path(value).is_file()]


def check_config_files(args: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming the first ``--config`` file of ``args`` that is not valid YAML."""
    for path in config_files(args):
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"--config {path} is not valid YAML{where}: {problem}.") from None
