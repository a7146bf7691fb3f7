// TAPA attention on CPU: one fused loop over cache-sized tiles (the CPU counterpart of triton_fwd.py / triton_bwd.py).
//
// score(i, j) = A_ij cos x_ij,  A_ij = qA_i . kA_j,  x_ij = (qP_i . kP_j) |i - j|^alpha   (i >= j; TAPA.md eq. 12)
//
// with qA and qP already scaled (amp_scale, phase_scale 2 pi included) by the caller. Each task owns a block of BQ query
// rows (forward) or one key/value head (backward), and walks the key blocks of BK keys it can see: the tile's two
// score matmuls and the P V / gradient matmuls go to BLAS, and the elementwise part (distance power, cos/sin, softmax)
// runs in one vectorised pass over the tile while it is in cache. Maths, gradients: TAPA.md sections 2-3; the
// PyTorch path of identical maths is tapa_torch.py, the reference for the tests.
//
//   dS = P (dP - rowsum(dO O)),  dA = dS cos x,  T = dS A sin x,  dPhi = -T |i-j|^alpha
//
// cos and sin are evaluated by polynomials in turns (x / 2 pi reduced to [-1/2, 1/2]; max error 7e-7 against float64
// over the reduced range) and exp by 2^n times a polynomial (relative error 4e-7): both vectorise, unlike libm calls.
// Inputs are float32 and contiguous: q* (B, H, Lq, D*), k*/v (B, Hkv, Lk, D*); head h reads key/value head h / G.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

// MKL (torch's BLAS on x86-64) runs its own nested thread team inside our parallel region unless told otherwise; the
// tiles' matmuls are small, so each task's BLAS calls run on the calling thread. Weak: absent with other BLAS builds.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace {

// Serial BLAS on this thread while alive (MKL only; other BLAS libraries run serially inside a parallel region).
struct SerialBlas {
  int previous = 0;
  SerialBlas() {
    if (MKL_Set_Num_Threads_Local) previous = MKL_Set_Num_Threads_Local(1);
  }
  ~SerialBlas() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous);
  }
};

// What each task of a parallel region sets on its thread (thread-local state does not follow at::parallel_for into
// its workers): no autograd for the tiles' matmuls, and serial BLAS.
struct TaskGuard {
  at::NoGradGuard no_grad;
  SerialBlas serial;
};

constexpr float kInvTwoPi = 0.15915494309189535f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (t + kRound) - kRound rounds t to an integer (|t| < 2^22)
constexpr float kLog2e = 1.4426950408889634f;

// cos(2 pi t) and sin(2 pi t) / t for t in [-1/2, 1/2], as polynomials in u = t^2 (least-squares fits on Chebyshev
// nodes, float64, rounded to float32).
inline float cos_turns(float u) {
  return 1.0f + u * (-19.739206314086914f + u * (64.93915557861328f + u * (-85.45075988769531f +
         u * (60.17205047607422f + u * (-25.982425689697266f + u * 6.547571182250977f)))));
}

inline float sin_turns_over_t(float u) {
  return 6.2831854820251465f + u * (-41.341697692871094f + u * (81.60504913330078f + u * (-76.70182037353516f +
         u * (42.017860412597656f + u * (-14.873783111572266f + u * 3.205829381942749f)))));
}

// x reduced to turns t in [-1/2, 1/2] (x = 2 pi (t + n)).
inline float turns(float x) {
  const float t = x * kInvTwoPi;
  return t - ((t + kRound) - kRound);
}

// exp(s) for s <= 0 (softmax arguments) as 2^n 2^f: n by magic-number rounding (its bits give the exponent), 2^f by a
// polynomial on [-1/2, 1/2]; arguments below -126 ln 2 give 2^-126 (a weight of 1e-38, not 0).
inline float exp_nonpos(float s) {
  const float y = std::max(s * kLog2e, -126.0f);
  const float shifted = y + kRound;
  const float f = y - (shifted - kRound);
  const float p = 1.0f + f * (0.6931471824645996f + f * (0.24022650718688965f + f * (0.05550340563058853f +
                  f * (0.009618040174245834f + f * (0.0013395310379564762f + f * 0.00015465343312826008f)))));
  const uint32_t bits = (__builtin_bit_cast(uint32_t, shifted) - 0x4B400000u + 127u) << 23;
  return p * __builtin_bit_cast(float, bits);
}


