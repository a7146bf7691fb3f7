"""Triton forward kernel of causal attention (plain, ALiBi, TAPA), FlashAttention-2 style.

Algorithm: Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning" (arXiv 2307.08691),
as in Triton's fused-attention tutorial: one program per (block of BLOCK_M query rows, batch x head) streams the keys
in blocks of BLOCK_N with an online softmax (running max and sum, in the exp2 domain, fp32) and stores the output and
the base-2 logsumexp of every row for the backward. Causal block skipping: a query block visits only the keys up to its
last position, first the key blocks wholly in its past (no mask), then the ones crossing the diagonal (masked).
Queries sit at the last LQ of LK positions (row i has position LK - LQ + i). Grouped-query attention reads key/value
head ``h // GROUP``. Head dimensions are padded to powers of two (at least 16, for tl.dot) with masked loads.
Score modes: :mod:`tapa_lab.kernels.triton_score`.
Document masking (HAS_DOCS): per-token document ids (segment ids) are loaded per tile and a query keeps only the keys
of its own document; a key tile whose min/max ids miss the query block's range is skipped whole (with packed
windows, every earlier document). A row that has met no key of its document yet keeps its running max at -inf and
exponentiates against 0 instead, so nothing becomes NaN.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tapa_lab.kernels.autotune import TUNE_KEY, fwd_configs
from tapa_lab.kernels.triton_score import LOG2E, PLAIN, TAPA, _score


@triton.jit
def _attn_fwd_tile(acc, m_i, l_i, qa, qp, q_pos, q_doc, k_doc, offs_n, key_ok, K_AMP, K_PHASE, V,
                   stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                   offs_da, offs_dp, offs_dv, DA, DP, DV, head_param, amp_scale, phase_scale,
                   MODE: tl.constexpr, MASKED: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One online-softmax step over the key tile ``offs_n``; returns ``(acc, m_i, l_i)``."""
    ka = tl.load(K_AMP + offs_n[:, None] * stride_ka_l + offs_da[None, :] * stride_ka_d,
                 mask=key_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
    # -- scores (BLOCK_M, BLOCK_N)
    amp_dot = tl.dot(qa, tl.trans(ka), input_precision=DOT_PRECISION)
    phase_dot = amp_dot
    if MODE == TAPA:
        kp = tl.load(K_PHASE + offs_n[:, None] * stride_kp_l + offs_dp[None, :] * stride_kp_d,
                     mask=key_ok[:, None] & (offs_dp[None, :] < DP), other=0.0)
        phase_dot = tl.dot(qp, tl.trans(kp), input_precision=DOT_PRECISION)
    distance = q_pos[:, None] - offs_n[None, :]
    s, _, _, _, _, _, _ = _score(amp_dot, phase_dot, distance, head_param, amp_scale, phase_scale, MODE)
    s = s * LOG2E
    if MASKED:
        s = tl.where((distance >= 0) & key_ok[None, :], s, float("-inf"))
    if HAS_DOCS:
        s = tl.where(q_doc[:, None] == k_doc[None, :], s, float("-inf"))  # other documents' keys
    # -- online softmax, exp2 domain: rescale the running sum and output to the new row max
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_ref = m_new
    if HAS_DOCS:
        # -- a row that has seen no key of its document yet keeps m = -inf: subtract 0 instead (all it saw is 0)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    rescale = tl.exp2(m_i - m_ref)
    p = tl.exp2(s - m_ref[:, None])
    l_i = l_i * rescale + tl.sum(p, 1)
    # -- acc = acc * rescale + P V
    v = tl.load(V + offs_n[:, None] * stride_v_l + offs_dv[None, :] * stride_v_d,
                mask=key_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
    acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def _attn_fwd_steps(acc, m_i, l_i, qa, qp, q_pos, q_doc, q_doc_min, q_doc_max, DOC, K_AMP, K_PHASE, V,
                    stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                    offs_da, offs_dp, offs_dv, DA, DP, DV, LK, start, stop, head_param, amp_scale, phase_scale,
                    MODE: tl.constexpr, MASKED: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    """Online-softmax steps over the key blocks starting in ``[start, stop)``; returns ``(acc, m_i, l_i)``.

    With HAS_DOCS, DOC points at this batch row's key document ids; a key block whose ids miss the query block's
    range ``[q_doc_min, q_doc_max]`` is skipped whole, and the others are masked to each row's document.
    """
    for start_n in range(start, stop, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < LK
        if HAS_DOCS:
            k_doc = tl.load(DOC + offs_n, mask=key_ok, other=-1)
            k_doc_min = tl.min(tl.where(key_ok, k_doc, q_doc_max + 1), 0)
            if (tl.max(k_doc, 0) >= q_doc_min) & (k_doc_min <= q_doc_max):
                acc, m_i, l_i = _attn_fwd_tile(acc, m_i, l_i, qa, qp, q_pos, q_doc, k_doc, offs_n, key_ok, K_AMP,
                                               K_PHASE, V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d,
                                               stride_v_l, stride_v_d, offs_da, offs_dp, offs_dv, DA, DP, DV,
                                               head_param, amp_scale, phase_scale, MODE, MASKED, HAS_DOCS,
                                               DOT_PRECISION)
        else:
            acc, m_i, l_i = _attn_fwd_tile(acc, m_i, l_i, qa, qp, q_pos, q_doc, q_doc, offs_n, key_ok, K_AMP,
                                           K_PHASE, V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d,
                                           stride_v_l, stride_v_d, offs_da, offs_dp, offs_dv, DA, DP, DV,
                                           head_param, amp_scale, phase_scale, MODE, MASKED, HAS_DOCS, DOT_PRECISION)
    return acc, m_i, l_i


@triton.autotune(configs=fwd_configs(), key=TUNE_KEY)
@triton.jit
def _attn_fwd(Q_AMP, K_AMP, Q_PHASE, K_PHASE, V, OUT, LSE, HEAD_PARAM, DOC,
              stride_qa_b, stride_qa_h, stride_qa_l, stride_qa_d,
              stride_ka_b, stride_ka_h, stride_ka_l, stride_ka_d,
              stride_qp_b, stride_qp_h, stride_qp_l, stride_qp_d,
              stride_kp_b, stride_kp_h, stride_kp_l, stride_kp_d,
              stride_v_b, stride_v_h, stride_v_l, stride_v_d,
              stride_o_b, stride_o_h, stride_o_l, stride_o_d,
              amp_scale, phase_scale, H, GROUP, LQ, LK, DA, DP, DV,
              MODE: tl.constexpr, HAS_DOCS: tl.constexpr, DOT_PRECISION: tl.constexpr,
              BLOCK_DA: tl.constexpr, BLOCK_DP: tl.constexpr, BLOCK_DV: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid ``(cdiv(LQ, BLOCK_M), B*H)``. Writes OUT ``(B, H, LQ, DV)`` and LSE ``(B, H, LQ)`` (fp32, base 2).

    In PLAIN and ALIBI modes Q_AMP/K_AMP are q/k and the phase operands are ignored; HEAD_PARAM holds the per-head
    ALiBi slope or TAPA alpha (fp32, ``(H,)``; ignored in PLAIN mode); ``amp_scale`` is the softmax scale there.
    With HAS_DOCS, DOC holds the document id of every key, int32 ``(B, LK)`` contiguous (queries: the last LQ), and a
    query sees only keys of its own document; otherwise DOC is not read.
    """
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

    qa = tl.load(Q_AMP + b * stride_qa_b + h * stride_qa_h + offs_m[:, None] * stride_qa_l
                 + offs_da[None, :] * stride_qa_d, mask=row_ok[:, None] & (offs_da[None, :] < DA), other=0.0)
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

    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    full_end = (offset + start_m) // BLOCK_N * BLOCK_N  # keys before it are in the past of every row of the block
    diag_end = tl.minimum(offset + start_m + BLOCK_M, LK)
    acc, m_i, l_i = _attn_fwd_steps(acc, m_i, l_i, qa, qp, q_pos, q_doc, q_doc_min, q_doc_max, DOC, K_AMP, K_PHASE,
                                    V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                                    offs_da, offs_dp, offs_dv, DA, DP, DV, LK, 0, full_end, head_param, amp_scale,
                                    phase_scale, MODE, False, HAS_DOCS, DOT_PRECISION, BLOCK_N)
    acc, m_i, l_i = _attn_fwd_steps(acc, m_i, l_i, qa, qp, q_pos, q_doc, q_doc_min, q_doc_max, DOC, K_AMP, K_PHASE,
                                    V, stride_ka_l, stride_ka_d, stride_kp_l, stride_kp_d, stride_v_l, stride_v_d,
                                    offs_da, offs_dp, offs_dv, DA, DP, DV, LK, full_end, diag_end, head_param,
                                    amp_scale, phase_scale, MODE, True, HAS_DOCS, DOT_PRECISION, BLOCK_N)

    if HAS_DOCS:
        l_i = tl.where(row_ok, l_i, 1.0)  # padding rows match no document: keep their (unstored) results finite
    acc = acc / l_i[:, None]
    tl.store(OUT + b * stride_o_b + h * stride_o_h + offs_m[:, None] * stride_o_l + offs_dv[None, :] * stride_o_d,
             acc.to(OUT.dtype.element_ty), mask=row_ok[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSE + pid_bh.to(tl.int64) * LQ + offs_m, m_i + tl.log2(l_i), mask=row_ok)
