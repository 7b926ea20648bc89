// Fused block-sparse attention for the CPU (fp32 and fp64): the optional native kernel of
// `sdbert.attention.native`, compiled on first use. The pure PyTorch paths stay the reference.
//
// A plan is a list of key-block *runs* per (head, query block): `runs[h][i][j] = (first block,
// number of blocks)`, `nruns[h][i]` of them. For each (batch, head, query block) the kernel copies
// the row's key/value blocks into a thread-local buffer (cache-resident, not a tensor in memory),
// computes the scores with one GEMM, the softmax in place, and the output with a second GEMM:
// nothing the size of the attention pattern ever reaches main memory. Query blocks with the same
// key list (the global rows) are computed together, so their keys are read once; rows with more
// than kChunk keys go chunk by chunk with the online softmax. Rows that see no key
// return zeros with a log-sum-exp of +inf (so their backward share is zero).
//
// Backward parallelises over (batch, head), so each thread owns the key/value gradients it
// accumulates into; per query block it recomputes P from the saved log-sum-exp (flash style).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/max.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
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
struct Buffer {  // a per-thread scratch array, left uninitialised
  std::unique_ptr<T[]> p;
  explicit Buffer(int64_t n) : p(new T[std::max<int64_t>(n, 1)]) {}
  T* data() { return p.get(); }
  T& operator[](int64_t i) { return p[i]; }
};

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
  const int64_t* order;  // (H, nb): query blocks, rows with the same key list next to each other
  const int64_t* glen;   // (H, nb): rows in the group that starts at this position, 0 inside one
  int64_t nb, R, max_group;
  const int64_t* row_runs(int64_t h, int64_t i) const { return runs + (h * nb + i) * R * 2; }
  int64_t count(int64_t h, int64_t i) const { return nruns[h * nb + i]; }
  const int64_t* group(int64_t h, int64_t j) const { return order + h * nb + j; }
  int64_t group_size(int64_t h, int64_t j) const { return glen[h * nb + j]; }
};

// The rows of a group of query blocks as one (M x D) matrix: a direct pointer for a single block,
// else a copy into `buf` (gather) that `put_rows` writes back (scatter).
template <typename T>
const T* get_rows(const Mat<T>& m, int64_t b, int64_t h, const int64_t* blocks, int64_t g, int64_t bs,
                  int64_t D, T* buf, int64_t& ld) {
  if (g == 1) {
    ld = m.sn;
    return m.row(b, h, blocks[0] * bs);
  }
  ld = D;
  for (int64_t r = 0; r < g; ++r)
    for (int64_t t = 0; t < bs; ++t) std::memcpy(buf + (r * bs + t) * D, m.row(b, h, blocks[r] * bs + t), sizeof(T) * D);
  return buf;
}

template <typename T>
void put_rows(const Mat<T>& m, int64_t b, int64_t h, const int64_t* blocks, int64_t g, int64_t bs, int64_t D,
              const T* buf) {
  for (int64_t r = 0; r < g; ++r)
    for (int64_t t = 0; t < bs; ++t) std::memcpy(m.row(b, h, blocks[r] * bs + t), buf + (r * bs + t) * D, sizeof(T) * D);
}

// Keys are processed in chunks of at most kChunk, so the scores of a long row (a global block
// against every key) stay in cache: the forward merges chunks with the online softmax, the
// backward needs no merging (it knows each row's log-sum-exp).
constexpr int64_t kChunk = 1024;

struct Piece {  // a contiguous range of key tokens
  int64_t first, len;
};

