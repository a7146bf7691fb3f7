"""Atomic writes: a file or a whole folder appears complete or not at all, so an interrupted prepare never leaves a
corrupt cache behind (write into a temporary sibling, then rename it into place).

Temporary siblings are hidden and named ``.<name>.<host>-<pid>-<random>.tmp`` (``.old`` for a replaced folder on its
way out). A process killed mid-write leaves its sibling behind; :func:`remove_stale_temporaries` removes those whose
process is dead (same host) or, for other hosts, that have not changed for an hour.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_AFTER_S = 3600.0
_TEMPORARY = re.compile(r"\..+\.(?P<host>[^.]*)-(?P<pid>\d+)-[0-9a-f]{8}\.(tmp|old)")
_UNKNOWN_WRITER = re.compile(r"\..+\.[0-9a-f]{32}\.(tmp|old)")  # named before writers were recorded


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def temporary_sibling(path: Path, suffix: str = "tmp") -> Path:
    """A fresh hidden name beside ``path`` that records this host and process."""
    return path.with_name(f".{path.name}.{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` and everything under it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def remove_stale_temporaries(folder: Path, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary siblings in ``folder`` left by killed writers; return what was removed.

    A temporary of this host is stale when its process no longer exists; one of another host (or of an unknown
    writer) when nothing in it changed for ``stale_after_s`` seconds.
    """
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None and _UNKNOWN_WRITER.fullmatch(entry.name) is None:
            continue
        try:
            if match is not None and match["host"] == _host():
                stale = int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"]))
            else:
                stale = time.time() - _last_change(entry) > stale_after_s
            if not stale:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except FileNotFoundError:  # removed by another process meanwhile
            continue
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``path`` when the block ends without an error.

    An existing ``path`` is replaced. If the block raises, the temporary folder is removed and ``path`` is untouched.
    Stale temporaries of killed writers beside ``path`` are removed first.

    Yields:
        The temporary folder to fill.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = temporary_sibling(path, "old")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created if missing) for the block; other processes wait.

    Two processes preparing the same corpus or token cache at once (the workers of a grid, the ranks of a DDP run)
    take turns: the second finds the first one's result and reuses it, instead of replacing the folder the first
    one is still writing into.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
