"""Corpus integrity: non-text files and malformed rows are named, equal paths are one corpus, killed prepares leave
nothing behind for long, and a damaged token cache is noticed and rebuilt."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from tapa_lab.data import ByteTokenizer, Fixture, LocalFiles, pack_corpus
from tapa_lab.data.atomic import temporary_sibling
from tapa_lab.errors import ConfigError


def test_a_binary_file_named_txt_is_refused_naming_it(tmp_path, write_files):
    folder = write_files(tmp_path / "src", {"good.txt": "plain text " * 20})
    (folder / "program.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=r"program\.txt is not a text file \(it holds NUL bytes\).*skip_binary"):
        LocalFiles([str(folder)]).prepare(tmp_path / "data")


def test_mostly_invalid_utf8_is_refused_and_skip_binary_leaves_such_files_out(tmp_path, write_files):
    folder = write_files(tmp_path / "src", {"good.txt": "plain text " * 20})
    (folder / "latin.txt").write_bytes(bytes(range(0x80, 0x100)) * 4)
    with pytest.raises(ConfigError, match=r"latin\.txt is not a text file \(it is \d+% invalid UTF-8\)"):
        LocalFiles([str(folder)]).prepare(tmp_path / "data")
    with pytest.warns(UserWarning, match=r"left out 1 file\(s\) that are not text: .*latin\.txt"):
        manifest = LocalFiles([str(folder)], skip_binary=True).prepare(tmp_path / "data")
    assert [entry.id for entry in manifest.documents] == ["good.txt"]


def test_a_malformed_jsonl_line_names_the_file_and_the_line(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "first"}\n\n{"text": "second",\n{"text": "third"}\n')
    with pytest.raises(ConfigError, match=r"rows\.jsonl line 3 is not valid JSON"):
        LocalFiles([str(rows)]).prepare(tmp_path / "data")


def test_folder_with_and_without_trailing_slash_is_one_corpus(tmp_path, write_files):
    folder = write_files(tmp_path / "src", {"a.txt": "alpha", "b/c.txt": "gamma"})
    plain, slashed, dotted = (LocalFiles([entry]) for entry in (str(folder), f"{folder}/", f"{folder}/./"))
    assert plain.name == slashed.name == dotted.name and plain.recipe() == slashed.recipe() == dotted.recipe()


def temporary_of(pid: int, folder) -> os.PathLike:
    """A prepare's temporary folder name beside ``folder/fixture``, as written by process ``pid`` of this host."""
    name = temporary_sibling(folder / "fixture").name.replace(f"-{os.getpid()}-", f"-{pid}-")
    return folder / name


def exited_pid() -> int:
    """The pid of a child process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_next_prepare_removes_temporaries_of_killed_prepares_only(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    killed, running = temporary_of(exited_pid(), data), temporary_of(os.getppid(), data)
    legacy_old, legacy_new = data / f".fixture.{'a' * 32}.tmp", data / f".fixture.{'b' * 32}.tmp"
    for folder in (killed, legacy_old, legacy_new, running):
        (folder / "cache").mkdir(parents=True)
        (folder / "documents.jsonl").write_text("partial")
    hours_ago = time.time() - 2 * 3600
    for path in (legacy_old, legacy_old / "cache", legacy_old / "documents.jsonl"):
        os.utime(path, (hours_ago, hours_ago))
    Fixture().prepare(data)
    assert not killed.exists() and not legacy_old.exists()
    assert legacy_new.exists() and running.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_token_cache_is_noticed_and_rebuilt(damage, data_dir):
    packed = pack_corpus(Fixture(), ByteTokenizer(), data_dir, 0.05, 0.05)
    original = np.array(packed.tokens("train"))
    path = packed.directory / "train.bin"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[100:104] = bytes(255 - b for b in data[100:104])
        time.sleep(0.01)  # a new modification time, as any write makes
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"token cache .* is damaged \(train\.bin"):
        rebuilt = pack_corpus(Fixture(), ByteTokenizer(), data_dir, 0.05, 0.05)
    assert rebuilt.directory == packed.directory
    assert np.array_equal(np.array(rebuilt.tokens("train")), original)


def test_an_intact_token_cache_is_reused_without_rebuilding(data_dir, recwarn):
    first = pack_corpus(Fixture(), ByteTokenizer(), data_dir, 0.05, 0.05)
    stamp = (first.directory / "meta.json").stat().st_mtime_ns
    second = pack_corpus(Fixture(), ByteTokenizer(), data_dir, 0.05, 0.05)
    assert (second.directory / "meta.json").stat().st_mtime_ns == stamp
    assert not [w for w in recwarn if "damaged" in str(w.message)]


def test_a_damaged_prepared_corpus_is_noticed_and_prepared_again(tmp_path):
    manifest = Fixture().prepare(tmp_path / "data")
    documents = manifest.directory / "documents.jsonl"
    data = bytearray(documents.read_bytes())
    data[50:52] = b"##"
    time.sleep(0.01)
    documents.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"prepared corpus .* is damaged \(documents\.jsonl does not match"):
        again = Fixture().prepare(tmp_path / "data")
    assert again.hash == manifest.hash and documents.read_bytes() != bytes(data)