// The elementwise passes over one row of a tile, each a vectorised loop over its n visible keys (the rest of the row is
// zeroed by the caller). dist[j] = |i - j|^alpha, x[j] = qP . kP, a[j] = qA . kA.

// Forward scores: a <- a cos(x dist); returns their maximum.
float score_row(const float* __restrict x, const float* __restrict dist, float* __restrict a, int64_t n) {
  float row_max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : row_max)
  for (int64_t j = 0; j < n; ++j) {
    const float t = turns(x[j] * dist[j]);
    const float s = a[j] * cos_turns(t * t);
    a[j] = s;
    row_max = std::max(row_max, s);
  }
  return row_max;
}

// Softmax weights: a <- exp(a - shift); returns their sum.
float exp_row(float* __restrict a, int64_t n, float shift) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) a[j] = exp_nonpos(a[j] - shift);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += a[j];
  return sum;
}

// Backward, first pass: x <- the phase in turns t, p <- exp(a cos(2 pi t) - lse).
void probs_row(float* __restrict x, const float* __restrict dist, const float* __restrict a, float* __restrict p,
               int64_t n, float lse) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float t = turns(x[j] * dist[j]);
    x[j] = t;
    p[j] = exp_nonpos(a[j] * cos_turns(t * t) - lse);
  }
}

// Backward, second pass, with dS = p (dp - delta): p <- dA = dS cos x, a <- dPhi = -dS a sin(x) dist.
void grads_row(const float* __restrict t, const float* __restrict dist, const float* __restrict dp,
               float* __restrict a, float* __restrict p, int64_t n, float delta) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float u = t[j] * t[j];
    const float ds = p[j] * (dp[j] - delta);
    p[j] = ds * cos_turns(u);
    a[j] = -ds * a[j] * (t[j] * sin_turns_over_t(u)) * dist[j];
  }
}

struct Dims {
  int64_t batch, heads, kv_heads, lq, lk, dv, offset;  // offset = Lk - Lq: query i sits at key position offset + i
};

Dims dims_of(const at::Tensor& q_amp, const at::Tensor& k_amp, const at::Tensor& v) {
  return {q_amp.size(0), q_amp.size(1), k_amp.size(1), q_amp.size(2), k_amp.size(2), v.size(3),
          k_amp.size(2) - q_amp.size(2)};
}

// A (rows, Dx) block of a (..., L, Dx) tensor's head as a matrix view.
inline at::Tensor rows_of(const at::Tensor& x, int64_t b, int64_t h, int64_t start, int64_t count) {
  return x.select(0, b).select(0, h).narrow(0, start, count);
}

}  // namespace

