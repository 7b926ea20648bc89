// Fused block-sparse attention for the CPU (fp32 and fp64): the optional native kernel of
// `sdbert.attention.native`, compiled on first use. The pure PyTorch paths stay the reference.
//
// A plan is a list of key-block *runs* per (head, query block): `runs[h][i][j] = (first block,
// number of blocks)`, `nruns[h][i]` of them. For each (batch, head, query block) the kernel copies
// the row's key/value blocks into a thread-local buffer (cache-resident, not a tensor in memory),
// computes the scores with one GEMM, the softmax in place, and the output with a second GEMM:
// nothing the size of the attention pattern ever reaches main memory. Rows that see no key
// return zeros with a log-sum-exp of +inf (so their backward share is zero).
//
// Backward parallelises over (batch, head), so each thread owns the key/value gradients it
// accumulates into; per query block it recomputes P from the saved log-sum-exp (flash style).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// BLAS (column-major, Fortran interface), as exported by torch's own CPU library (MKL on x86-64).
// Called from inside the parallel region, where it runs single-threaded.
extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}

constexpr char N_ = 'N', T_ = 'T';

namespace blas {
inline void gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int m_ = m, n_ = n, k_ = k, lda_ = lda, ldb_ = ldb, ldc_ = ldc;
  sgemm_(&ta, &tb, &m_, &n_, &k_, &alpha, a, &lda_, b, &ldb_, &beta, c, &ldc_);
}
inline void gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                 const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  const int m_ = m, n_ = n, k_ = k, lda_ = lda, ldb_ = ldb, ldc_ = ldc;
  dgemm_(&ta, &tb, &m_, &n_, &k_, &alpha, a, &lda_, b, &ldb_, &beta, c, &ldc_);
}
}  // namespace blas

// exp for float without a library call, so loops over it vectorise: 2^(x log2 e) split into an
// integer power (built in the exponent bits) and a degree-6 polynomial on [-0.5, 0.5]
// (relative error ~1.2e-7, like Sleef's u10). Inputs below -87.3 give ~1e-38, i.e. zero weight.
static inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float t = x * 1.4426950408889634f;
  const float fi = (t + 12582912.0f) - 12582912.0f;  // round to nearest
  const float f = t - fi;
  float p = 1.5403530393381606e-4f;
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fi) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
static inline double exp_approx(double x) { return std::exp(x); }  // fp64: exact, for the oracle

template <typename T>
struct Mat {  // a (rows, D) slice of a (B, H, N, D) tensor with unit stride in D
  T* base;
  int64_t sb, sh, sn;
  Mat(const at::Tensor& t)
      : base(t.data_ptr<T>()), sb(t.stride(0)), sh(t.stride(1)), sn(t.stride(2)) {}
  T* row(int64_t b, int64_t h, int64_t n) const { return base + b * sb + h * sh + n * sn; }
};

struct Plan {
  const int64_t* runs;   // (H, nb, R, 2)
  const int64_t* nruns;  // (H, nb)
  int64_t nb, R;
  const int64_t* row_runs(int64_t h, int64_t i) const { return runs + (h * nb + i) * R * 2; }
  int64_t count(int64_t h, int64_t i) const { return nruns[h * nb + i]; }
  int64_t keys(int64_t h, int64_t i, int64_t bs) const {
    int64_t n = 0;
    const int64_t* r = row_runs(h, i);
    for (int64_t j = 0; j < count(h, i); ++j) n += r[2 * j + 1];
    return n * bs;
  }
};

// The keys (or values) of one query block: a direct pointer when they form one run, else a copy
// of the runs into `buf`. Returns the matrix pointer and sets `ld` to its leading dimension.
template <typename T>
const T* row_keys(const Mat<T>& m, int64_t b, int64_t h, const int64_t* runs, int64_t nruns,
                  int64_t bs, int64_t D, T* buf, int64_t& ld) {
  if (nruns == 1) {
    ld = m.sn;
    return m.row(b, h, runs[0] * bs);
  }
  ld = D;
  T* dst = buf;
  for (int64_t j = 0; j < nruns; ++j) {
    const int64_t first = runs[2 * j] * bs, len = runs[2 * j + 1] * bs;
    if (m.sn == D) {
      std::memcpy(dst, m.row(b, h, first), sizeof(T) * len * D);
    } else {
      for (int64_t n = 0; n < len; ++n) std::memcpy(dst + n * D, m.row(b, h, first + n), sizeof(T) * D);
    }
    dst += len * D;
  }
  return buf;
}

