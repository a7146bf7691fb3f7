"""The score modes of the Triton attention kernels, shared by the forward and backward kernels.

A mode is chosen at compile time (the ``MODE`` constexpr):
    PLAIN  s = scale q.k
    ALIBI  s = scale q.k - m_h (i - j)                                  (Press et al. 2022)
    TAPA   s = A cos x,  A = amp_scale qA.kA,  x = phase_scale (qP.kP) |i-j|^alpha   (TAPA.md section 2; 2 pi in
           ``phase_scale``)
|i-j|^alpha is formed in fp32 in the kernel, 0 on the diagonal and exp2(alpha log2 d) elsewhere, and x is reduced to
[-pi, pi] before cos/sin, so a fast hardware cos stays accurate for the large |x| of long contexts (TAPA.md section 4).
"""

from __future__ import annotations

import triton
import triton.language as tl

# Globals a kernel reads must be tl.constexpr instances. The modes are passed as ``MODE=<mode>.value``.
PLAIN = tl.constexpr(0)
ALIBI = tl.constexpr(1)
TAPA = tl.constexpr(2)

TWO_PI_HI = tl.constexpr(6.28125)  # 2 pi = TWO_PI_HI + TWO_PI_LO; HI has few mantissa bits, so turns * HI is exact
TWO_PI_LO = tl.constexpr(0.0019353071795864769)
INV_TWO_PI = tl.constexpr(0.15915494309189535)
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _distance_pow(distance, alpha):
    """``(|i-j|^alpha, log2|i-j|)`` in fp32 for an int tile of distances ``i - j``; both 0 where ``i - j <= 0``
    (the power) or ``<= 1`` (the log)."""
    log2_d = tl.log2(tl.maximum(distance.to(tl.float32), 1.0))
    return tl.where(distance > 0, tl.exp2(alpha * log2_d), 0.0), log2_d


@triton.jit
def _cos_sin(x):
    """``(cos x, sin x)`` after a two-constant Cody-Waite reduction of ``x`` to [-pi, pi]."""
    turns = tl.floor(x * INV_TWO_PI + 0.5)
    r = x - turns * TWO_PI_HI
    r = r - turns * TWO_PI_LO
    return tl.cos(r), tl.sin(r)


@triton.jit
def _tapa_terms(amp_dot, phase_dot, distance, alpha, amp_scale, phase_scale):
    """The TAPA score of a tile and the terms its gradients need, all fp32 tiles.

    Args:
        amp_dot: qA.kA; phase_dot: qP.kP; distance: ``i - j`` (int); alpha: the head's exponent (fp32 scalar).

    Returns:
        ``(s, amp, x, dist_pow, log2_d, cos_x, sin_x)`` with ``s = amp cos x``.
    """
    dist_pow, log2_d = _distance_pow(distance, alpha)
    amp = amp_dot * amp_scale
    x = phase_dot * phase_scale * dist_pow
    cos_x, sin_x = _cos_sin(x)
    return amp * cos_x, amp, x, dist_pow, log2_d, cos_x, sin_x


@triton.jit
def _score(amp_dot, phase_dot, distance, head_param, amp_scale, phase_scale, MODE: tl.constexpr):
    """The score tile of any mode and the terms the TAPA gradients need, all fp32 tiles.

    Args:
        amp_dot: q.k (qA.kA in TAPA); phase_dot: qP.kP (ignored unless TAPA); distance: ``i - j`` (int);
        head_param: the head's ALiBi slope or TAPA alpha (fp32 scalar; ignored in PLAIN).

    Returns:
        ``(s, amp, x, dist_pow, log2_d, cos_x, sin_x)`` as :func:`_tapa_terms`; outside TAPA only ``s`` is meaningful
        and the other six are ``amp = scale q.k`` (placeholders the compiler drops).
    """
    if MODE == TAPA:
        s, amp, x, dist_pow, log2_d, cos_x, sin_x = _tapa_terms(amp_dot, phase_dot, distance, head_param, amp_scale,
                                                               phase_scale)
    else:
        amp = amp_dot * amp_scale
        s = amp
        if MODE == ALIBI:
            s = amp - head_param * distance.to(tl.float32)
        x = amp
        dist_pow = amp
        log2_d = amp
        cos_x = amp
        sin_x = amp
    return s, amp, x, dist_pow, log2_d, cos_x, sin_x