// Forward: (out (B, H, Lq, Dv), lse (B, H, Lq)), float32. pow_table (Lk,) holds |t|^alpha for t = Lk-1 .. 0 (reversed,
// so a row's keys read it at increasing addresses; 0 at t = 0); tiles of block_q query rows x block_k keys.
std::vector<at::Tensor> tapa_forward(const at::Tensor& q_amp, const at::Tensor& k_amp, const at::Tensor& q_phase,
                                     const at::Tensor& k_phase, const at::Tensor& v, const at::Tensor& pow_table,
                                     int64_t block_q, int64_t block_k) {
  const Dims d = dims_of(q_amp, k_amp, v);
  const int64_t group = d.heads / d.kv_heads, q_blocks = (d.lq + block_q - 1) / block_q;
  auto out = at::empty({d.batch, d.heads, d.lq, d.dv}, q_amp.options());
  auto lse = at::empty({d.batch, d.heads, d.lq}, q_amp.options());
  const float* pw = pow_table.data_ptr<float>();
  at::parallel_for(0, d.batch * d.heads * q_blocks, 1, [&](int64_t begin, int64_t end) {
    TaskGuard guard;
    auto opts = q_amp.options();
    auto amp = at::empty({block_q, block_k}, opts), phase = at::empty({block_q, block_k}, opts);
    auto acc = at::empty({block_q, d.dv}, opts);
    std::vector<float> row_max(block_q), row_sum(block_q);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (d.heads * q_blocks), h = task / q_blocks % d.heads, qb = task % q_blocks;
      const int64_t hk = h / group, i0 = qb * block_q, rows = std::min(block_q, d.lq - i0);
      const int64_t key_end = d.offset + i0 + rows;  // the block sees keys [0, key_end)
      auto qa = rows_of(q_amp, b, h, i0, rows), qp = rows_of(q_phase, b, h, i0, rows);
      auto acc_rows = acc.narrow(0, 0, rows);
      acc_rows.zero_();
      std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<float>::infinity());
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      for (int64_t j0 = 0; j0 < key_end; j0 += block_k) {
        const int64_t cols = std::min(block_k, key_end - j0);
        auto a_tile = amp.narrow(0, 0, rows).narrow(1, 0, cols), x_tile = phase.narrow(0, 0, rows).narrow(1, 0, cols);
        at::mm_out(a_tile, qa, rows_of(k_amp, b, hk, j0, cols).t());
        at::mm_out(x_tile, qp, rows_of(k_phase, b, hk, j0, cols).t());
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t qpos = d.offset + i0 + r, valid = std::min(cols, qpos + 1 - j0);
          float* a_row = amp.data_ptr<float>() + r * block_k;
          const float* x_row = phase.data_ptr<float>() + r * block_k;
          const float* dist = pw + (d.lk - 1 - qpos + j0);  // dist[j] = |qpos - (j0 + j)|^alpha
          if (valid <= 0) {
            std::fill(a_row, a_row + cols, 0.0f);
            continue;
          }
          const float new_max = std::max(row_max[r], score_row(x_row, dist, a_row, valid));
          const float rescale = exp_nonpos(row_max[r] - new_max), sum = exp_row(a_row, valid, new_max);
          std::fill(a_row + valid, a_row + cols, 0.0f);
          row_sum[r] = row_sum[r] * rescale + sum;
          row_max[r] = new_max;
          if (rescale != 1.0f) {
            float* acc_row = acc.data_ptr<float>() + r * d.dv;
#pragma omp simd
            for (int64_t c = 0; c < d.dv; ++c) acc_row[c] *= rescale;
          }
        }
        acc_rows.addmm_(a_tile, rows_of(v, b, hk, j0, cols));
      }
      float* out_rows = out.data_ptr<float>() + ((b * d.heads + h) * d.lq + i0) * d.dv;
      float* lse_rows = lse.data_ptr<float>() + (b * d.heads + h) * d.lq + i0;
      for (int64_t r = 0; r < rows; ++r) {
        const float* acc_row = acc.data_ptr<float>() + r * d.dv;
        const float inv = 1.0f / row_sum[r];
#pragma omp simd
        for (int64_t c = 0; c < d.dv; ++c) out_rows[r * d.dv + c] = acc_row[c] * inv;
        lse_rows[r] = row_max[r] + std::log(row_sum[r]);
      }
    }
  });
  return {out, lse};
}

