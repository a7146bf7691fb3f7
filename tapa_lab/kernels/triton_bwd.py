"""Triton backward kernels of causal attention (plain, ALiBi, TAPA), FlashAttention-2 style.

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
"""

from __future__ import annotations

import triton
import triton.language as tl

from tapa_lab.kernels.autotune import TUNE_KEY, bwd_dkdv_configs, bwd_dq_configs
from tapa_lab.kernels.triton_score import ALIBI, LN2, LOG2E, PLAIN, TAPA, _tapa_terms


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
def _attn_bwd_dkdv_steps(dka, dkp, dv, ka, kp, v, offs_n, Q_AMP, Q_PHASE, DO, LSE, DELTA,
                         stride_qa_l, stride_qa_d, stride_qp_l, stride_qp_d, stride_do_l, stride_do_d,
                         offs_da, offs_dp, offs_dv, DA, DP, DV, LQ, LK, start, stop, head_param, amp_scale,
                         phase_scale, MODE: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr,
                         BLOCK_M: tl.constexpr):
    """Accumulate one key block's gradients over the query blocks starting in ``[start, stop)`` of one head.

    Tiles are transposed, ``(BLOCK_N keys, BLOCK_M queries)``. Returns ``(dka, dkp, dv)`` (fp32, unscaled).
    """
    offset = LK - LQ
    for start_m in range(start, stop, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < LQ
        qa = tl.load(Q_AMP + offs_m[:, None] * stride_qa_l + offs_da[None, :] * stride_qa_d,
                     mask=row_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
        do = tl.load(DO + offs_m[:, None] * stride_do_l + offs_dv[None, :] * stride_do_d,
                     mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        lse = tl.load(LSE + offs_m, mask=row_ok, other=float("inf"))  # P = 0 on padding rows
        delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
        amp_dot = tl.dot(ka, tl.trans(qa), input_precision=DOT_PRECISION)
        distance = (offset + offs_m)[None, :] - offs_n[:, None]
        if MODE == TAPA:
            qp = tl.load(Q_PHASE + offs_m[:, None] * stride_qp_l + offs_dp[None, :] * stride_qp_d,
                         mask=row_ok[:, None] & (offs_dp[None, :] < DP), other=0.0)
            phase_dot = tl.dot(kp, tl.trans(qp), input_precision=DOT_PRECISION)
            s, amp, _, dist_pow, _, cos_x, sin_x = _tapa_terms(amp_dot, phase_dot, distance, head_param, amp_scale,
                                                              phase_scale)
        elif MODE == ALIBI:
            s = amp_dot * amp_scale - head_param * distance.to(tl.float32)
        else:
            s = amp_dot * amp_scale
        p = tl.exp2(s * LOG2E - lse[None, :])
        if MASKED:
            p = tl.where((distance >= 0) & (offs_n[:, None] < LK) & row_ok[None, :], p, 0.0)
        dv += tl.dot(p.to(do.dtype), do, input_precision=DOT_PRECISION)
        dp = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[None, :])
        if MODE == TAPA:
            dka += tl.dot((ds * cos_x).to(qa.dtype), qa, input_precision=DOT_PRECISION)
            dkp += tl.dot((ds * amp * sin_x * dist_pow).to(qp.dtype), qp, input_precision=DOT_PRECISION)
        else:
            dka += tl.dot(ds.to(qa.dtype), qa, input_precision=DOT_PRECISION)
    return dka, dkp, dv


@triton.autotune(configs=bwd_dkdv_configs(), key=TUNE_KEY)
@triton.jit
def _attn_bwd_dkdv(Q_AMP, K_AMP, Q_PHASE, K_PHASE, V, DO, LSE, DELTA, HEAD_PARAM, DK_AMP, DK_PHASE, DV_OUT,
                   stride_qa_b, stride_qa_h, stride_qa_l, stride_qa_d,
                   stride_ka_b, stride_ka_h, stride_ka_l, stride_ka_d,
                   stride_qp_b, stride_qp_h, stride_qp_l, stride_qp_d,
                   stride_kp_b, stride_kp_h, stride_kp_l, stride_kp_d,
                   stride_v_b, stride_v_h, stride_v_l, stride_v_d,
                   stride_do_b, stride_do_h, stride_do_l, stride_do_d,
                   amp_scale, phase_scale, H, GROUP, LQ, LK, DA, DP, DV,
                   MODE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   BLOCK_DA: tl.constexpr, BLOCK_DP: tl.constexpr, BLOCK_DV: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid ``(cdiv(LK, BLOCK_N), B*Hkv)``. Writes DK_AMP, DK_PHASE (TAPA only), DV_OUT: contiguous, shaped like
    K_AMP, K_PHASE, V."""
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
        dka, dkp, dv = _attn_bwd_dkdv_steps(dka, dkp, dv, ka, kp, v, offs_n, q_amp, q_phase, do_ptr, lse, delta,
                                            stride_qa_l, stride_qa_d, stride_qp_l, stride_qp_d, stride_do_l,
                                            stride_do_d, offs_da, offs_dp, offs_dv, DA, DP, DV, LQ, LK, diag_start,
                                            full_start, head_param, amp_scale, phase_scale, MODE, True,
                                            DOT_PRECISION, BLOCK_M)
        dka, dkp, dv = _attn_bwd_dkdv_steps(dka, dkp, dv, ka, kp, v, offs_n, q_amp, q_phase, do_ptr, lse, delta,
                                            stride_qa_l, stride_qa_d, stride_qp_l, stride_qp_d, stride_do_l,
                                            stride_do_d, offs_da, offs_dp, offs_dv, DA, DP, DV, LQ, LK, full_start,
                                            LQ, head_param, amp_scale, phase_scale, MODE, False, DOT_PRECISION,
                                            BLOCK_M)

    head = pid_bhkv.to(tl.int64) * LK
    tl.store(DK_AMP + (head + offs_n[:, None]) * DA + offs_da[None, :], (dka * amp_scale).to(DK_AMP.dtype.element_ty),
             mask=key_ok[:, None] & (offs_da[None, :] < DA))
    if MODE == TAPA:
        tl.store(DK_PHASE + (head + offs_n[:, None]) * DP + offs_dp[None, :],
                 (dkp * -phase_scale).to(DK_PHASE.dtype.element_ty), mask=key_ok[:, None] & (offs_dp[None, :] < DP))
    tl.store(DV_OUT + (head + offs_n[:, None]) * DV + offs_dv[None, :], dv.to(DV_OUT.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dv[None, :] < DV))


@triton.jit
def _attn_bwd_dq_steps(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, K_AMP, K_PHASE, V,
                       stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                       offs_da, offs_dp, offs_dv, DA, DP, DV, LK, start, stop, head_param, amp_scale, phase_scale,
                       MODE: tl.constexpr, MASKED: tl.constexpr, NEED_DHEAD: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """Accumulate one query block's gradients over the key blocks starting in ``[start, stop)``.

    Returns ``(dqa, dqp, dhead)``: fp32, unscaled, and the per-row sums of the per-head gradient.
    """
    for start_n in range(start, stop, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < LK
        ka = tl.load(K_AMP + offs_n[:, None] * stride_ka_l + offs_da[None, :] * stride_ka_d,
                     mask=key_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
        v = tl.load(V + offs_n[:, None] * stride_v_l + offs_dv[None, :] * stride_v_d,
                    mask=key_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        amp_dot = tl.dot(qa, tl.trans(ka), input_precision=DOT_PRECISION)
        distance = q_pos[:, None] - offs_n[None, :]
        if MODE == TAPA:
            kp = tl.load(K_PHASE + offs_n[:, None] * stride_kp_l + offs_dp[None, :] * stride_kp_d,
                         mask=key_ok[:, None] & (offs_dp[None, :] < DP), other=0.0)
            phase_dot = tl.dot(qp, tl.trans(kp), input_precision=DOT_PRECISION)
            s, amp, x, dist_pow, log2_d, cos_x, sin_x = _tapa_terms(amp_dot, phase_dot, distance, head_param,
                                                                   amp_scale, phase_scale)
        elif MODE == ALIBI:
            s = amp_dot * amp_scale - head_param * distance.to(tl.float32)
        else:
            s = amp_dot * amp_scale
        p = tl.exp2(s * LOG2E - lse[:, None])
        if MASKED:
            p = tl.where((distance >= 0) & key_ok[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        if MODE == TAPA:
            t = ds * amp * sin_x
            dqa += tl.dot((ds * cos_x).to(ka.dtype), ka, input_precision=DOT_PRECISION)
            dqp += tl.dot((t * dist_pow).to(kp.dtype), kp, input_precision=DOT_PRECISION)
            if NEED_DHEAD:
                dhead -= tl.sum(t * x * log2_d, 1) * LN2
        else:
            dqa += tl.dot(ds.to(ka.dtype), ka, input_precision=DOT_PRECISION)
            if NEED_DHEAD:
                dhead -= tl.sum(ds * distance.to(tl.float32), 1)
    return dqa, dqp, dhead


@triton.autotune(configs=bwd_dq_configs(), key=TUNE_KEY)
@triton.jit
def _attn_bwd_dq(Q_AMP, K_AMP, Q_PHASE, K_PHASE, V, DO, LSE, DELTA, HEAD_PARAM, DQ_AMP, DQ_PHASE, DHEAD,
                 stride_qa_b, stride_qa_h, stride_qa_l, stride_qa_d,
                 stride_ka_b, stride_ka_h, stride_ka_l, stride_ka_d,
                 stride_qp_b, stride_qp_h, stride_qp_l, stride_qp_d,
                 stride_kp_b, stride_kp_h, stride_kp_l, stride_kp_d,
                 stride_v_b, stride_v_h, stride_v_l, stride_v_d,
                 stride_do_b, stride_do_h, stride_do_l, stride_do_d,
                 amp_scale, phase_scale, H, GROUP, LQ, LK, DA, DP, DV,
                 MODE: tl.constexpr, NEED_DHEAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 BLOCK_DA: tl.constexpr, BLOCK_DP: tl.constexpr, BLOCK_DV: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid ``(cdiv(LQ, BLOCK_M), B*H)``. Writes DQ_AMP, DQ_PHASE (TAPA only): contiguous, shaped like Q_AMP, Q_PHASE;
    and, when NEED_DHEAD, DHEAD ``(B, H, LQ)`` fp32: each row's share of dalpha_h (TAPA) or dm_h (ALiBi)."""
    start_m = tl.program_id(0) * BLOCK_M
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    hkv = (h // GROUP).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_da = tl.arange(0, BLOCK_DA)
    offs_dp = tl.arange(0, BLOCK_DP)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < LQ
    offset = LK - LQ
    q_pos = offset + offs_m
    row = pid_bh.to(tl.int64) * LQ + offs_m

    qa = tl.load(Q_AMP + b * stride_qa_b + h * stride_qa_h + offs_m[:, None] * stride_qa_l
                 + offs_da[None, :] * stride_qa_d, mask=row_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
    do = tl.load(DO + b * stride_do_b + h * stride_do_h + offs_m[:, None] * stride_do_l
                 + offs_dv[None, :] * stride_do_d, mask=row_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    lse = tl.load(LSE + row, mask=row_ok, other=float("inf"))  # P = 0 on padding rows
    delta = tl.load(DELTA + row, mask=row_ok, other=0.0)
    qp = qa
    head_param = 0.0
    if MODE == TAPA:
        qp = tl.load(Q_PHASE + b * stride_qp_b + h * stride_qp_h + offs_m[:, None] * stride_qp_l
                     + offs_dp[None, :] * stride_qp_d, mask=row_ok[:, None] & (offs_dp[None, :] < DP), other=0.0)
    if MODE != PLAIN:
        head_param = tl.load(HEAD_PARAM + h)
    K_AMP += b * stride_ka_b + hkv * stride_ka_h
    K_PHASE += b * stride_kp_b + hkv * stride_kp_h
    V += b * stride_v_b + hkv * stride_v_h

    dqa = tl.zeros([BLOCK_M, BLOCK_DA], dtype=tl.float32)
    dqp = tl.zeros([BLOCK_M, BLOCK_DP], dtype=tl.float32)
    dhead = tl.zeros([BLOCK_M], dtype=tl.float32)
    full_end = (offset + start_m) // BLOCK_N * BLOCK_N
    diag_end = tl.minimum(offset + start_m + BLOCK_M, LK)
    dqa, dqp, dhead = _attn_bwd_dq_steps(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, K_AMP, K_PHASE, V,
                                         stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                                         offs_da, offs_dp, offs_dv, DA, DP, DV, LK, 0, full_end, head_param,
                                         amp_scale, phase_scale, MODE, False, NEED_DHEAD, DOT_PRECISION, BLOCK_N)
    dqa, dqp, dhead = _attn_bwd_dq_steps(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, K_AMP, K_PHASE, V,
                                         stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                                         offs_da, offs_dp, offs_dv, DA, DP, DV, LK, full_end, diag_end, head_param,
                                         amp_scale, phase_scale, MODE, True, NEED_DHEAD, DOT_PRECISION, BLOCK_N)

    tl.store(DQ_AMP + row[:, None] * DA + offs_da[None, :], (dqa * amp_scale).to(DQ_AMP.dtype.element_ty),
             mask=row_ok[:, None] & (offs_da[None, :] < DA))
    if MODE == TAPA:
        tl.store(DQ_PHASE + row[:, None] * DP + offs_dp[None, :], (dqp * -phase_scale).to(DQ_PHASE.dtype.element_ty),
                 mask=row_ok[:, None] & (offs_dp[None, :] < DP))
    if NEED_DHEAD:
        tl.store(DHEAD + row, dhead, mask=row_ok)
