"""The acceptance targets (shared/design/PROTOCOLS.md, issue 18), judged on the parts' results.

Each target is a row ``{"target", "value", "passed", "judged"}``: ``passed`` is False also when what it needs was not
measured (a part failed or timed out, a cell errored); ``judged`` says whether it decides the exit status (the speed
targets do not in the CPU dry run, whose interpreter timings mean nothing; correctness targets always do).
"""

from __future__ import annotations

from tapa_lab.bench.acceptance_settings import Settings

SPEED_RATIO_TO_SDPA = 0.6
SPEEDUP_OVER_NAIVE = 10.0


def _row(target: str, value: str, passed: bool, judged: bool = True) -> dict:
    return {"target": target, "value": value, "passed": bool(passed), "judged": judged}


def kernel_targets(kernels: dict | None) -> list[dict]:
    """Every kernel test passed (at least one ran, none failed, no time-out)."""
    if kernels is None:
        return [_row("kernel tests pass", "not run", False)]
    counts = kernels["counts"]
    failed = counts.get("FAILED", 0) + counts.get("ERROR", 0)
    passed = counts.get("PASSED", 0)
    ok = passed > 0 and failed == 0 and not kernels["timed_out"] and kernels["returncode"] == 0
    value = ", ".join(f"{n} {k.lower()}" for k, n in counts.items()) + (" (timed out)" if kernels["timed_out"] else "")
    return [_row("kernel tests pass", value or "none ran", ok)]


def _cells(attention: dict | None) -> dict[tuple[str, int, int], dict]:
    results = attention["results"] if attention else []
    return {(c["implementation"], c["head_dim"], c["seq_len"]): c for c in results}


def attention_targets(attention: dict | None, settings: Settings) -> list[dict]:
    """TAPA fwd+bwd >= 0.6x the best SDPA at every L >= long_len, >= 10x the materialised reference at naive_len,
    and a TAPA fwd+bwd at longest_len that runs, for every head dim."""
    cells = _cells(attention)
    head_dims = settings.attention["head_dims"]
    seq_lens = [n for n in settings.attention["seq_lens"] if n >= settings.long_len]
    sdpa = [name for name in settings.attention["implementations"] if name.startswith("sdpa-")]
    rows = []

    def ok(name: str, d: int, n: int) -> dict | None:
        cell = cells.get((name, d, n))
        return cell if cell and cell["status"] == "ok" else None

    for d in head_dims:
        for n in seq_lens:
            tapa = ok("tapa-triton", d, n)
            baselines = [c for c in (ok(name, d, n) for name in sdpa) if c]
            target = f"TAPA fwd+bwd >= {SPEED_RATIO_TO_SDPA}x best SDPA, D={d}, L={n}"
            if tapa is None or not baselines:
                missing = "TAPA" if tapa is None else "every SDPA backend"
                rows.append(_row(target, f"not measured ({missing})", False, settings.judge_speed))
                continue
            best = max(baselines, key=lambda c: c["fwd_bwd_tflops"])
            ratio = tapa["fwd_bwd_tflops"] / best["fwd_bwd_tflops"]
            rows.append(_row(target, f"{ratio:.2f}x {best['implementation']}", ratio >= SPEED_RATIO_TO_SDPA,
                             settings.judge_speed))
        tapa, naive = ok("tapa-triton", d, settings.naive_len), ok("tapa-naive", d, settings.naive_len)
        target = f"TAPA fwd+bwd >= {SPEEDUP_OVER_NAIVE:g}x materialised TAPA, D={d}, L={settings.naive_len}"
        if tapa is None or naive is None:
            status = cells.get(("tapa-naive", d, settings.naive_len), {}).get("status", "not run")
            rows.append(_row(target, f"not measured (reference: {status})", False, settings.judge_speed))
        else:
            speedup = naive["fwd_bwd_ms"] / tapa["fwd_bwd_ms"]
            rows.append(_row(target, f"{speedup:.1f}x", speedup >= SPEEDUP_OVER_NAIVE, settings.judge_speed))
        longest = cells.get(("tapa-triton", d, settings.longest_len), {}).get("status", "not run")
        rows.append(_row(f"TAPA fwd+bwd runs at L={settings.longest_len}, D={d}", longest, longest == "ok"))
    return rows


def training_targets(training: dict | None) -> list[dict]:
    """Every PE's training cell ran (the tokens/s themselves are reported, not judged)."""
    results = training["results"] if training else []
    failed = [r["posenc"] for r in results if r.get("status") != "ok"]
    value = ", ".join(f"{r['posenc']} {r['tokens_per_s']:.0f} tok/s" if r.get("status") == "ok"
                      else f"{r['posenc']} {r['status']}" for r in results)
    return [_row("training cells run (RoPE, TAPA, ALiBi)", value or "not run", bool(results) and not failed)]


def fit_targets(fit: dict | None) -> list[dict]:
    """The TAPA fit's loss fell (last tenth <= 0.8x first tenth, every loss finite)."""
    if fit is None:
        return [_row("TAPA fit: loss falls", "not run", False)]
    value = f"{fit['first_loss']:.3f} -> {fit['last_loss']:.3f} over {fit['steps']} steps"
    return [_row("TAPA fit: loss falls", value, fit["loss_fell"])]


def evaluate(results: dict[str, dict | None], settings: Settings) -> list[dict]:
    """The target rows of every part in ``results`` (its result, ``None`` where the part failed)."""
    groups = {"kernels": kernel_targets, "attention": lambda r: attention_targets(r, settings),
              "training": training_targets, "fit": fit_targets}
    return [row for name, targets in groups.items() if name in results for row in targets(results[name])]
