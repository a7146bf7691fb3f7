"""Cell processes that cannot outlive the runner, and the lock that gives each cell one owner at a time.

A ``tapa-lab fit`` or ``eval`` child is started in its own process group, and on Linux with a parent-death signal
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``): when the runner is killed, even by ``kill -9``, the kernel kills the child.
The signal follows the *thread* that started the child; each child is started and waited on by the same worker
thread, which lives as long as the child does. When the runner stops on an exception (Ctrl-C included, or submitit
exiting after a requeue), it stops its children's process groups (SIGTERM, then SIGKILL) before it re-raises.

A cell is owned through an exclusive ``fcntl.flock`` on ``cells/<id>/lock``, held by the runner (its child dies
with it), which the kernel drops when the runner dies, however it dies. The descriptor is not passed to the child:
the child's own forks (DataLoader workers) outlive it by a few seconds and would keep the lock. Another runner that
finds the lock taken skips the cell and says who owns it; it never trains a cell that is being trained.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from tapa_lab.ablation.layout import LOCK_FILE

PR_SET_PDEATHSIG = 1
#: Seconds a stopped child gets to exit after SIGTERM before SIGKILL (SLURM's time-out warning comes 90 s ahead).
GRACE_S = 30.0
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()


class CellBusy(RuntimeError):
    """Another process owns the cell (its lock is held)."""

    def __init__(self, cell_id: str, pid: int | None):
        super().__init__(f"cell {cell_id} is being trained by pid {pid if pid is not None else '(unknown)'}")
        self.pid = pid


class CellLock:
    """The held lock of one cell: an open descriptor on ``cells/<id>/lock`` and the pids recorded in it."""

    def __init__(self, fd: int, path: Path):
        self.fd = fd
        self.path = path

    def record(self, child: int | None = None) -> None:
        """Write the owner's pid (and its current child's) into the lock file, for whoever finds it taken."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "child": child}).encode(), 0)


@contextlib.contextmanager
def own_cell(folder: Path) -> Iterator[CellLock]:
    """Hold the cell's lock for the block.

    Raises:
        CellBusy: the lock is held by another process (named by its pid).
    """
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CellBusy(folder.name, lock_owner(folder)) from None
    lock = CellLock(fd, path)
    try:
        lock.record()
        yield lock
    finally:
        os.close(fd)


def lock_held(folder: Path) -> bool:
    """Whether some process holds the cell's lock now."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def lock_owner(folder: Path) -> int | None:
    """The pid recorded in a cell's lock file (the runner that owns or last owned the cell), if readable."""
    try:
        return int(json.loads((folder / LOCK_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lab_process(args: list[str], log: Path, threads: int, lock: CellLock | None = None) -> int:
    """Run ``python -m tapa_lab <args>`` with ``threads`` torch threads, appending its output to ``log``; the child
    dies with this process, and its pid is recorded in ``lock``.

    Returns:
        The child's exit code (negative: killed by that signal).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with log.open("a") as stream:
        stream.write(f"\n$ tapa-lab {' '.join(args)}  [{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC]\n")
        stream.flush()
        child = subprocess.Popen([sys.executable, "-m", "tapa_lab", *args], stdout=stream, stderr=subprocess.STDOUT,
                                 env=env, preexec_fn=_die_with(os.getpid()))
        with _CHILDREN_LOCK:
            _CHILDREN.add(child)
        try:
            if lock is not None:
                lock.record(child.pid)
            return child.wait()
        except BaseException:  # Ctrl-C, or submitit exiting after a requeue: stop the child before leaving
            _stop_group(child)
            raise
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(child)


def kill_children(grace_s: float = GRACE_S) -> None:
    """Stop every running child: SIGTERM to its process group, SIGKILL after ``grace_s`` seconds."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN)
    for child in children:
        _signal_group(child, signal.SIGTERM)
    for child in children:
        _stop_group(child, grace_s)


def _stop_group(child: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    _signal_group(child, signal.SIGTERM)
    try:
        child.wait(grace_s)
    except subprocess.TimeoutExpired:
        _kill_group(child)


def _die_with(parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec: a process group of its own, SIGUSR2 ignored (SLURM's time-out
    warning, which submitit acts on in the parent), and (Linux) SIGKILL from the kernel when its parent dies."""

    def detach_but_die_with_parent() -> None:
        os.setpgid(0, 0)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl: the signal will never come
                os._exit(1)

    return detach_but_die_with_parent


def _kill_group(child: subprocess.Popen) -> None:
    _signal_group(child, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(5)


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)
