"""Records of the files of a cache (size, modification time, SHA-256), so a truncated or altered file is noticed.

Checking is cheap when nothing changed: a file whose size and modification time match its record is trusted; one
whose time differs is hashed and compared, and one whose size differs is corrupt.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def record_files(directory: Path, names: list[str]) -> dict[str, dict]:
    """``{name: {"bytes", "mtime_ns", "sha256"}}`` of the files ``names`` in ``directory``."""
    records = {}
    for name in names:
        stat = (directory / name).stat()
        records[name] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(directory / name)}
    return records


def damaged_files(directory: Path, records: dict[str, dict]) -> list[str]:
    """The recorded files of ``directory`` that are missing or differ from their record, each with the reason."""
    damaged = []
    for name, record in records.items():
        path = directory / name
        if not path.is_file():
            damaged.append(f"{name} is missing")
            continue
        stat = path.stat()
        if stat.st_size != record["bytes"]:
            damaged.append(f"{name} has {stat.st_size} bytes, {record['bytes']} recorded")
        elif stat.st_mtime_ns != record["mtime_ns"] and sha256_file(path) != record["sha256"]:
            damaged.append(f"{name} does not match its recorded SHA-256")
    return damaged