struct Chunks {  // a row's key runs cut into chunks of at most kChunk keys
  std::vector<Piece> pieces;
  std::vector<int64_t> starts;  // chunk c is pieces[starts[c] .. starts[c + 1])
  std::vector<int64_t> sizes;   // keys in chunk c
  void build(const int64_t* runs, int64_t nruns, int64_t bs) {
    pieces.clear();
    starts.assign(1, 0);
    sizes.clear();
    int64_t filled = 0;
    for (int64_t j = 0; j < nruns; ++j) {
      int64_t first = runs[2 * j] * bs, len = runs[2 * j + 1] * bs;
      while (len > 0) {
        const int64_t take = std::min(len, kChunk - filled);
        pieces.push_back({first, take});
        filled += take;
        first += take;
        len -= take;
        if (filled == kChunk) close(filled);
      }
    }
    if (filled) close(filled);
  }
  int64_t count() const { return static_cast<int64_t>(sizes.size()); }
  const Piece* begin(int64_t c) const { return pieces.data() + starts[c]; }
  int64_t npieces(int64_t c) const { return starts[c + 1] - starts[c]; }

 private:
  void close(int64_t& filled) {
    starts.push_back(static_cast<int64_t>(pieces.size()));
    sizes.push_back(filled);
    filled = 0;
  }
};

// The keys (or values) of one chunk: a direct pointer when it is one piece, else a copy of the
// pieces into `buf`. Returns the matrix pointer and sets `ld` to its leading dimension.
template <typename T>
const T* chunk_rows(const Mat<T>& m, int64_t b, int64_t h, const Piece* pieces, int64_t n, int64_t D, T* buf,
                    int64_t& ld) {
  if (n == 1) {
    ld = m.sn;
    return m.row(b, h, pieces[0].first);
  }
  ld = D;
  T* dst = buf;
  for (int64_t j = 0; j < n; ++j) {
    if (m.sn == D) {
      std::memcpy(dst, m.row(b, h, pieces[j].first), sizeof(T) * pieces[j].len * D);
    } else {
      for (int64_t r = 0; r < pieces[j].len; ++r) std::memcpy(dst + r * D, m.row(b, h, pieces[j].first + r), sizeof(T) * D);
    }
    dst += pieces[j].len * D;
  }
  return buf;
}

// Additive mask entries (0 or -inf) of a chunk's keys, gathered like the keys.
template <typename T>
const T* chunk_mask(const T* kmask, const Piece* pieces, int64_t n, T* buf) {
  if (!kmask) return nullptr;
  if (n == 1) return kmask + pieces[0].first;
  T* dst = buf;
  for (int64_t j = 0; j < n; ++j) {
    std::memcpy(dst, kmask + pieces[j].first, sizeof(T) * pieces[j].len);
    dst += pieces[j].len;
  }
  return buf;
}

// Adds `src` (rows x D, contiguous) into the rows of `m` that the pieces name.
template <typename T>
void scatter_add(const Mat<T>& m, int64_t b, int64_t h, const Piece* pieces, int64_t n, int64_t D, const T* src) {
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r = 0; r < pieces[j].len; ++r) {
      T* dst = m.row(b, h, pieces[j].first + r);
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
      src += D;
    }
  }
}

