"""Triton backward kernels of causal attention (plain, ALiBi, TAPA), FlashAttention-2 style: the preprocessing and
dK/dV kernels here, the dQ kernel in :mod:`tapa_lab.kernels.triton_bwd_dq`.

Algorithm: Dao, "FlashAttention-2" (arXiv 2307.08691), section 3.1.2, as in Triton's fused-attention tutorial, with
the TAPA gradients of TAPA.md section 3. Each program recomputes its score tiles from the saved base-2 logsumexp:
P = exp2(s log2 e - lse), dS = P (dP - delta), delta = rowsum(dO O) (``_attn_bwd_preprocess``). Then

    PLAIN/ALIBI  dq = scale dS k,  dk = scale dS^T q,  dv = P^T dO,  dm_h = -sum dS (i - j)
    TAPA         dA = dS cos x,  T = dS A sin x,  dqA = sa dA kA,  dkA = sa dA^T qA,
                 dqP = -sp T d kP,  dkP = -sp (T d)^T qP,  dalpha_h = -sum T x ln d     (d = |i-j|^alpha)

All sums are deterministic: ``_attn_bwd_dkdv`` owns a block of keys of one key/value head (looping over the GROUP
query heads that share it and over the query blocks that can see it) and ``_attn_bwd_dq`` owns a block of query rows,
so no float atomics are needed. The per-head gradient (dalpha or dm) is written per query row by ``_attn_bwd_dq`` and
summed by the caller. Causal block skipping as in the forward; dS and T d stay fp32 until the cast before each dot.
Document masking (HAS_DOCS) as in the forward: P is zeroed across documents, and a (query tile, key tile) pair whose
min/max document ids do not overlap is skipped whole.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tapa_lab.kernels.autotune import TUNE_KEY, bwd_dkdv_configs
from tapa_lab.kernels.triton_score import LOG2E, PLAIN, TAPA, _score


@triton.jit
def _attn_bwd_preprocess(OUT, DO, DELTA, stride_o_b, stride_o_h, stride_o_l, stride_o_d,
                         stride_do_b, stride_do_h, stride_do_l, stride_do_d, H, LQ, DV,
                         BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Grid ``(cdiv(LQ, BLOCK_M), B*H)``: DELTA ``(B, H, LQ)`` = rowsum(OUT * DO) in fp32."""
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask = (offs_m[:, None] < LQ) & (offs_dv[None, :] < DV)
    o = tl.load(OUT + b * stride_o_b + h * stride_o_h + offs_m[:, None] * stride_o_l + offs_dv[None, :] * stride_o_d,
                mask=mask, other=0.0)
    do = tl.load(DO + b * stride_do_b + h * stride_do_h + offs_m[:, None] * stride_do_l
                 + offs_dv[None, :] * stride_do_d, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * LQ + offs_m, delta, mask=offs_m < LQ)