// Backward: (dq_amp, dk_amp, dq_phase, dk_phase, dv) with respect to the scaled inputs, float32; delta = rowsum(dO O)
// (B, H, Lq). One task per (batch, key/value head): it owns that head's dK, dV and its G query heads' dQ, so no two
// tasks write the same gradient rows.
std::vector<at::Tensor> tapa_backward(const at::Tensor& grad_out, const at::Tensor& q_amp, const at::Tensor& k_amp,
                                      const at::Tensor& q_phase, const at::Tensor& k_phase, const at::Tensor& v,
                                      const at::Tensor& pow_table, const at::Tensor& lse, const at::Tensor& delta,
                                      int64_t block_q, int64_t block_k) {
  const Dims d = dims_of(q_amp, k_amp, v);
  const int64_t group = d.heads / d.kv_heads;
  auto dqa = at::zeros_like(q_amp), dqp = at::zeros_like(q_phase);
  auto dka = at::zeros_like(k_amp), dkp = at::zeros_like(k_phase), dv = at::zeros_like(v);
  const float* pw = pow_table.data_ptr<float>();
  at::parallel_for(0, d.batch * d.kv_heads, 1, [&](int64_t begin, int64_t end) {
    TaskGuard guard;
    auto opts = q_amp.options();
    auto amp = at::empty({block_q, block_k}, opts), phase = at::empty({block_q, block_k}, opts);
    auto probs = at::empty({block_q, block_k}, opts), grad_p = at::empty({block_q, block_k}, opts);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / d.kv_heads, hk = task % d.kv_heads;
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const float* lse_h = lse.data_ptr<float>() + (b * d.heads + h) * d.lq;
        const float* delta_h = delta.data_ptr<float>() + (b * d.heads + h) * d.lq;
        for (int64_t i0 = 0; i0 < d.lq; i0 += block_q) {
          const int64_t rows = std::min(block_q, d.lq - i0), key_end = d.offset + i0 + rows;
          auto qa = rows_of(q_amp, b, h, i0, rows), qp = rows_of(q_phase, b, h, i0, rows);
          auto go = rows_of(grad_out, b, h, i0, rows);
          auto dqa_rows = rows_of(dqa, b, h, i0, rows), dqp_rows = rows_of(dqp, b, h, i0, rows);
          for (int64_t j0 = 0; j0 < key_end; j0 += block_k) {
            const int64_t cols = std::min(block_k, key_end - j0);
            auto tile = [&](const at::Tensor& buf) { return buf.narrow(0, 0, rows).narrow(1, 0, cols); };
            auto a_tile = tile(amp), x_tile = tile(phase), p_tile = tile(probs), dp_tile = tile(grad_p);
            auto ka = rows_of(k_amp, b, hk, j0, cols), kp = rows_of(k_phase, b, hk, j0, cols);
            auto vv = rows_of(v, b, hk, j0, cols);
            at::mm_out(a_tile, qa, ka.t());
            at::mm_out(x_tile, qp, kp.t());
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t qpos = d.offset + i0 + r, valid = std::max<int64_t>(0, std::min(cols, qpos + 1 - j0));
              const float* a_row = amp.data_ptr<float>() + r * block_k;
              float* x_row = phase.data_ptr<float>() + r * block_k;
              float* p_row = probs.data_ptr<float>() + r * block_k;
              const float* dist = pw + (d.lk - 1 - qpos + j0);
              probs_row(x_row, dist, a_row, p_row, valid, lse_h[i0 + r]);
              std::fill(p_row + valid, p_row + cols, 0.0f);
            }
            rows_of(dv, b, hk, j0, cols).addmm_(p_tile.t(), go);
            at::mm_out(dp_tile, go, vv.t());
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t qpos = d.offset + i0 + r, valid = std::max<int64_t>(0, std::min(cols, qpos + 1 - j0));
              float* a_row = amp.data_ptr<float>() + r * block_k;
              const float* t_row = phase.data_ptr<float>() + r * block_k;
              float* p_row = probs.data_ptr<float>() + r * block_k;
              const float* dp_row = grad_p.data_ptr<float>() + r * block_k;
              const float* dist = pw + (d.lk - 1 - qpos + j0);
              grads_row(t_row, dist, dp_row, a_row, p_row, valid, delta_h[i0 + r]);
              std::fill(a_row + valid, a_row + cols, 0.0f);
            }
            dqa_rows.addmm_(p_tile, ka);
            rows_of(dka, b, hk, j0, cols).addmm_(p_tile.t(), qa);
            dqp_rows.addmm_(a_tile, kp);
            rows_of(dkp, b, hk, j0, cols).addmm_(a_tile.t(), qp);
          }
        }
      }
    }
  });
  return {dqa, dka, dqp, dkp, dv};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &tapa_forward, "TAPA attention forward on CPU (out, lse)");
  m.def("backward", &tapa_backward, "TAPA attention backward on CPU (dq_amp, dk_amp, dq_phase, dk_phase, dv)");
}