// S (bs x L) = scale * Q K^T (+ mask), as S^T (L x bs) = K (as D x L, transposed) * Q^T (D x bs)
// in column-major BLAS terms.
template <typename T>
void scores(const T* q, int64_t ldq, const T* k, int64_t ldk, const T* mask, int64_t bs, int64_t L, int64_t D,
            T scale, T* S) {
  blas::gemm(T_, N_, L, bs, D, scale, k, ldk, q, ldq, T(0), S, L);
  if (!mask) return;
  for (int64_t t = 0; t < bs; ++t) {
    T* row = S + t * L;
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) row[j] += mask[j];
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
  const int64_t Mmax = plan.max_group * bs;
  const Mat<T> Q(q), K(k), V(v), O(out);
  T* lse_ptr = lse.data_ptr<T>();  // (B, H, N) contiguous
  constexpr T kInf = std::numeric_limits<T>::infinity();
  at::parallel_for(0, B * H * nb, 1, [&](int64_t begin, int64_t end) {
    // Uninitialised buffers: only the pages a row touches become resident memory.
    Buffer<T> S(Mmax * kChunk), kbuf(kChunk * D), vbuf(kChunk * D), mbuf(kChunk), mx(Mmax), sum(Mmax),
        alpha(Mmax), qbuf(Mmax * D), obuf(Mmax * D);
    Chunks chunks;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (H * nb), h = (item / nb) % H, j = item % nb;
      const int64_t g = plan.group_size(h, j);
      if (g == 0) continue;  // inside a group: its first position computes it
      const int64_t* blocks = plan.group(h, j);
      const int64_t M = g * bs;
      chunks.build(plan.row_runs(h, blocks[0]), plan.count(h, blocks[0]), bs);
      int64_t ldq;
      const T* qi = get_rows(Q, b, h, blocks, g, bs, D, qbuf.data(), ldq);
      T* o = g == 1 ? O.row(b, h, blocks[0] * bs) : obuf.data();
      const int64_t ldo = g == 1 ? O.sn : D;
      const T* km = kmask ? kmask + b * N : nullptr;
      std::fill(mx.data(), mx.data() + M, -kInf);
      std::fill(sum.data(), sum.data() + M, T(0));
      for (int64_t t = 0; t < M; ++t) std::fill(o + t * ldo, o + t * ldo + D, T(0));
      for (int64_t c = 0; c < chunks.count(); ++c) {
        const Piece* pc = chunks.begin(c);
        const int64_t np = chunks.npieces(c), L = chunks.sizes[c];
        int64_t ldk, ldv;
        const T* kp = chunk_rows(K, b, h, pc, np, D, kbuf.data(), ldk);
        const T* vp = chunk_rows(V, b, h, pc, np, D, vbuf.data(), ldv);
        scores(qi, ldq, kp, ldk, chunk_mask(km, pc, np, mbuf.data()), M, L, D, T(scale), S.data());
        // Online softmax: rescale what earlier chunks gave by exp(old max - new max).
        for (int64_t t = 0; t < M; ++t) {
          T* row = S.data() + t * L;
          T m = -kInf;
#pragma omp simd reduction(max : m)
          for (int64_t jj = 0; jj < L; ++jj) m = std::max(m, row[jj]);
          const T m_new = std::max(m, mx[t]);
          if (m_new == -kInf) {  // nothing seen yet in this row
            std::fill(row, row + L, T(0));
            alpha[t] = T(1);
            continue;
          }
          T sm = 0;
#pragma omp simd reduction(+ : sm)
          for (int64_t jj = 0; jj < L; ++jj) {
            row[jj] = exp_approx(row[jj] - m_new);
            sm += row[jj];
          }
          alpha[t] = mx[t] == -kInf ? T(0) : exp_approx(mx[t] - m_new);
          sum[t] = sum[t] * alpha[t] + sm;
          mx[t] = m_new;
        }
        if (c > 0) {
          for (int64_t t = 0; t < M; ++t) {
            T* row = o + t * ldo;
            const T a = alpha[t];
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) row[d] *= a;
          }
        }
        // O^T (D x M) += V^T (D x L) * P^T (L x M)
        blas::gemm(N_, N_, D, M, L, T(1), vp, ldv, S.data(), L, T(1), o, ldo);
      }
      for (int64_t t = 0; t < M; ++t) {  // normalise; a row without keys keeps zeros, lse = +inf
        const bool empty = sum[t] == T(0);
        const T w = empty ? T(0) : T(1) / sum[t];
        T* row = o + t * ldo;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) row[d] *= w;
        lse_ptr[(b * H + h) * N + blocks[t / bs] * bs + t % bs] = empty ? kInf : mx[t] + std::log(sum[t]);
      }
      if (g > 1) put_rows(O, b, h, blocks, g, bs, D, obuf.data());
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& go, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& out, const at::Tensor& lse, const T* kmask, const Plan& plan, int64_t bs,
                   double scale, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), nb = plan.nb;
  const int64_t Mmax = plan.max_group * bs;
  const Mat<T> Q(q), K(k), V(v), O(out), G(go), DQ(dq), DK(dk), DV(dv);
  const T* lse_ptr = lse.data_ptr<T>();
  // One (batch, head) per task: the task owns that head's dk, dv, so the accumulations never race.
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Buffer<T> P(Mmax * kChunk), dS(Mmax * kChunk), kbuf(kChunk * D), vbuf(kChunk * D), mbuf(kChunk),
        dkbuf(kChunk * D), dvbuf(kChunk * D), delta(Mmax), lbuf(Mmax), qbuf(Mmax * D), gbuf(Mmax * D),
        obuf(Mmax * D), dqbuf(Mmax * D);
    Chunks chunks;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H, h = item % H;
      const T* km = kmask ? kmask + b * N : nullptr;
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t g = plan.group_size(h, j);
        if (g == 0) continue;
        const int64_t* blocks = plan.group(h, j);
        const int64_t M = g * bs;
        chunks.build(plan.row_runs(h, blocks[0]), plan.count(h, blocks[0]), bs);
        int64_t ldq, ldg, ldo;
        const T* qi = get_rows(Q, b, h, blocks, g, bs, D, qbuf.data(), ldq);
        const T* gi = get_rows(G, b, h, blocks, g, bs, D, gbuf.data(), ldg);
        const T* oi = get_rows(O, b, h, blocks, g, bs, D, obuf.data(), ldo);
        T* dqi = g == 1 ? DQ.row(b, h, blocks[0] * bs) : dqbuf.data();
        const int64_t lddq = g == 1 ? DQ.sn : D;
        for (int64_t t = 0; t < M; ++t) {
          std::fill(dqi + t * lddq, dqi + t * lddq + D, T(0));
          lbuf[t] = lse_ptr[(b * H + h) * N + blocks[t / bs] * bs + t % bs];
          T acc = 0;
          const T* gr = gi + t * ldg;
          const T* orow = oi + t * ldo;
#pragma omp simd reduction(+ : acc)
          for (int64_t d = 0; d < D; ++d) acc += gr[d] * orow[d];
          delta[t] = acc;  // rowsum(dO * O)
        }
        for (int64_t c = 0; c < chunks.count(); ++c) {
          const Piece* pc = chunks.begin(c);
          const int64_t np = chunks.npieces(c), L = chunks.sizes[c];
          int64_t ldk, ldv;
          const T* kp = chunk_rows(K, b, h, pc, np, D, kbuf.data(), ldk);
          const T* vp = chunk_rows(V, b, h, pc, np, D, vbuf.data(), ldv);
          // P = exp(S - lse) (zero for a row without keys, whose lse is +inf)
          scores(qi, ldq, kp, ldk, chunk_mask(km, pc, np, mbuf.data()), M, L, D, T(scale), P.data());
          for (int64_t t = 0; t < M; ++t) {
            T* row = P.data() + t * L;
            const T lt = lbuf[t];
            if (std::isinf(lt)) {
              std::fill(row, row + L, T(0));
              continue;
            }
#pragma omp simd
            for (int64_t jj = 0; jj < L; ++jj) row[jj] = exp_approx(row[jj] - lt);
          }
          // dP (M x L) = dO V^T; then dS = P * (dP - delta), in place
          blas::gemm(T_, N_, L, M, D, T(1), vp, ldv, gi, ldg, T(0), dS.data(), L);
          for (int64_t t = 0; t < M; ++t) {
            T* ds = dS.data() + t * L;
            const T* p = P.data() + t * L;
            const T dt = delta[t];
#pragma omp simd
            for (int64_t jj = 0; jj < L; ++jj) ds[jj] = p[jj] * (ds[jj] - dt);
          }
          // dQ (M x D) += scale dS K: dQ^T (D x M) += K^T (D x L) dS^T (L x M)
          blas::gemm(N_, N_, D, M, L, T(scale), kp, ldk, dS.data(), L, T(1), dqi, lddq);
          // dK (L x D) += scale dS^T Q and dV (L x D) += P^T dO, as (D x L) = Q^T (D x M) dS (M x L)
          if (np == 1) {  // one piece: accumulate in place
            T* dkp = DK.row(b, h, pc[0].first);
            T* dvp = DV.row(b, h, pc[0].first);
            blas::gemm(N_, T_, D, L, M, T(scale), qi, ldq, dS.data(), L, T(1), dkp, DK.sn);
            blas::gemm(N_, T_, D, L, M, T(1), gi, ldg, P.data(), L, T(1), dvp, DV.sn);
          } else {
            blas::gemm(N_, T_, D, L, M, T(scale), qi, ldq, dS.data(), L, T(0), dkbuf.data(), D);
            blas::gemm(N_, T_, D, L, M, T(1), gi, ldg, P.data(), L, T(0), dvbuf.data(), D);
            scatter_add(DK, b, h, pc, np, D, dkbuf.data());
            scatter_add(DV, b, h, pc, np, D, dvbuf.data());
          }
        }
        if (g > 1) put_rows(DQ, b, h, blocks, g, bs, D, dqbuf.data());
      }
    }
  });
}

