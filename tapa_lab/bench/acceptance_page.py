"""The GPU acceptance run's markdown page: machine and versions, parts, targets, then each part's table."""

from __future__ import annotations


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows),
            ""]


def _kernels(kernels: dict) -> list[str]:
    lines = [f"Command: `{kernels['command']}` (TAPA_LAB_QUICK_TUNE=1: two autotune configs per kernel).", ""]
    worst: dict[str, float] = {}
    for name, detail in kernels["details"].items():
        dtype = next((d for d in ("float32", "float16", "bfloat16") if d in name), None)
        for value in detail["properties"].values():
            if dtype:
                worst[dtype] = max(worst.get(dtype, 0.0), value)
    if worst:
        lines += ["Largest relative error against fp64 per dtype (test_kernel_accuracy):", ""]
        lines += _table(["dtype", "max relative error"], [[d, f"{e:.2e}"] for d, e in worst.items()])
    failures = [[name, (detail["message"] or "").replace("|", "/").replace("\n", " ")[:200]]
                for name, detail in kernels["details"].items() if detail["message"]]
    if failures:
        lines += _table(["failed test", "message"], failures)
    return lines


def _attention(attention: dict) -> list[str]:
    gemm = attention["gemm"]
    lines = [f"Peak: a {gemm['size']}^3 {gemm['dtype']} product at {gemm['tflops']:.3g} TFLOP/s (measured here). "
             "TFLOP/s are FlashAttention-equivalent (causal: 4 B H L^2 D / 2 forward, 3.5x that forward+backward).", ""]
    header = ["impl", "L", "D", "B", "H/KV", "fwd ms", "fwd TF/s", "fwd %peak", "f+b ms", "f+b TF/s", "f+b %peak",
              "peak MiB", "status"]
    rows = [[c["implementation"], str(c["seq_len"]), str(c["head_dim"]), str(c["batch"]),
             f"{c['heads']}/{c['kv_heads']}", _number(c.get("fwd_ms"), 3), _number(c.get("fwd_tflops"), 1),
             _number(100 * c["fwd_peak_fraction"] if "fwd_peak_fraction" in c else None, 0),
             _number(c.get("fwd_bwd_ms"), 3), _number(c.get("fwd_bwd_tflops"), 1),
             _number(100 * c["fwd_bwd_peak_fraction"] if "fwd_bwd_peak_fraction" in c else None, 0),
             _number(c.get("peak_memory_mb"), 0), c["status"]] for c in attention["results"]]
    return lines + _table(header, rows)


def _training(training: dict) -> list[str]:
    rope = next((r["tokens_per_s"] for r in training["results"] if r["posenc"] == "rope" and r.get("status") == "ok"),
                None)
    lines = [f"{training['model_config']}, L = {training['seq_len']}, {training['tokens_per_batch']} tokens a step, "
             f"{training['steps']} timed steps after {training['warmup_steps']} warm-up; bf16 autocast on CUDA.", ""]
    rows = [[r["posenc"], _number(r.get("tokens_per_s"), 0),
             _number(r["tokens_per_s"] / rope if rope and "tokens_per_s" in r else None, 2),
             _number(r.get("step_ms"), 1), _number(r.get("peak_memory_mb"), 0), r.get("status", "ok")]
            for r in training["results"]]
    return lines + _table(["PE", "tokens/s", "x RoPE", "step ms", "peak MB", "status"], rows)


def _fit(fit: dict) -> list[str]:
    losses = fit["losses"]
    marks = sorted({0, len(losses) // 4, len(losses) // 2, 3 * len(losses) // 4, len(losses) - 1})
    return [f"{fit['model_config']} shape, TAPA, {'bf16-mixed' if fit['bf16'] else 'fp32'}, {fit['steps']} steps of "
            f"{fit['batch_size']} x {fit['seq_len']} tokens from the fixture corpus ({fit['corpus_tokens']} tokens), "
            f"lr {fit['lr']}: loss {fit['first_loss']:.3f} (first tenth) -> {fit['last_loss']:.3f} (last tenth), "
            f"{fit['tokens_per_s']:.0f} tokens/s over {fit['seconds']:.1f} s.", "",
            *_table(["step", "loss"], [[str(i + 1), f"{losses[i]:.3f}"] for i in marks])]


SECTIONS = {"kernels": ("Kernel tests on the device", _kernels), "attention": ("Attention", _attention),
            "training": ("Training throughput", _training), "fit": ("TAPA fit on the fixture corpus", _fit)}


def render(record: dict) -> str:
    """The page of one run's record (what acceptance.json holds)."""
    env = record["environment"]
    mode = "CPU DRY RUN (interpreter, tiny shapes: no GPU result)" if record["dry_run"] else "GPU acceptance run"
    lines = [f"# {mode} on {env.get('machine', 'unknown machine')}", "",
             f"{record['started']}, git {record['git']}; torch {env.get('torch')}, triton {env.get('triton')}, "
             f"python {env.get('python')}, CUDA {env.get('cuda')}. Command: `{record['command']}`. "
             f"Verdict: **{'PASS' if record['passed'] else 'FAIL'}** in {record['seconds']:.0f} s.", "", "## Parts", ""]
    lines += _table(["part", "status", "seconds", "time box s"],
                    [[name, part["status"], f"{part['seconds']:.0f}", f"{part['budget_s']:.0f}"]
                     for name, part in record["parts"].items()])
    lines += ["## Targets", ""]
    lines += _table(["target", "value", "passed", "judged"],
                    [[t["target"], t["value"], "yes" if t["passed"] else "NO", "yes" if t["judged"] else "no (dry run)"]
                     for t in record["targets"]])
    for name, part in record["parts"].items():
        title, section = SECTIONS[name]
        lines += [f"## {title}", ""]
        if part["result"] is not None:
            lines += section(part["result"])
        if part["error"]:
            lines += ["```", part["error"].strip()[-1500:], "```", ""]
    return "\n".join(lines)
