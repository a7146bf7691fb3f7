"""Where a grid's cells run: ``local`` (processes of the runner, the default) or ``slurm`` (a job array per stage
through submitit), and the cluster settings of the ``slurm`` executor.

The settings come from the grid's ``executor:`` block, overridden field by field on the command line
(``--slurm.partition gpu``). Every check runs before anything is submitted; a bad value is one line naming the field.

A cell's own ``trainer.num_nodes`` and ``trainer.devices`` decide how many SLURM tasks its training runs as
(:func:`task_layout`): Lightning's convention, one task per device, ``nodes x devices`` tasks in all.
This module imports no submitit (the optional ``cluster`` extra); :mod:`tapa_lab.ablation.cluster` does.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from dataclasses import dataclass, fields
from typing import Any, Literal

from tapa_lab.ablation.scheduler import check_partition
from tapa_lab.ablation.spec import GridError
from tapa_lab.errors import ConfigError

ExecutorKind = Literal["local", "slurm"]


@dataclass(frozen=True)
class SlurmOptions:
    """Cluster settings of ``--executor slurm`` (each ``None``: the grid's ``executor:`` block, else SLURM's
    default)."""

    partition: str | None = None
    """SLURM partition (``#SBATCH --partition``)."""
    account: str | None = None
    """Account charged (``--account``)."""
    qos: str | None = None
    """Quality of service (``--qos``)."""
    time: int | None = None
    """Wall-time limit of one task, in minutes (``--time``); a cell that needs longer is requeued and resumes."""
    gpus_per_task: int | None = None
    """GPUs of each cell (``--gpus-per-task``)."""
    cpus_per_task: int | None = None
    """CPU cores of each cell (``--cpus-per-task``); also its torch threads."""
    mem: str | None = None
    """Memory per node, e.g. ``64G`` (``--mem``)."""
    array_parallelism: int | None = None
    """Cells of one job array running at once (``--array=0-N%<this>``; default 256)."""

    def merged(self, other: SlurmOptions) -> SlurmOptions:
        """These settings with every field that ``other`` sets replaced (``other`` wins)."""
        return dataclasses.replace(self, **{f.name: getattr(other, f.name) for f in fields(other)
                                            if getattr(other, f.name) is not None})

    def submitit_parameters(self) -> dict[str, Any]:
        """The parameters of ``submitit.SlurmExecutor.update_parameters`` (``time`` defaults to 60 minutes)."""
        parameters = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        parameters.setdefault("time", 60)
        return parameters


@dataclass(frozen=True)
class TaskLayout:
    """The SLURM tasks of one cell's training: ``nodes`` x ``tasks_per_node`` (one task per device), each node
    with ``tasks_per_node`` GPUs when ``gpu``."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpu: bool = False

    @property
    def tasks(self) -> int:
        """All tasks of the job (Lightning's world size)."""
        return self.nodes * self.tasks_per_node


def task_layout(trainer: dict[str, Any], where: str = "") -> TaskLayout:
    """The tasks a cell's ``trainer`` section asks for: ``trainer.num_nodes`` nodes of ``trainer.devices`` tasks.

    ``devices`` as ``auto`` or ``-1`` on one node is one task (the run picks its devices, as before).

    Args:
        trainer: the cell's resolved ``trainer`` section.
        where: appended to the field in a message (e.g. `` (cell 1a2b3c4d5e6f)``).

    Raises:
        ConfigError: a multi-node cell whose ``trainer.devices`` is not a count (or list) of devices.
    """
    nodes = int(trainer.get("num_nodes") or 1)
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()):
        count = int(devices)
    else:
        count = 0
    if nodes > 1 and count < 1:
        raise ConfigError(f"trainer.devices = {devices!r}{where}: a multi-node cell (trainer.num_nodes = {nodes}) "
                          "needs the devices per node as a positive integer (one SLURM task each).")
    return TaskLayout(nodes, max(count, 1), str(trainer.get("accelerator")) in ("gpu", "cuda"))


def check_layouts(kind: ExecutorKind, trainers: dict[str, dict[str, Any]]) -> None:
    """Check every cell's task layout for the executor before anything runs.

    Args:
        kind: ``local`` or ``slurm``.
        trainers: each cell's ``trainer`` section, by cell id.

    Raises:
        ConfigError: a bad multi-node layout, or a multi-node cell for the local executor (naming
            ``trainer.num_nodes`` and ``--executor slurm``).
    """
    for cell_id, trainer in trainers.items():
        layout = task_layout(trainer, f" (cell {cell_id})")
        if kind == "local" and layout.nodes > 1:
            raise ConfigError(f"trainer.num_nodes = {layout.nodes} (cell {cell_id}): the local executor runs on this "
                              "machine only; run multi-node cells with --executor slurm.")


FIELDS = tuple(f.name for f in fields(SlurmOptions))
_TYPES = {"partition": str, "account": str, "qos": str, "mem": str, "time": int, "gpus_per_task": int,
          "cpus_per_task": int, "array_parallelism": int}


def grid_options(block: dict[str, Any]) -> SlurmOptions:
    """The grid's ``executor:`` block, checked.

    Raises:
        GridError: an unknown field, or a value of the wrong type or sign, naming ``executor.<field>``.
    """
    for name, value in block.items():
        if name not in FIELDS:
            raise GridError(f"executor: unknown field {name!r}; allowed: {', '.join(FIELDS)}.")
        kind = _TYPES[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise GridError(f"executor.{name} = {value!r}: expected {'an integer' if kind is int else 'a string'}.")
    options = SlurmOptions(**block)
    check_options(options, "executor.")
    return options


def check_options(options: SlurmOptions, prefix: str) -> None:
    """Refuse non-positive counts and times, naming ``<prefix><field>`` (``executor.`` or ``--slurm.``).

    Raises:
        ConfigError: naming the field.
    """
    for name in ("time", "gpus_per_task", "cpus_per_task", "array_parallelism"):
        value = getattr(options, name)
        if value is not None and value < (0 if name == "gpus_per_task" else 1):
            allowed = "0 or more" if name == "gpus_per_task" else "a positive integer"
            raise ConfigError(f"{prefix}{name} = {value!r}: {allowed}.")


def resolve_executor(kind: str, grid_block: dict[str, Any], cli: SlurmOptions | None) -> SlurmOptions | None:
    """Check the executor choice and its settings before anything is written or submitted.

    Args:
        kind: ``local`` or ``slurm``.
        grid_block: the grid's ``executor:`` block.
        cli: the command line's ``--slurm.*`` settings (they win over the grid's).

    Returns:
        The merged settings for ``slurm``; ``None`` for ``local``.

    Raises:
        ConfigError: an unknown executor, a bad field, submitit missing, no ``sbatch`` on this machine, or a
            partition or time limit the cluster refuses (:func:`~tapa_lab.ablation.scheduler.check_partition`).
    """
    if kind not in ("local", "slurm"):
        raise ConfigError(f"executor = {kind!r}: one of local, slurm.")
    options = grid_options(grid_block)  # checked even for local: a typo in the grid is a typo
    if cli is not None:
        check_options(cli, "--slurm.")
        options = options.merged(cli)
    cli = cli or SlurmOptions()
    if kind == "local":
        return None
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("executor = 'slurm' needs submitit: pip install 'tapa-lab[cluster]' "
                          "(or run the grid here with --executor local).")
    if shutil.which("sbatch") is None:
        raise ConfigError("executor = 'slurm': `sbatch` is not on PATH (not a SLURM login node?); "
                          "run the grid on this machine with --executor local.")
    time = options.submitit_parameters()["time"]
    check_partition(options.partition, time, _field("partition", cli, grid_block), _field("time", cli, grid_block))
    return options


def _field(name: str, cli: SlurmOptions, grid_block: dict[str, Any]) -> str:
    """How a message names setting ``name``: the grid's ``executor.<name>`` if the value came from there, else
    ``--slurm.<name>`` (set on the command line, or unset: where to set it)."""
    return f"executor.{name}" if getattr(cli, name) is None and name in grid_block else f"--slurm.{name}"
