"""``tapa-lab lm-eval`` end to end on a tiny run, offline: the rolling task's bits per byte against the lab's
non-overlapping perplexity, the needle tasks at multiples of the training length, and one-line errors (a task that
needs the network, a task that does not exist, lengths a task cannot use) that write nothing."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixture_run import FIXTURE_RUN, scalars

pytest.importorskip("lm_eval")
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: E402

from tapa_lab.__main__ import main  # noqa: E402
from tapa_lab.cli import run_lightning  # noqa: E402
from tapa_lab.eval.command import EvalData, eval_datamodule  # noqa: E402
from tapa_lab.eval.load import load_run  # noqa: E402

SEQ_LEN = 128
#: |lm-eval bits per byte - lab nll / ln 2| relative to the latter (docs/evaluation.md: lm-eval also scores each
#: document's first token and its tail, and its windows sit one token earlier; measured 0.15% and 0.02% here).
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 10-step RoPE run at L = 128 on the fixture corpus (its validation split is one 3541-byte document)."""
    folder = tmp_path_factory.mktemp("lm_eval_run")
    args = list(FIXTURE_RUN)
    args[args.index("--data.seq_len") + 1] = str(SEQ_LEN)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_lightning(["fit", *args, "--trainer.max_steps", "10", "--model.posenc", "tapa_lab.posenc.RoPE",
                       "--model.posenc.backend", "torch"])
        yield folder / "checkpoints" / "RoPE" / "version_0"


@pytest.fixture
def in_run(run, monkeypatch):
    monkeypatch.chdir(run.parents[2])
    return run


def _rolling_bits_per_byte(model: torch.nn.Module, document: np.ndarray, length: int, prefix: int) -> float:
    """The lab model's log-likelihood of ``document`` over lm-eval's rolling windows, in bits per token."""
    total = 0.0
    windows = get_rolling_token_windows(document.tolist(), prefix, length, 1)
    for context, continuation in map(make_disjoint_window, windows):
        tokens = torch.tensor([(context + continuation)[-(length + 1):][:-1]])
        with torch.inference_mode():
            log_probs = F.log_softmax(model(tokens).double(), -1)[0, -len(continuation):]
        total += float(log_probs.gather(1, torch.tensor(continuation)[:, None]).sum())
    return -total / len(document) / math.log(2)


