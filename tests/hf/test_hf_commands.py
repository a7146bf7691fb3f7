"""``tapa-lab export`` and ``tapa-lab generate`` on a real (10-step) fit run: the exported folder opens with
transformers' Auto classes and trust_remote_code in a fresh process and gives the run's logits; generate streams the
greedy continuation; bad input is one line, exit code 2, nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixture_run import FIXTURE_RUN

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning
from tapa_lab.data import ByteTokenizer
from tapa_lab.eval.load import load_run
from tapa_lab.model import KVCache

PROMPT = "To be, or not"
REOPEN = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt, out = sys.argv[1:]
assert "tapa_lab.hf.modeling" not in sys.modules
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
ids = torch.tensor([tokenizer(prompt)["input_ids"]])
with torch.no_grad():
    torch.save({"ids": ids, "logits": model(ids).logits, "type": type(model).__name__}, out)
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 10-step TAPA run with learnable alpha on the fixture corpus (byte tokenizer), in a temporary cwd."""
    folder = tmp_path_factory.mktemp("hf_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_lightning(["fit", *FIXTURE_RUN, "--trainer.max_steps", "10", "--model.posenc", "tapa_lab.posenc.TAPA",
                       "--model.posenc.learnable_alpha", "true", "--model.posenc.backend", "torch"])
    return folder / "checkpoints" / "TAPA" / "version_0"


@torch.no_grad()
def greedy_ids(run: Path, prompt: str, max_new_tokens: int) -> list[int]:
    model = load_run(run, "best").model.model
    tokenizer = ByteTokenizer()
    cache = KVCache()
    logits = model(torch.from_numpy(tokenizer.encode(prompt))[None], cache=cache)
    out = []
    for _ in range(max_new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        out.append(token.item())
        if token.item() == tokenizer.eod_id:
            break
        logits = model(token, cache=cache)
    return out


@pytest.mark.slow
def test_export_opens_in_a_fresh_process_with_remote_code_and_gives_the_run_logits(run_dir, tmp_path):
    out = tmp_path / "exported"
    main(["export", "--run", str(run_dir), "--out", str(out)])
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "modeling_tapa_lab.py"} <= {
        p.name for p in out.iterdir()}
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", REOPEN, str(out), PROMPT, str(tmp_path / "logits.pt")], check=True, env=env)
    reopened = torch.load(tmp_path / "logits.pt")
    assert reopened["type"] == "TapaLabForCausalLM"
    assert reopened["ids"][0].tolist() == ByteTokenizer().encode(PROMPT).tolist()
    with torch.no_grad():
        expected = load_run(run_dir, "best").model(reopened["ids"])
    torch.testing.assert_close(reopened["logits"], expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_generate_streams_the_greedy_continuation(run_dir, capsys):
    main(["generate", "--run", str(run_dir), "--prompt", PROMPT, "--max_new_tokens", "12"])
    printed = capsys.readouterr().out
    expected = ByteTokenizer().decode(greedy_ids(run_dir, PROMPT, 12))
    assert printed.strip("\n") == PROMPT + expected


@pytest.mark.slow
@pytest.mark.parametrize("case", ["export-no-checkpoint", "generate-no-run", "generate-bad-prompt"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, run_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    if case == "export-no-checkpoint":
        bare = tmp_path / "bare_run"
        bare.mkdir()
        shutil.copy(run_dir / "config.yaml", bare / "config.yaml")
        args, field = ["export", "--run", str(bare), "--out", str(out)], "checkpoint"
    elif case == "generate-no-run":
        args, field = ["generate", "--run", str(tmp_path / "no_such_run"), "--prompt", PROMPT], "run"
    else:
        args, field = ["generate", "--run", str(run_dir), "--prompt", "bad \udcff byte"], "prompt"
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and field in err
    assert not out.exists()
