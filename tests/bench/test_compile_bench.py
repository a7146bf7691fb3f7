"""``tapa-lab bench compile`` compiles on CPU for a GPU target and writes its tables, and refuses bad input in one
line."""

from __future__ import annotations

import json

import pytest

from tapa_lab.__main__ import main


def test_bench_compile_writes_the_table_and_summary(tmp_path):
    main(["bench", "compile", "--kernels", "[rope]", "--targets", "[90]", "--head_dims", "[64]", "--dtypes", "[fp16]",
          "--workers", "1", "--out_dir", str(tmp_path)])
    payload = json.loads((tmp_path / "compile.json").read_text())
    assert payload["cases"] == 3 and payload["cpu_s"] > 0
    assert {r["variant"] for r in payload["results"]} == {"forward", "backward", "partial"}
    assert all(r["fits"] and r["ptx_target"] == "sm_90a" and r["regs"] > 0 for r in payload["results"])
    assert (tmp_path / "compile.md").read_text().count("| rope |") == 3
    assert "| rope | sm_90 | 64 | 3 | 0 |" in (tmp_path / "compile_summary.md").read_text()
    assert len((tmp_path / "compile.partial.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(("args", "field"), [
    (["--kernels", "[attention]"], "kernels"),
    (["--targets", "[75]"], "targets"),
    (["--dtypes", "[fp8]"], "dtypes"),
    (["--workers", "0"], "workers"),
])
def test_bench_compile_bad_input_is_one_line_naming_the_field(args, field, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "compile", "--out_dir", str(tmp_path), *args])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tapa-lab: error: {field}") and len(error.splitlines()) == 1, error
    assert not (tmp_path / "compile.json").exists()