@pytest.mark.slow
def test_rolling_bits_per_byte_agrees_with_the_lab_nonoverlapping_perplexity(in_run):
    main(["lm-eval", "--run", str(in_run), "--tasks", "[tapa_rolling]", "--multiples", "[1, 2]",
          "--data.split", "validation", "--device", "cpu"])
    main(["eval", "--run", str(in_run), "--perplexity.mode", "nonoverlapping", "--perplexity.multiples", "[1, 2]",
          "--perplexity.max_tokens", "100000", "--data.split", "validation", "--out_name", "eval-nonoverlapping",
          "--device", "cpu"])
    result = json.loads((in_run / "lm_eval" / "results.json").read_text())
    lab = json.loads((in_run / "eval-nonoverlapping" / "results.json").read_text())["perplexity"]
    assert [row["length"] for row in result["lengths"]] == [SEQ_LEN, 2 * SEQ_LEN]
    for row, lab_row in zip(result["lengths"], lab, strict=True):
        lab_bits = lab_row["nll"] / math.log(2)
        assert row["lab"]["tapa_rolling"]["bits_per_token"] == pytest.approx(lab_bits, rel=1e-9)
        metrics = row["metrics"]["tapa_rolling"]
        assert metrics["bits_per_byte"] == pytest.approx(lab_bits, rel=TOLERANCE)
        assert metrics["byte_perplexity"] == pytest.approx(2 ** metrics["bits_per_byte"], rel=1e-9)
        raw = json.loads((in_run / "lm_eval" / f"lm_eval_L{row['length']}.json").read_text())
        assert raw["results"]["tapa_rolling"]["bits_per_byte,none"] == metrics["bits_per_byte"]
    assert sorted(scalars(in_run, "lm_eval/tapa_rolling/bits_per_byte")) == [SEQ_LEN, 2 * SEQ_LEN]
    # Exactly: lm-eval's number is the lab model's log-likelihood over lm-eval's windows (prefix: end-of-document).
    loaded = load_run(in_run, "best", "cpu")
    document = eval_datamodule(loaded, EvalData(split="validation")).documents("validation")[0].astype(np.int64)
    expected = _rolling_bits_per_byte(loaded.model, document, SEQ_LEN, prefix=256)
    assert result["lengths"][0]["metrics"]["tapa_rolling"]["bits_per_byte"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_needle_tasks_run_at_multiples_of_the_training_length(in_run):
    main(["lm-eval", "--run", str(in_run), "--tasks", "[tapa_passkey]", "--multiples", "[1, 2]",
          "--needle.trials", "2", "--needle.depths", "[0, 100]", "--out_name", "lm_eval_passkey", "--device", "cpu"])
    main(["lm-eval", "--run", str(in_run), "--tasks", "[tapa_niah_single_1]", "--multiples", "[4, 8]",
          "--needle.trials", "1", "--needle.depths", "[50]", "--out_name", "lm_eval_niah", "--device", "cpu"])
    passkey = json.loads((in_run / "lm_eval_passkey" / "results.json").read_text())["lengths"]
    niah = json.loads((in_run / "lm_eval_niah" / "results.json").read_text())["lengths"]
    assert [r["length"] for r in passkey] == [128, 256] and [r["length"] for r in niah] == [512, 1024]
    for row, task in [*((r, "tapa_passkey") for r in passkey), *((r, "tapa_niah_single_1") for r in niah)]:
        assert 0.0 <= row["metrics"][task]["accuracy"] <= 1.0
    for length in (128, 256):
        assert (in_run / "lm_eval_passkey" / f"lm_eval_L{length}.json").is_file()
        assert (in_run / "lm_eval_passkey" / "tasks" / f"L{length}" / "tapa_passkey.yaml").is_file()
    # The same prompts through the lab's passkey evaluation (one forward, no generation) score the same.
    main(["eval", "--run", str(in_run), "--perplexity", "null", "--passkey",
          '{"lengths": [121, 249], "depths": [0, 100], "trials": 2}', "--out_name", "eval-passkey", "--device", "cpu"])
    lab = json.loads((in_run / "eval-passkey" / "results.json").read_text())["passkey"]
    assert [row["metrics"]["tapa_passkey"]["accuracy"] for row in passkey] == \
        pytest.approx([float(np.mean(cells)) for cells in lab["accuracy"]])


@pytest.mark.parametrize(("args", "field"), [
    (["--tasks", "[tapa_niah_single_1]", "--multiples", "[1]"], "multiples"),
    (["--tasks", "[tapa_rolling]", "--lengths", "[4000]", "--data.split", "validation"], "lengths"),
    (["--tasks", "[tapa_passkey]", "--needle.trials", "0"], "needle.trials"),
    (["--tasks", "[]"], "tasks"),
])
def test_lengths_or_settings_a_task_cannot_use_are_one_line_and_write_nothing(in_run, args, field, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lm-eval", "--run", str(in_run), "--out_name", "lm_eval_bad", *args])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tapa-lab: error: {field}") and len(error.splitlines()) == 1, error
    assert not (in_run / "lm_eval_bad").exists()


def test_a_missing_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lm-eval", "--run", str(tmp_path / "no_run")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("tapa-lab: error: run")


@pytest.mark.slow
@pytest.mark.parametrize(("task", "says"), [("hellaswag", "needs data that is not on this machine"),
                                            ("no_such_task_xyz", "are not lm-eval")])
def test_network_and_unknown_tasks_fail_fast_naming_the_offline_tasks(in_run, task, says, capsys):
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["lm-eval", "--run", str(in_run), "--tasks", f"[{task}]", "--out_name", "lm_eval_offline"])
    assert time.perf_counter() - start < 60  # lm-eval's task index takes ~10 s; no download is attempted
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and says in error, error
    assert "tapa_rolling" in error and "tapa_niah_single_1" in error and "tapa_passkey" in error
    assert not (in_run / "lm_eval_offline").exists()
