"""The training-throughput benchmark runs end to end on CPU, takes PE fragments or class paths, and refuses bad input
in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapa_lab.__main__ import main
from tapa_lab.bench.training import posenc_of

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "experiments" / "model" / "tiny.yaml")


def test_bench_training_writes_json_and_markdown(tmp_path):
    main(["bench", "training", "--model_config", TINY,
          "--posencs", f"[{REPO / 'experiments/posenc/rope.yaml'}, tapa_lab.posenc.TAPA]", "--seq_lens", "[32]",
          "--tokens_per_batch", "64", "--steps", "1", "--warmup_steps", "0", "--out_dir", str(tmp_path)])
    results = json.loads((tmp_path / "training.json").read_text())["results"]
    assert [(r["posenc"], r["seq_len"], r["batch_size"]) for r in results] == [("rope", 32, 2), ("tapa", 32, 2)]
    assert all(r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["step_spread_pct"] >= 0 for r in results)
    table = (tmp_path / "training.md").read_text()
    assert "| tapa | 32 | 2 |" in table and "x RoPE" in table and "spread %" in table


def test_a_fragment_stem_names_the_fragment():
    """``--posencs '[rope, tapa]'`` (the stems) is the same as the fragments' paths."""
    assert posenc_of("tapa") == posenc_of("experiments/posenc/tapa.yaml")
    assert posenc_of("rope-yarn")[1]["class_path"] == posenc_of("experiments/posenc/rope-yarn.yaml")[1]["class_path"]


@pytest.mark.parametrize(("args", "field"), [
    (["--posencs", "[experiments/posenc/no-such-pe.yaml]"], "posencs"),
    (["--posencs", "[tapa_lab.posenc.NoSuchPE]"], "posencs"),
    (["--posencs", "[ropee]"], "posencs"),
    (["--model_config", "experiments/model/no-such.yaml"], "model_config"),
    (["--device", "tpu"], "device"),
])
def test_bench_training_bad_input_is_one_line_naming_the_field(args, field, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "training", "--model_config", TINY, "--out_dir", str(tmp_path), *args])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tapa-lab: error: {field}") and len(error.splitlines()) == 1, error


@pytest.mark.slow
def test_bench_training_compiled_runs_and_says_so(tmp_path):
    main(["bench", "training", "--model_config", TINY, "--posencs", "[tapa_lab.posenc.TAPA]", "--seq_lens", "[32]",
          "--tokens_per_batch", "64", "--steps", "1", "--warmup_steps", "1", "--compile", "true",
          "--out_dir", str(tmp_path)])
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["machine"].endswith("tiny model, compiled")
    assert [(r["posenc"], r["seq_len"]) for r in record["results"]] == [("tapa", 32)]
    assert record["results"][0]["tokens_per_s"] > 0


def test_bench_training_compile_without_warmup_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "training", "--model_config", TINY, "--compile", "true", "--warmup_steps", "0",
              "--out_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("tapa-lab: error: warmup_steps")