// Additive mask entries (0 or -inf) of a row's keys, gathered like the keys.
template <typename T>
void row_mask(const T* kmask, int64_t b, int64_t N, const int64_t* runs, int64_t nruns, int64_t bs, T* dst) {
  for (int64_t j = 0; j < nruns; ++j) {
    const int64_t first = runs[2 * j] * bs, len = runs[2 * j + 1] * bs;
    std::memcpy(dst, kmask + b * N + first, sizeof(T) * len);
    dst += len;
  }
}

// S (bs x L) = scale * Q K^T (+ mask); then, in place, the unnormalised softmax numerators
// exp(S - row max). Sets lse (+inf for a row without keys, whose numerators are all zero) and
// inv = 1 / row sum (0 for such a row); the caller scales the output rows by inv, which is
// cheaper than normalising the bs x L probabilities.
template <typename T>
void scores_softmax(const T* q, int64_t ldq, const T* k, int64_t ldk, const T* mask, int64_t bs, int64_t L,
                    int64_t D, T scale, T* S, T* lse, T* inv) {
  // Column-major BLAS: S^T (L x bs) = K (as D x L, transposed) * Q^T (D x bs).
  blas::gemm(T_, N_, L, bs, D, scale, k, ldk, q, ldq, T(0), S, L);
  for (int64_t t = 0; t < bs; ++t) {
    T* row = S + t * L;
    T mx = -std::numeric_limits<T>::infinity();
    if (mask) {
#pragma omp simd reduction(max : mx)
      for (int64_t j = 0; j < L; ++j) {
        const T x = row[j] + mask[j];
        row[j] = x;
        mx = std::max(mx, x);
      }
    } else {
#pragma omp simd reduction(max : mx)
      for (int64_t j = 0; j < L; ++j) mx = std::max(mx, row[j]);
    }
    if (mx == -std::numeric_limits<T>::infinity()) {
      std::fill(row, row + L, T(0));
      lse[t] = std::numeric_limits<T>::infinity();
      inv[t] = T(0);
      continue;
    }
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < L; ++j) {
      row[j] = exp_approx(row[j] - mx);
      sum += row[j];
    }
    inv[t] = T(1) / sum;
    lse[t] = mx + std::log(sum);
  }
}

// P (bs x L) from saved log-sum-exp: exp(scale * Q K^T + mask - lse).
template <typename T>
void probs(const T* q, int64_t ldq, const T* k, int64_t ldk, const T* mask, int64_t bs, int64_t L, int64_t D,
           T scale, const T* lse, T* P) {
  blas::gemm(T_, N_, L, bs, D, scale, k, ldk, q, ldq, T(0), P, L);
  for (int64_t t = 0; t < bs; ++t) {
    T* row = P + t * L;
    const T l = lse[t];
    if (std::isinf(l)) {
      std::fill(row, row + L, T(0));
      continue;
    }
    if (mask) {
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) row[j] = exp_approx(row[j] + mask[j] - l);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) row[j] = exp_approx(row[j] - l);
    }
  }
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& runs,
                  const at::Tensor& nruns, int64_t bs) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k, v: (B, H, N, D)");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "unit stride in D");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), "one dtype");
  TORCH_CHECK(q.size(2) % bs == 0, "sequence length must be a multiple of the block size");
  TORCH_CHECK(runs.dim() == 4 && runs.size(0) == q.size(1) && runs.size(1) == q.size(2) / bs &&
                  runs.size(3) == 2 && runs.is_contiguous() && runs.scalar_type() == at::kLong,
              "runs: (H, nb, R, 2) int64");
  TORCH_CHECK(nruns.is_contiguous() && nruns.scalar_type() == at::kLong, "nruns: (H, nb) int64");
}

