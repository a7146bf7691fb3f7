"""What the SLURM scheduler itself says, through its command-line tools (``squeue``, ``sacct``, ``sinfo``; no submitit).

A job's state comes from ``squeue`` while the controller knows the job (queued, running, and ``MinJobAge`` seconds
after it ended), else from ``sacct`` where the cluster keeps accounting; a job that neither knows any more is
:data:`ENDED`. Many clusters (and the one-node cluster of ``tests/cluster/slurm.sh``) have no accounting, so ``sacct``
alone cannot tell a queued job from a finished one.

Before anything is submitted, :func:`check_partition` refuses a partition the cluster does not have and a time limit
over the partition's ``MaxTime`` (SLURM's default ``EnforcePartLimits=NO`` would queue such a job forever).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from tapa_lab.errors import ConfigError

#: The state of a job the controller has forgotten and no accounting remembers: it ended, how is unknown.
ENDED = "ENDED"
#: Seconds a query may take before the scheduler counts as unreachable.
QUERY_TIMEOUT_S = 30
_TIME = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)")


@dataclass(frozen=True)
class Partition:
    """One partition as ``sinfo`` lists it."""

    name: str
    max_minutes: float | None
    """Its ``MaxTime`` in minutes (``None``: infinite)."""
    default: bool


def _query(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a SLURM client; ``None`` when it is not installed or does not return in time."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def job_state(job_id: str) -> str | None:
    """The SLURM state of a job or array task (``123`` or ``123_4``): ``PENDING``, ``RUNNING``, ``COMPLETED``, ...,
    :data:`ENDED`, or ``None`` when the scheduler cannot be asked (no ``squeue``, the controller does not answer)."""
    queue = _query(["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T"])
    if queue is None:
        return None
    states = queue.stdout.split()
    if queue.returncode == 0 and states:
        return states[0]
    if queue.returncode != 0 and "Invalid job id" not in queue.stderr:
        return None  # the controller did not answer
    accounted = _query(["sacct", "--noheader", "--parsable2", "--allocations", "--format=State", f"--jobs={job_id}"])
    if accounted is not None and accounted.returncode == 0 and accounted.stdout.split():
        return accounted.stdout.splitlines()[-1].split()[0]  # "CANCELLED by 0" -> CANCELLED
    return ENDED


def partitions() -> list[Partition] | None:
    """The cluster's partitions (``sinfo``), or ``None`` when ``sinfo`` is not installed.

    Raises:
        ConfigError: ``sinfo`` fails (the controller does not answer), with its last line.
    """
    if shutil.which("sinfo") is None:
        return None
    listing = _query(["sinfo", "--noheader", "--format=%P|%l"])
    if listing is None or listing.returncode != 0:
        last = (listing.stderr.strip().splitlines() or ["timed out"])[-1] if listing is not None else "timed out"
        raise ConfigError(f"executor = 'slurm': the SLURM controller does not answer (sinfo: {last}).")
    found: dict[str, Partition] = {}
    for line in listing.stdout.splitlines():
        name, _, limit = line.strip().partition("|")
        if name:
            found[name.rstrip("*")] = Partition(name.rstrip("*"), parse_minutes(limit), name.endswith("*"))
    return list(found.values())


def parse_minutes(limit: str) -> float | None:
    """``sinfo``'s ``%l`` (``30:00``, ``1:00:00``, ``2-00:00:00``, ``infinite``) in minutes; ``None``: no limit."""
    match = _TIME.fullmatch(limit.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return days * 1440 + hours * 60 + minutes + seconds / 60


def check_partition(partition: str | None, time: int, partition_field: str, time_field: str) -> None:
    """Refuse a partition the cluster lacks, and a time limit over the partition's ``MaxTime``, before submitting.

    Nothing is checked where ``sinfo`` is not installed (submission then reports what SLURM refuses).

    Args:
        partition: the partition asked for (``None``: the cluster's default partition).
        time: the time limit of one task, in minutes.
        partition_field, time_field: how the message names each setting (``--slurm.time``, ``executor.time``, ...).

    Raises:
        ConfigError: one line naming the field and what the cluster allows.
    """
    known = partitions()
    if known is None:
        return
    names = ", ".join(p.name for p in known) or "(none)"
    chosen = [p for p in known if (p.name == partition if partition is not None else p.default)]
    if not chosen:
        if partition is None:
            raise ConfigError(f"{partition_field} is unset and this cluster has no default partition; one of: {names}.")
        raise ConfigError(f"{partition_field} = {partition!r}: not a partition of this cluster; one of: {names}.")
    limit = chosen[0].max_minutes
    if limit is not None and time > limit:
        raise ConfigError(f"{time_field} = {time}: partition {chosen[0].name!r} allows at most {limit:g} minutes "
                          "(its MaxTime).")
