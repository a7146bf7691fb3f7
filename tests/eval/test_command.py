"""``tapa-lab eval`` end to end on a fixture run: results.json as the ablation runner reads it, plots, TensorBoard,
the YAML configs, and clear errors before any work on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixture_run import FIXTURE_RUN, scalars

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
PASSKEY = '{"lengths": [96, 128], "depths": [0, 100], "trials": 2}'
BIAS = ('{"multiple": 4, "windows": 1, "pairs": 100, "moment_pairs": 100, "short_range": [0, 10], '
        '"long_range_width": 10}')


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory):
    """A 10-step RoPE run and a 10-step TAPA run of the same shapes on the fixture corpus, in a temporary cwd."""
    folder = tmp_path_factory.mktemp("eval_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for pe in ("RoPE", "TAPA"):
            run_lightning(["fit", *FIXTURE_RUN, "--trainer.max_steps", "10", "--model.posenc", f"tapa_lab.posenc.{pe}",
                           "--model.posenc.backend", "torch"])
        yield folder


@pytest.fixture
def in_runs(fixture_runs, monkeypatch):
    monkeypatch.chdir(fixture_runs)
    return fixture_runs


def test_eval_writes_results_plots_and_tensorboard(in_runs):
    run = in_runs / "checkpoints" / "RoPE" / "version_0"
    main(["eval", "--run", str(run), "--perplexity.multiples", "[1, 2, 4]", "--perplexity.max_tokens", "256",
          "--passkey", PASSKEY, "--bias", BIAS, "--data.split", "validation", "--out_name", "eval-all"])
    out = run / "eval-all"
    result = json.loads((out / "results.json").read_text())
    assert result["checkpoint"].endswith(".ckpt") and "best-" in result["checkpoint"]
    assert result["train_seq_len"] == 32
    assert result["protocol"]["split"] == "validation" and result["protocol"]["perplexity"]["mode"] == "sliding"
    assert [r["length"] for r in result["perplexity"]] == [32, 64, 128]
    for row in result["perplexity"]:
        assert set(row) >= {"length", "multiple", "perplexity", "nll", "tokens", "mode", "stride"}
        assert row["tokens"] == 256 and row["mode"] == "sliding" and row["stride"] == row["length"] // 2
        assert row["perplexity"] == pytest.approx(2.718281828459045 ** row["nll"])
    assert [c["length"] for c in result["position_loss"]] == [32, 64, 128]
    assert len(result["position_loss"][0]["loss"]) == 16 and len(result["position_loss"][0]["bucket_edges"]) == 17
    passkey = result["passkey"]
    assert passkey["lengths"] == [96, 128] and passkey["depths"] == [0, 100] and passkey["trials"] == 2
    assert len(passkey["accuracy"]) == 2 and len(passkey["accuracy"][0]) == 2
    assert 0 <= passkey["mean_accuracy"] <= 1
    assert result["bias"]["length"] == 128 and len(result["bias"]["layers"]) == 1
    for png in ("perplexity", "position_loss", "passkey", "bias_histograms", "bias_moments"):
        assert (out / f"{png}.png").stat().st_size > 0, png
    assert sorted(scalars(run, "eval-all/perplexity")) == [32, 64, 128]


def test_eval_reads_a_shipped_yaml_config(in_runs):
    run = in_runs / "checkpoints" / "TAPA" / "version_0"
    main(["eval", "--run", str(run), "--config", str(EXPERIMENTS / "eval" / "nonoverlapping.yaml"),
          "--perplexity.multiples", "[1, 4]", "--perplexity.max_tokens", "128", "--checkpoint", "last"])
    result = json.loads((run / "eval-nonoverlapping" / "results.json").read_text())
    assert [r["mode"] for r in result["perplexity"]] == ["nonoverlapping"] * 2
    assert [r["stride"] for r in result["perplexity"]] == [None, None]
    assert result["passkey"] is None and result["bias"] is None
    assert result["checkpoint"].endswith("last.ckpt")


def test_eval_phase_analysis_of_a_tapa_run(in_runs):
    run = in_runs / "checkpoints" / "TAPA" / "version_0"
    main(["eval", "--run", str(run), "--perplexity", "null", "--phase", '{"multiple": 2, "windows": 2, "pairs": 300}',
          "--data.split", "validation", "--out_name", "eval-phase"])
    out = run / "eval-phase"
    phase = json.loads((out / "results.json").read_text())["phase"]
    assert phase["length"] == 64 and phase["pairs"] == 300 and len(phase["layers"]) == 1
    heads = phase["layers"][0]["heads"]
    assert len(heads) == 2  # the fixture run's n_heads
    for head in heads:
        assert sum(head["turn_histogram"]) == 300
        quantiles = head["turn_quantiles"]
        assert 0 <= quantiles["10%"] <= quantiles["50%"] <= quantiles["90%"]
        assert 0 <= head["contrast_mean"] <= 2 and 0 <= head["sensitive_fraction"] <= 1
    assert (out / "phase_turn.png").stat().st_size > 0
    assert sorted(scalars(run, "eval-phase/phase_turn_median/layer0")) == [0, 1]


def _foreign_checkpoint(folder: Path) -> Path:
    """A checkpoint outside any run folder whose attention projections have other shapes."""
    state = torch.load(folder / "checkpoints" / "RoPE" / "version_0" / "checkpoints" / "last.ckpt",
                       weights_only=False)
    state["state_dict"]["model.blocks.0.attn.wq.weight"] = torch.zeros(64, 32)
    path = folder / "foreign.ckpt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(("args", "field"), [
    (["--perplexity.stride", "64"], "perplexity.stride"),
    (["--perplexity.lengths", "[100000]"], "perplexity.lengths"),
    (["--perplexity", "null", "--passkey", '{"lengths": [128], "depths": [0, 150]}'], "passkey.depths"),
    (["--perplexity", "null", "--bias", '{"multiple": 1000}'], "bias.multiple"),
    (["--perplexity", "null", "--phase", "{}"], "phase: the phase analysis needs a TAPA-family PE"),
    (["--checkpoint", "no/such.ckpt"], "checkpoint"),
    (["--checkpoint", "FOREIGN"], "checkpoint = "),
    (["--checkpoint", "checkpoints/TAPA/version_0/checkpoints/last.ckpt"], "model.posenc"),
    (["--run", "checkpoints/none"], "run = "),
], ids=["stride", "length", "depth", "bias-length", "phase-rope", "missing-ckpt", "shapes", "posenc", "run"])
def test_bad_input_is_a_clear_error_before_any_work(in_runs, capsys, args, field):
    run = in_runs / "checkpoints" / "RoPE" / "version_0"
    args = [str(_foreign_checkpoint(in_runs)) if a == "FOREIGN" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--run", str(run), *args, "--out_name", "eval-bad"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert field in error, error
    assert not (run / "eval-bad").exists()