@triton.jit
def _attn_bwd_dkdv_tile(dka, dkp, dv, ka, kp, v, offs_n, offs_m, row_ok, k_doc, q_doc, Q_AMP, Q_PHASE, DO, LSE,
                        DELTA, stride_qa_l, stride_qa_d, stride_qp_l, stride_qp_d, stride_do_l, stride_do_d,
                        offs_da, offs_dp, offs_dv, DA, DP, DV, LK, offset, head_param, amp_scale, phase_scale,
                        MODE: tl.constexpr, MASKED: tl.constexpr, HAS_DOCS: tl.constexpr,
                        DOT_PRECISION: tl.constexpr):
    """One key block's gradients from the query tile ``offs_m``; returns ``(dka, dkp, dv)``.

    Every score tile here is transposed, ``(BLOCK_N keys, BLOCK_M queries)`` (s^T, P^T, dS^T), so that dK and dV are
    plain dots with the query-side tiles: ``dV += P^T dO``, ``dK += dS^T Q``.
    """
    qa = tl.load(Q_AMP + offs_m[:, None] * stride_qa_l + offs_da[None, :] * stride_qa_d,
                 mask=row_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_do_l + offs_dv[None, :] * stride_do_d,
                 mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    lse = tl.load(LSE + offs_m, mask=row_ok, other=float("inf"))  # P = 0 on padding rows
    delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
    # -- scores, transposed: s^T (BLOCK_N, BLOCK_M), rows are keys
    amp_dot = tl.dot(ka, tl.trans(qa), input_precision=DOT_PRECISION)
    qp = qa
    phase_dot = amp_dot
    if MODE == TAPA:
        qp = tl.load(Q_PHASE + offs_m[:, None] * stride_qp_l + offs_dp[None, :] * stride_qp_d,
                     mask=row_ok[:, None] & (offs_dp[None, :] < DP), other=0.0)
        phase_dot = tl.dot(kp, tl.trans(qp), input_precision=DOT_PRECISION)
    distance = (offset + offs_m)[None, :] - offs_n[:, None]
    s, amp, _, dist_pow, _, cos_x, sin_x = _score(amp_dot, phase_dot, distance, head_param, amp_scale,
                                                  phase_scale, MODE)
    # -- P^T = exp2(s^T log2 e - lse), from the forward's logsumexp
    p = tl.exp2(s * LOG2E - lse[None, :])
    if MASKED:
        p = tl.where((distance >= 0) & (offs_n[:, None] < LK) & row_ok[None, :], p, 0.0)
    if HAS_DOCS:
        p = tl.where(k_doc[:, None] == q_doc[None, :], p, 0.0)  # other documents' queries
    # -- dV += P^T dO
    dv += tl.dot(p.to(do.dtype), do, input_precision=DOT_PRECISION)
    # -- dS^T = P^T (dP^T - delta), dP^T = V dO^T
    dp = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
    ds = p * (dp - delta[None, :])
    # -- dK += dS^T Q (amplitude and phase parts in TAPA)
    if MODE == TAPA:
        dka += tl.dot((ds * cos_x).to(qa.dtype), qa, input_precision=DOT_PRECISION)
        dkp += tl.dot((ds * amp * sin_x * dist_pow).to(qp.dtype), qp, input_precision=DOT_PRECISION)
    else:
        dka += tl.dot(ds.to(qa.dtype), qa, input_precision=DOT_PRECISION)
    return dka, dkp, dv


@triton.jit
def _attn_bwd_dkdv_steps(dka, dkp, dv, ka, kp, v, offs_n, k_doc, k_doc_min, k_doc_max, DOC, Q_AMP, Q_PHASE, DO, LSE,
                         DELTA, stride_qa_l, stride_qa_d, stride_qp_l, stride_qp_d, stride_do_l, stride_do_d,
                         offs_da, offs_dp, offs_dv, DA, DP, DV, LQ, LK, start, stop, head_param, amp_scale,
                         phase_scale, MODE: tl.constexpr, MASKED: tl.constexpr, HAS_DOCS: tl.constexpr,
                         DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """Accumulate one key block's gradients over the query blocks starting in ``[start, stop)`` of one head
    (transposed tiles, see :func:`_attn_bwd_dkdv_tile`). Returns ``(dka, dkp, dv)`` (fp32, unscaled).

    With HAS_DOCS, DOC points at this batch row's document ids; a query block whose ids miss the key block's range
    ``[k_doc_min, k_doc_max]`` is skipped whole.
    """
    offset = LK - LQ
    for start_m in range(start, stop, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < LQ
        if HAS_DOCS:
            q_doc = tl.load(DOC + offset + offs_m, mask=row_ok, other=-1)
            q_doc_min = tl.min(tl.where(row_ok, q_doc, k_doc_max + 1), 0)
            if (tl.max(q_doc, 0) >= k_doc_min) & (q_doc_min <= k_doc_max):
                dka, dkp, dv = _attn_bwd_dkdv_tile(dka, dkp, dv, ka, kp, v, offs_n, offs_m, row_ok, k_doc, q_doc,
                                                   Q_AMP, Q_PHASE, DO, LSE, DELTA, stride_qa_l, stride_qa_d,
                                                   stride_qp_l, stride_qp_d, stride_do_l, stride_do_d, offs_da,
                                                   offs_dp, offs_dv, DA, DP, DV, LK, offset, head_param, amp_scale,
                                                   phase_scale, MODE, MASKED, HAS_DOCS, DOT_PRECISION)
        else:
            dka, dkp, dv = _attn_bwd_dkdv_tile(dka, dkp, dv, ka, kp, v, offs_n, offs_m, row_ok, k_doc, k_doc, Q_AMP,
                                               Q_PHASE, DO, LSE, DELTA, stride_qa_l, stride_qa_d, stride_qp_l,
                                               stride_qp_d, stride_do_l, stride_do_d, offs_da, offs_dp, offs_dv, DA,
                                               DP, DV, LK, offset, head_param, amp_scale, phase_scale, MODE, MASKED,
                                               HAS_DOCS, DOT_PRECISION)
    return dka, dkp, dv


@triton.autotune(configs=bwd_dkdv_configs(), key=TUNE_KEY)
@triton.jit
def _attn_bwd_dkdv(Q_AMP, K_AMP, Q_PHASE, K_PHASE, V, DO, LSE, DELTA, HEAD_PARAM, DOC, DK_AMP, DK_PHASE, DV_OUT,
                   stride_qa_b, stride_qa_h, stride_qa_l, stride_qa_d,
                   stride_ka_b, stride_ka_h, stride_ka_l, stride_ka_d,
                   stride_qp_b, stride_qp_h, stride_qp_l, stride_qp_d,
                   stride_kp_b, stride_kp_h, stride_kp_l, stride_kp_d,
                   stride_v_b, stride_v_h, stride_v_l, stride_v_d,
                   stride_do_b, stride_do_h, stride_do_l, stride_do_d,
                   amp_scale, phase_scale, H, GROUP, LQ, LK, DA, DP, DV,
                   MODE: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   BLOCK_DA: tl.constexpr, BLOCK_DP: tl.constexpr, BLOCK_DV: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid ``(cdiv(LK, BLOCK_N), B*Hkv)``. Writes DK_AMP, DK_PHASE (TAPA only), DV_OUT: contiguous, shaped like
    K_AMP, K_PHASE, V. DOC and HAS_DOCS: document masking, as in the forward kernel."""
    start_n = tl.program_id(0) * BLOCK_N
    pid_bhkv = tl.program_id(1)
    n_kv_heads = H // GROUP
    b = (pid_bhkv // n_kv_heads).to(tl.int64)
    hkv = (pid_bhkv % n_kv_heads).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_da = tl.arange(0, BLOCK_DA)
    offs_dp = tl.arange(0, BLOCK_DP)
    offs_dv = tl.arange(0, BLOCK_DV)
    key_ok = offs_n < LK
    offset = LK - LQ

    ka = tl.load(K_AMP + b * stride_ka_b + hkv * stride_ka_h + offs_n[:, None] * stride_ka_l
                 + offs_da[None, :] * stride_ka_d, mask=key_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
    kp = ka
    if MODE == TAPA:
        kp = tl.load(K_PHASE + b * stride_kp_b + hkv * stride_kp_h + offs_n[:, None] * stride_kp_l
                     + offs_dp[None, :] * stride_kp_d, mask=key_ok[:, None] & (offs_dp[None, :] < DP), other=0.0)
    v = tl.load(V + b * stride_v_b + hkv * stride_v_h + offs_n[:, None] * stride_v_l + offs_dv[None, :] * stride_v_d,
                mask=key_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    k_doc = offs_n
    k_doc_min = 0
    k_doc_max = 0
    if HAS_DOCS:
        DOC += b * LK
        k_doc = tl.load(DOC + offs_n, mask=key_ok, other=-1)
        k_doc_min = tl.min(tl.where(key_ok, k_doc, 2147483647), 0)
        k_doc_max = tl.max(k_doc, 0)
    dka = tl.zeros([BLOCK_N, BLOCK_DA], dtype=tl.float32)
    dkp = tl.zeros([BLOCK_N, BLOCK_DP], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    # Query blocks before diag_start cannot see this key block; from full_start on they see all of it.
    diag_start = tl.maximum(start_n - offset, 0) // BLOCK_M * BLOCK_M
    full_start = tl.minimum(tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - offset, 0), BLOCK_M) * BLOCK_M, LQ)
    for g in range(0, GROUP):
        h = hkv * GROUP + g
        head_param = 0.0
        if MODE != PLAIN:
            head_param = tl.load(HEAD_PARAM + h)
        q_amp = Q_AMP + b * stride_qa_b + h * stride_qa_h
        q_phase = Q_PHASE + b * stride_qp_b + h * stride_qp_h
        do_ptr = DO + b * stride_do_b + h * stride_do_h
        lse = LSE + (b * H + h) * LQ
        delta = DELTA + (b * H + h) * LQ
        dka, dkp, dv = _attn_bwd_dkdv_steps(dka, dkp, dv, ka, kp, v, offs_n, k_doc, k_doc_min, k_doc_max, DOC,
                                            q_amp, q_phase, do_ptr, lse, delta, stride_qa_l, stride_qa_d,
                                            stride_qp_l, stride_qp_d, stride_do_l, stride_do_d, offs_da, offs_dp,
                                            offs_dv, DA, DP, DV, LQ, LK, diag_start, full_start, head_param,
                                            amp_scale, phase_scale, MODE, True, HAS_DOCS, DOT_PRECISION, BLOCK_M)
        dka, dkp, dv = _attn_bwd_dkdv_steps(dka, dkp, dv, ka, kp, v, offs_n, k_doc, k_doc_min, k_doc_max, DOC,
                                            q_amp, q_phase, do_ptr, lse, delta, stride_qa_l, stride_qa_d,
                                            stride_qp_l, stride_qp_d, stride_do_l, stride_do_d, offs_da, offs_dp,
                                            offs_dv, DA, DP, DV, LQ, LK, full_start, LQ, head_param, amp_scale,
                                            phase_scale, MODE, False, HAS_DOCS, DOT_PRECISION, BLOCK_M)

    head = pid_bhkv.to(tl.int64) * LK
    tl.store(DK_AMP + (head + offs_n[:, None]) * DA + offs_da[None, :], (dka * amp_scale).to(DK_AMP.dtype.element_ty),
             mask=key_ok[:, None] & (offs_da[None, :] < DA))
    if MODE == TAPA:
        tl.store(DK_PHASE + (head + offs_n[:, None]) * DP + offs_dp[None, :],
                 (dkp * -phase_scale).to(DK_PHASE.dtype.element_ty), mask=key_ok[:, None] & (offs_dp[None, :] < DP))
    tl.store(DV_OUT + (head + offs_n[:, None]) * DV + offs_dv[None, :], dv.to(DV_OUT.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dv[None, :] < DV))
