"""The decoding benchmark runs on CPU with and without the KV cache, agrees on the tokens, and refuses bad input in
one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapa_lab.__main__ import main

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "experiments" / "model" / "tiny.yaml")


def test_bench_decode_writes_cached_and_uncached_rates(tmp_path):
    main(["bench", "decode", "--model_config", TINY,
          "--posencs", f"[{REPO / 'experiments/posenc/rope.yaml'}, tapa_lab.posenc.TAPA]", "--multiples", "[0.25, 0.5]",
          "--new_tokens", "3", "--device", "cpu", "--clock", "cpu", "--out_dir", str(tmp_path)])
    results = json.loads((tmp_path / "decode.json").read_text())["results"]
    assert [(r["posenc"], r["prompt"]) for r in results] == [("rope", 32), ("tapa", 32), ("rope", 64), ("tapa", 64)]
    assert all(r["cached_tokens_per_s"] > 0 and r["uncached_tokens_per_s"] > 0 for r in results)
    assert all(r["same_tokens"] for r in results)  # the cache changes the speed, never the greedy tokens
    table = (tmp_path / "decode.md").read_text()
    assert "| tapa | 0.5 | 64 |" in table and "uncached tok/s" in table


@pytest.mark.parametrize(("args", "field"), [
    (["--new_tokens", "1"], "new_tokens"),
    (["--multiples", "[0]"], "multiples"),
    (["--run", "no/such/run"], "run"),
    (["--posencs", "[tapa_lab.posenc.NoSuchPE]"], "posencs"),
])
def test_bench_decode_bad_input_is_one_line_naming_the_field(args, field, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "decode", "--model_config", TINY, "--out_dir", str(tmp_path), *args])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tapa-lab: error: {field}") and len(error.splitlines()) == 1, error
    assert not (tmp_path / "decode.json").exists()