Plan make_plan(const at::Tensor& runs, const at::Tensor& nruns, const at::Tensor& order, const at::Tensor& glen) {
  TORCH_CHECK(order.is_contiguous() && glen.is_contiguous() && order.sizes() == nruns.sizes() &&
                  glen.sizes() == nruns.sizes() && order.scalar_type() == at::kLong && glen.scalar_type() == at::kLong,
              "order, glen: (H, nb) int64");
  const int64_t max_group = std::max<int64_t>(glen.numel() ? glen.max().item<int64_t>() : 1, 1);
  return Plan{runs.data_ptr<int64_t>(), nruns.data_ptr<int64_t>(), order.data_ptr<int64_t>(),
              glen.data_ptr<int64_t>(), runs.size(1), runs.size(2), max_group};
}

std::tuple<at::Tensor, at::Tensor> block_sparse_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const std::optional<at::Tensor>& kmask, const at::Tensor& runs,
                                                    const at::Tensor& nruns, const at::Tensor& order,
                                                    const at::Tensor& glen, int64_t block_size, double scale) {
  check_inputs(q, k, v, runs, nruns, block_size);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3);
  // (B, H, N, D) laid out as (B, N, H, D): what the model's head merge wants.
  at::Tensor out = at::empty({B, N, H, D}, q.options()).transpose(1, 2);
  at::Tensor lse = at::empty({B, H, N}, q.options());
  const Plan plan = make_plan(runs, nruns, order, glen);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "block_sparse_fwd", [&] {
    const scalar_t* mask = kmask.has_value() ? kmask->data_ptr<scalar_t>() : nullptr;
    forward_impl<scalar_t>(q, k, v, mask, plan, block_size, scale, out, lse);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> block_sparse_bwd(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& kmask, const at::Tensor& runs, const at::Tensor& nruns,
    const at::Tensor& order, const at::Tensor& glen, int64_t block_size, double scale) {
  check_inputs(q, k, v, runs, nruns, block_size);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && grad_out.stride(3) == 1 && out.stride(3) == 1, "grad_out, out");
  TORCH_CHECK(lse.is_contiguous(), "lse contiguous");
  // Gradients in the inputs' own layouts, so autograd stores them without a copy.
  at::Tensor dq = at::empty_like(q);
  at::Tensor dk = at::zeros_like(k);
  at::Tensor dv = at::zeros_like(v);
  const Plan plan = make_plan(runs, nruns, order, glen);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "block_sparse_bwd", [&] {
    const scalar_t* mask = kmask.has_value() ? kmask->data_ptr<scalar_t>() : nullptr;
    backward_impl<scalar_t>(grad_out, q, k, v, out, lse, mask, plan, block_size, scale, dq, dk, dv);
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY(sdbert_native, m) {
  m.def("block_sparse_fwd(Tensor q, Tensor k, Tensor v, Tensor? kmask, Tensor runs, Tensor nruns, Tensor order, "
        "Tensor glen, int block_size, float scale) -> (Tensor, Tensor)");
  m.def("block_sparse_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? kmask, "
        "Tensor runs, Tensor nruns, Tensor order, Tensor glen, int block_size, float scale) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sdbert_native, CPU, m) {
  m.impl("block_sparse_fwd", &block_sparse_fwd);
  m.impl("block_sparse_bwd", &block_sparse_bwd);
}
