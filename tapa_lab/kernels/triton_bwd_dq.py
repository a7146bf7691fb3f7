"""Triton backward kernel of causal attention for dQ and the per-head gradient (``_attn_bwd_dq``): one program per
block of query rows streams the keys it can see, recomputing P from the forward's logsumexp. Maths, determinism,
causal and document masking: :mod:`tapa_lab.kernels.triton_bwd`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tapa_lab.kernels.autotune import TUNE_KEY, bwd_dq_configs
from tapa_lab.kernels.triton_score import LN2, LOG2E, PLAIN, TAPA, _score


@triton.jit
def _attn_bwd_dq_tile(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, q_doc, k_doc, offs_n, key_ok, K_AMP, K_PHASE,
                      V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                      offs_da, offs_dp, offs_dv, DA, DP, DV, head_param, amp_scale, phase_scale,
                      MODE: tl.constexpr, MASKED: tl.constexpr, HAS_DOCS: tl.constexpr, NEED_DHEAD: tl.constexpr,
                      DOT_PRECISION: tl.constexpr):
    """One query block's gradients from the key tile ``offs_n``; returns ``(dqa, dqp, dhead)``."""
    ka = tl.load(K_AMP + offs_n[:, None] * stride_ka_l + offs_da[None, :] * stride_ka_d,
                 mask=key_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_v_l + offs_dv[None, :] * stride_v_d,
                mask=key_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    # -- scores (BLOCK_M, BLOCK_N)
    amp_dot = tl.dot(qa, tl.trans(ka), input_precision=DOT_PRECISION)
    kp = ka
    phase_dot = amp_dot
    if MODE == TAPA:
        kp = tl.load(K_PHASE + offs_n[:, None] * stride_kp_l + offs_dp[None, :] * stride_kp_d,
                     mask=key_ok[:, None] & (offs_dp[None, :] < DP), other=0.0)
        phase_dot = tl.dot(qp, tl.trans(kp), input_precision=DOT_PRECISION)
    distance = q_pos[:, None] - offs_n[None, :]
    s, amp, x, dist_pow, log2_d, cos_x, sin_x = _score(amp_dot, phase_dot, distance, head_param, amp_scale,
                                                       phase_scale, MODE)
    # -- P = exp2(s log2 e - lse), from the forward's logsumexp
    p = tl.exp2(s * LOG2E - lse[:, None])
    if MASKED:
        p = tl.where((distance >= 0) & key_ok[None, :], p, 0.0)
    if HAS_DOCS:
        p = tl.where(q_doc[:, None] == k_doc[None, :], p, 0.0)  # other documents' keys
    # -- dS = P (dP - delta), dP = dO V^T
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = p * (dp - delta[:, None])
    # -- dQ += dS K (amplitude and phase parts in TAPA), and the row's share of the per-head gradient
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


@triton.jit
def _attn_bwd_dq_steps(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, q_doc, q_doc_min, q_doc_max, DOC, K_AMP,
                       K_PHASE, V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                       offs_da, offs_dp, offs_dv, DA, DP, DV, LK, start, stop, head_param, amp_scale, phase_scale,
                       MODE: tl.constexpr, MASKED: tl.constexpr, HAS_DOCS: tl.constexpr, NEED_DHEAD: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """Accumulate one query block's gradients over the key blocks starting in ``[start, stop)``.

    Returns ``(dqa, dqp, dhead)``: fp32, unscaled, and the per-row sums of the per-head gradient. With HAS_DOCS, key
    blocks whose document ids miss ``[q_doc_min, q_doc_max]`` are skipped whole.
    """
    for start_n in range(start, stop, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < LK
        if HAS_DOCS:
            k_doc = tl.load(DOC + offs_n, mask=key_ok, other=-1)
            k_doc_min = tl.min(tl.where(key_ok, k_doc, q_doc_max + 1), 0)
            if (tl.max(k_doc, 0) >= q_doc_min) & (k_doc_min <= q_doc_max):
                dqa, dqp, dhead = _attn_bwd_dq_tile(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, q_doc, k_doc,
                                                    offs_n, key_ok, K_AMP, K_PHASE, V, stride_ka_l, stride_ka_d,
                                                    stride_kp_l, stride_kp_d, stride_v_l, stride_v_d, offs_da,
                                                    offs_dp, offs_dv, DA, DP, DV, head_param, amp_scale,
                                                    phase_scale, MODE, MASKED, HAS_DOCS, NEED_DHEAD, DOT_PRECISION)
        else:
            dqa, dqp, dhead = _attn_bwd_dq_tile(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, q_doc, q_doc, offs_n,
                                                key_ok, K_AMP, K_PHASE, V, stride_ka_l, stride_ka_d, stride_kp_l,
                                                stride_kp_d, stride_v_l, stride_v_d, offs_da, offs_dp, offs_dv, DA,
                                                DP, DV, head_param, amp_scale, phase_scale, MODE, MASKED, HAS_DOCS,
                                                NEED_DHEAD, DOT_PRECISION)
    return dqa, dqp, dhead


@triton.autotune(configs=bwd_dq_configs(), key=TUNE_KEY)
@triton.jit
def _attn_bwd_dq(Q_AMP, K_AMP, Q_PHASE, K_PHASE, V, DO, LSE, DELTA, HEAD_PARAM, DOC, DQ_AMP, DQ_PHASE, DHEAD,
                 stride_qa_b, stride_qa_h, stride_qa_l, stride_qa_d,
                 stride_ka_b, stride_ka_h, stride_ka_l, stride_ka_d,
                 stride_qp_b, stride_qp_h, stride_qp_l, stride_qp_d,
                 stride_kp_b, stride_kp_h, stride_kp_l, stride_kp_d,
                 stride_v_b, stride_v_h, stride_v_l, stride_v_d,
                 stride_do_b, stride_do_h, stride_do_l, stride_do_d,
                 amp_scale, phase_scale, H, GROUP, LQ, LK, DA, DP, DV,
                 MODE: tl.constexpr, HAS_DOCS: tl.constexpr, NEED_DHEAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 BLOCK_DA: tl.constexpr, BLOCK_DP: tl.constexpr, BLOCK_DV: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid ``(cdiv(LQ, BLOCK_M), B*H)``. Writes DQ_AMP, DQ_PHASE (TAPA only): contiguous, shaped like Q_AMP, Q_PHASE;
    and, when NEED_DHEAD, DHEAD ``(B, H, LQ)`` fp32: each row's share of dalpha_h (TAPA) or dm_h (ALiBi). DOC and
    HAS_DOCS: document masking, as in the forward kernel."""
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
    q_doc = offs_m
    q_doc_min = 0
    q_doc_max = 0
    if HAS_DOCS:
        DOC += b * LK
        q_doc = tl.load(DOC + q_pos, mask=row_ok, other=-1)
        q_doc_min = tl.min(tl.where(row_ok, q_doc, 2147483647), 0)
        q_doc_max = tl.max(q_doc, 0)
    K_AMP += b * stride_ka_b + hkv * stride_ka_h
    K_PHASE += b * stride_kp_b + hkv * stride_kp_h
    V += b * stride_v_b + hkv * stride_v_h

    dqa = tl.zeros([BLOCK_M, BLOCK_DA], dtype=tl.float32)
    dqp = tl.zeros([BLOCK_M, BLOCK_DP], dtype=tl.float32)
    dhead = tl.zeros([BLOCK_M], dtype=tl.float32)
    full_end = (offset + start_m) // BLOCK_N * BLOCK_N
    diag_end = tl.minimum(offset + start_m + BLOCK_M, LK)
    dqa, dqp, dhead = _attn_bwd_dq_steps(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, q_doc, q_doc_min, q_doc_max,
                                         DOC, K_AMP, K_PHASE, V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d,
                                         stride_v_l, stride_v_d, offs_da, offs_dp, offs_dv, DA, DP, DV, LK, 0,
                                         full_end, head_param, amp_scale, phase_scale, MODE, False, HAS_DOCS,
                                         NEED_DHEAD, DOT_PRECISION, BLOCK_N)
    dqa, dqp, dhead = _attn_bwd_dq_steps(dqa, dqp, dhead, qa, qp, do, lse, delta, q_pos, q_doc, q_doc_min, q_doc_max,
                                         DOC, K_AMP, K_PHASE, V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d,
                                         stride_v_l, stride_v_d, offs_da, offs_dp, offs_dv, DA, DP, DV, LK, full_end,
                                         diag_end, head_param, amp_scale, phase_scale, MODE, True, HAS_DOCS,
                                         NEED_DHEAD, DOT_PRECISION, BLOCK_N)

    tl.store(DQ_AMP + row[:, None] * DA + offs_da[None, :], (dqa * amp_scale).to(DQ_AMP.dtype.element_ty),
             mask=row_ok[:, None] & (offs_da[None, :] < DA))
    if MODE == TAPA:
        tl.store(DQ_PHASE + row[:, None] * DP + offs_dp[None, :], (dqp * -phase_scale).to(DQ_PHASE.dtype.element_ty),
                 mask=row_ok[:, None] & (offs_dp[None, :] < DP))
    if NEED_DHEAD:
        tl.store(DHEAD + row, dhead, mask=row_ok)
