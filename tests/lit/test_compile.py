"""``model.compile``: the decoder compiles as one graph (the lab's kernels are custom ops) and trains like eager."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixture_run import scalars

from tapa_lab.__main__ import main
from tapa_lab.cli import run_lightning

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
STEPS = 10
PES = {
    "RoPE": ["--model.posenc", "tapa_lab.posenc.RoPE"],
    "TAPA": ["--model.posenc", "tapa_lab.posenc.TAPA", "--model.posenc.learnable_alpha", "true"],
}


def _fit(args: list[str], pe: str, root: Path, version: int) -> tuple[dict[int, float], dict[str, torch.Tensor]]:
    """Train ``pe`` for STEPS fixture steps (no validation); the run's ``{step: train/loss}`` and final weights."""
    run_lightning(["fit", *args, "--trainer.max_steps", str(STEPS), "--trainer.limit_val_batches", "0", *PES[pe]])
    run = root / "checkpoints" / pe / f"version_{version}"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return scalars(run, "train/loss"), state


@pytest.mark.slow
@pytest.mark.parametrize(("pe", "backend", "rtol"), [("TAPA", "inductor", 1e-4), ("RoPE", "aot_eager", 1e-6)])
def test_compiled_model_trains_to_the_eager_losses(pe, backend, rtol, in_tmp, fixture_run):
    """With ``fullgraph`` (no graph break anywhere in the decoder), 10 steps of the fixture run give the eager losses
    at every step and the same weights, TAPA's learnable alpha included (its gradient flows through the custom op's
    registered autograd).

    Inductor (TAPA, the custom-op path): rtol 1e-4, not exact: inductor fuses the elementwise ops and reductions
    (RMSNorm, SwiGLU, the loss) and sums in another order, so each step differs in the last bits of fp32 (about 1e-7
    relative, measured) and AdamW carries that into the next steps. aot_eager (RoPE; Dynamo and AOTAutograd capture,
    eager kernels, so the test stays short on CPU, where inductor compiles for about a minute): the same ops run, so
    rtol 1e-6 (fp32 rounding).
    """
    eager, eager_state = _fit(fixture_run, pe, in_tmp, 0)
    compile_args = ["--model.compile.enabled", "true", "--model.compile.backend", backend,
                    "--model.compile.fullgraph", "true"]
    compiled, compiled_state = _fit([*fixture_run, *compile_args], pe, in_tmp, 1)
    assert sorted(compiled) == sorted(eager) == list(range(STEPS))
    assert [compiled[s] for s in range(STEPS)] == pytest.approx([eager[s] for s in range(STEPS)], rel=rtol)
    assert eager[STEPS - 1] < eager[0]
    assert compiled_state.keys() == eager_state.keys()  # compiled in place: no _orig_mod prefix in checkpoints
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-3, atol=1e-5, msg=name)
    alphas = [name for name in eager_state if name.endswith("log_alpha")]
    assert alphas if pe == "TAPA" else not alphas
    for name in alphas:  # alpha learned (moved from its initial log 0.1) in both runs
        assert not torch.allclose(eager_state[name], torch.full_like(eager_state[name], torch.tensor(0.1).log()))


def test_compile_preset_compiles_the_decoder(in_tmp):
    cli = run_lightning(["--config", str(EXPERIMENTS / "model" / "tiny-compile.yaml"), "--trainer.accelerator", "cpu"],
                        run=False)
    assert cli.model.model._compiled_call_impl is not None
    assert cli.model.model.config.d_model == 128


def test_bad_compile_backend_is_one_clear_message(in_tmp, fixture_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *fixture_run, "--trainer.max_steps", "1", "--model.compile.backend", "tvm"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model.compile.backend" in err and "Traceback" not in err