template <typename T>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const T* kmask, const Plan& plan,
                  int64_t bs, double scale, at::Tensor& out, at::Tensor& lse) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), nb = plan.nb;
  const Mat<T> Q(q), K(k), V(v), O(out);
  T* lse_ptr = lse.data_ptr<T>();  // (B, H, N) contiguous
  int64_t Lmax = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < nb; ++i) Lmax = std::max(Lmax, plan.keys(h, i, bs));
  at::parallel_for(0, B * H * nb, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> S(bs * Lmax), kbuf(Lmax * D), vbuf(Lmax * D), mbuf(Lmax), inv(bs);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (H * nb), h = (item / nb) % H, i = item % nb;
      const int64_t* runs = plan.row_runs(h, i);
      const int64_t nr = plan.count(h, i), L = plan.keys(h, i, bs);
      T* o = O.row(b, h, i * bs);
      T* l = lse_ptr + (b * H + h) * N + i * bs;
      if (L == 0) {
        for (int64_t t = 0; t < bs; ++t) std::fill(o + t * O.sn, o + t * O.sn + D, T(0));
        std::fill(l, l + bs, std::numeric_limits<T>::infinity());
        continue;
      }
      int64_t ldk, ldv;
      const T* kp = row_keys(K, b, h, runs, nr, bs, D, kbuf.data(), ldk);
      const T* vp = row_keys(V, b, h, runs, nr, bs, D, vbuf.data(), ldv);
      const T* mp = nullptr;
      if (kmask) {
        row_mask(kmask, b, N, runs, nr, bs, mbuf.data());
        mp = mbuf.data();
      }
      scores_softmax(Q.row(b, h, i * bs), Q.sn, kp, ldk, mp, bs, L, D, T(scale), S.data(), l, inv.data());
      // O^T (D x bs) = V^T (D x L) * P^T (L x bs), then each row times 1 / its softmax sum
      blas::gemm(N_, N_, D, bs, L, T(1), vp, ldv, S.data(), L, T(0), o, O.sn);
      for (int64_t t = 0; t < bs; ++t) {
        T* row = o + t * O.sn;
        const T w = inv[t];
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) row[d] *= w;
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& go, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& out, const at::Tensor& lse, const T* kmask, const Plan& plan, int64_t bs,
                   double scale, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), nb = plan.nb;
  const Mat<T> Q(q), K(k), V(v), O(out), G(go), DQ(dq), DK(dk), DV(dv);
  const T* lse_ptr = lse.data_ptr<T>();
  int64_t Lmax = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < nb; ++i) Lmax = std::max(Lmax, plan.keys(h, i, bs));
  // One (batch, head) per task: the task owns that head's dk, dv, so the accumulations never race.
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> P(bs * Lmax), dS(bs * Lmax), kbuf(Lmax * D), vbuf(Lmax * D), mbuf(Lmax),
        dkbuf(Lmax * D), dvbuf(Lmax * D), delta(bs);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H, h = item % H;
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t* runs = plan.row_runs(h, i);
        const int64_t nr = plan.count(h, i), L = plan.keys(h, i, bs);
        T* dqi = DQ.row(b, h, i * bs);
        if (L == 0) {
          for (int64_t t = 0; t < bs; ++t) std::fill(dqi + t * DQ.sn, dqi + t * DQ.sn + D, T(0));
          continue;
        }
        const T* qi = Q.row(b, h, i * bs);
        const T* gi = G.row(b, h, i * bs);
        const T* oi = O.row(b, h, i * bs);
        int64_t ldk, ldv;
        const T* kp = row_keys(K, b, h, runs, nr, bs, D, kbuf.data(), ldk);
        const T* vp = row_keys(V, b, h, runs, nr, bs, D, vbuf.data(), ldv);
        const T* mp = nullptr;
        if (kmask) {
          row_mask(kmask, b, N, runs, nr, bs, mbuf.data());
          mp = mbuf.data();
        }
        probs(qi, Q.sn, kp, ldk, mp, bs, L, D, T(scale), lse_ptr + (b * H + h) * N + i * bs, P.data());
        // dP (bs x L) = dO V^T, as dP^T (L x bs) = V (D x L)^T dO^T (D x bs)
        blas::gemm(T_, N_, L, bs, D, T(1), vp, ldv, gi, G.sn, T(0), dS.data(), L);
        for (int64_t t = 0; t < bs; ++t) {
          T acc = 0;
          const T* g = gi + t * G.sn;
          const T* o = oi + t * O.sn;
#pragma omp simd reduction(+ : acc)
          for (int64_t d = 0; d < D; ++d) acc += g[d] * o[d];
          delta[t] = acc;
        }
        for (int64_t t = 0; t < bs; ++t) {
          T* ds = dS.data() + t * L;
          const T* p = P.data() + t * L;
          const T dt = delta[t];
#pragma omp simd
          for (int64_t j = 0; j < L; ++j) ds[j] = p[j] * (ds[j] - dt);
        }
        // dQ (bs x D) = scale dS K: dQ^T (D x bs) = K^T (D x L) dS^T (L x bs)
        blas::gemm(N_, N_, D, bs, L, T(scale), kp, ldk, dS.data(), L, T(0), dqi, DQ.sn);
        // dK (L x D) = scale dS^T Q and dV (L x D) = P^T dO, as (D x L) = Q^T (D x bs) dS (bs x L)
        if (nr == 1) {  // a single run: accumulate in place
          T* dkp = DK.row(b, h, runs[0] * bs);
          T* dvp = DV.row(b, h, runs[0] * bs);
          blas::gemm(N_, T_, D, L, bs, T(scale), qi, Q.sn, dS.data(), L, T(1), dkp, DK.sn);
          blas::gemm(N_, T_, D, L, bs, T(1), gi, G.sn, P.data(), L, T(1), dvp, DV.sn);
        } else {
          blas::gemm(N_, T_, D, L, bs, T(scale), qi, Q.sn, dS.data(), L, T(0), dkbuf.data(), D);
          blas::gemm(N_, T_, D, L, bs, T(1), gi, G.sn, P.data(), L, T(0), dvbuf.data(), D);
          const T* sk = dkbuf.data();
          const T* sv = dvbuf.data();
          for (int64_t j = 0; j < nr; ++j) {
            const int64_t first = runs[2 * j] * bs, len = runs[2 * j + 1] * bs;
            for (int64_t n = 0; n < len; ++n) {
              T* dkr = DK.row(b, h, first + n);
              T* dvr = DV.row(b, h, first + n);
#pragma omp simd
              for (int64_t d = 0; d < D; ++d) {
                dkr[d] += sk[d];
                dvr[d] += sv[d];
              }
              sk += D;
              sv += D;
            }
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> block_sparse_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const std::optional<at::Tensor>& kmask, const at::Tensor& runs,
                                                    const at::Tensor& nruns, int64_t block_size, double scale) {
  check_inputs(q, k, v, runs, nruns, block_size);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3);
  // (B, H, N, D) laid out as (B, N, H, D): what the model's head merge wants.
  at::Tensor out = at::empty({B, N, H, D}, q.options()).transpose(1, 2);
  at::Tensor lse = at::empty({B, H, N}, q.options());
  Plan plan{runs.data_ptr<int64_t>(), nruns.data_ptr<int64_t>(), runs.size(1), runs.size(2)};
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "block_sparse_fwd", [&] {
    const scalar_t* mask = kmask.has_value() ? kmask->data_ptr<scalar_t>() : nullptr;
    forward_impl<scalar_t>(q, k, v, mask, plan, block_size, scale, out, lse);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> block_sparse_bwd(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& kmask, const at::Tensor& runs, const at::Tensor& nruns,
    int64_t block_size, double scale) {
  check_inputs(q, k, v, runs, nruns, block_size);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && grad_out.stride(3) == 1 && out.stride(3) == 1, "grad_out, out");
  TORCH_CHECK(lse.is_contiguous(), "lse contiguous");
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3);
  at::Tensor dq = at::empty({B, N, H, D}, q.options()).transpose(1, 2);
  at::Tensor dk = at::zeros({B, N, H, D}, q.options()).transpose(1, 2);
  at::Tensor dv = at::zeros({B, N, H, D}, q.options()).transpose(1, 2);
  Plan plan{runs.data_ptr<int64_t>(), nruns.data_ptr<int64_t>(), runs.size(1), runs.size(2)};
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "block_sparse_bwd", [&] {
    const scalar_t* mask = kmask.has_value() ? kmask->data_ptr<scalar_t>() : nullptr;
    backward_impl<scalar_t>(grad_out, q, k, v, out, lse, mask, plan, block_size, scale, dq, dk, dv);
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY(sdbert_native, m) {
  m.def("block_sparse_fwd(Tensor q, Tensor k, Tensor v, Tensor? kmask, Tensor runs, Tensor nruns, "
        "int block_size, float scale) -> (Tensor, Tensor)");
  m.def("block_sparse_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? kmask, "
        "Tensor runs, Tensor nruns, int block_size, float scale) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sdbert_native, CPU, m) {
  m.impl("block_sparse_fwd", &block_sparse_fwd);
  m.impl("block_sparse_bwd", &block_sparse_bwd);
}
