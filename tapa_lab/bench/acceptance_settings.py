"""What the GPU acceptance run measures, and its CPU dry run: shapes, steps, time boxes and the targets' lengths.

The time boxes add up to 7 minutes, 8 with each part's grace of 15 s (the issue allows 8 for the whole run, one call
of the device tool); they are estimates made without a GPU (the Triton compiles and autotuning dominate them), and
the run's page records each part's wall time so the first GPU session can move them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    """One acceptance configuration (:data:`GPU` or :data:`DRY_RUN`)."""

    device: str
    """``cuda``, or ``cpu`` for the dry run (Triton's interpreter)."""
    budgets_s: dict[str, float]
    """Each part's time box in seconds: the part stops itself inside it; its process is killed 15 s past it, and the
    part recorded as timed out."""
    kernel_tests: tuple[str, ...]
    """Test files of the kernel part, run by pytest on the part's device."""
    attention: dict = field(default_factory=dict)
    """Arguments of :func:`tapa_lab.bench.attention.bench_attention` (``time_budget_s`` is set from the box)."""
    gemm: tuple[int, str] = (8192, "bfloat16")
    """Side and dtype of the square product whose rate is the attention part's peak."""
    model_config: str = "experiments/model/base.yaml"
    """Preset of the training-throughput and fit parts."""
    posencs: tuple[str, ...] = ("rope", "tapa", "alibi")
    """PE fragments (experiments/posenc/<stem>.yaml) of the training-throughput part."""
    train: dict = field(default_factory=dict)
    """seq_len, tokens_per_batch, steps, warmup_steps of the training-throughput part."""
    fit: dict = field(default_factory=dict)
    """steps, seq_len, batch_size, lr, warmup_steps of the fit (TAPA)."""
    bf16: bool = True
    """bf16-mixed training (autocast); fp32 otherwise."""
    long_len: int = 4096
    """TAPA fwd+bwd >= 0.6x the best SDPA at every L >= this."""
    naive_len: int = 8192
    """TAPA fwd+bwd >= 10x the materialised reference at this L."""
    longest_len: int = 65536
    """This L must run (TAPA fwd+bwd)."""
    judge_speed: bool = True
    """Whether the speed targets decide the exit status (not in the dry run: interpreter timings mean nothing)."""


ATTENTION_IMPLEMENTATIONS = ["tapa-triton", "sdpa-flash", "sdpa-cudnn", "flex", "tapa-torch", "tapa-naive"]

GPU = Settings(
    device="cuda",
    budgets_s={"kernels": 120, "attention": 160, "training": 85, "fit": 55},
    kernel_tests=("tests/kernels/test_kernel_accuracy.py", "tests/kernels/test_gpu_kernels.py"),
    attention=dict(implementations=ATTENTION_IMPLEMENTATIONS, seq_lens=[1024, 2048, 4096, 8192, 16384, 32768, 65536],
                   head_dims=[128, 64], n_heads=16, kv_heads=4, tokens_per_batch=16384, dtype="bfloat16",
                   max_naive_len=8192, warmup_ms=10, rep_ms=40),
    train=dict(seq_len=2048, tokens_per_batch=32768, steps=8, warmup_steps=3),
    fit=dict(steps=200, seq_len=2048, batch_size=16, lr=6e-4, warmup_steps=20),
)

# The dry run: every part on CPU at tiny shapes (Triton's interpreter for the kernels, fp32; FlexAttention is left out,
# its CPU path has no backward), so the whole script runs in CI.
DRY_RUN = Settings(
    device="cpu",
    budgets_s={"kernels": 240, "attention": 240, "training": 240, "fit": 240},
    kernel_tests=("tests/kernels/test_kernel_accuracy.py", "tests/kernels/test_gpu_kernels.py"),
    attention=dict(implementations=["tapa-triton", "sdpa-flash", "tapa-torch", "tapa-naive"], seq_lens=[32, 64],
                   head_dims=[16], n_heads=2, kv_heads=1, tokens_per_batch=64, dtype="float32", max_naive_len=32,
                   warmup_ms=1, rep_ms=1),
    gemm=(128, "float32"),
    model_config="experiments/model/tiny.yaml",
    train=dict(seq_len=32, tokens_per_batch=64, steps=1, warmup_steps=1),
    fit=dict(steps=12, seq_len=32, batch_size=4, lr=1e-2, warmup_steps=2),
    bf16=False,
    long_len=64,
    naive_len=32,
    longest_len=64,
    judge_speed=False,
)
