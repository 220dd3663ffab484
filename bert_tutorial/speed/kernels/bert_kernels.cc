// CPU kernels for BERT training, as an MXNet 1.9 external operator library (mxnet/lib_api.h).
//
// bert_layer_norm(data, gamma, beta; eps) -> (out, mean, rstd)
//     LayerNorm over the last axis, the math of mx.nd.LayerNorm(axis=-1). mean and rstd (1 / sqrt(var + eps)),
//     shaped (..., 1), are kept for the backward pass.
// bert_dropout(data, train; p, seed, offset) -> (out, key)
//     out = data * keep * (1 / (1 - p)), where keep(i) is a keyed hash of the element index i: the mask is never
//     stored, backward recomputes it from the 2 x uint32 key output. The key comes from the attribute seed (and
//     offset) when seed >= 0, else from MXNet's seeded CPU generator (mx.random.seed). `train` is a (1,) float32
//     input: 1 runs as identity (inference), anything else applies dropout. lib_api gives operators no
//     is_train flag, so the Python side derives `train` from an op that has one.
// bert_softmax(data, length) -> out
//     Softmax over the last axis of the first length[i] entries of row i, 0 after them: the math of
//     mx.nd.softmax(data, length, axis=-1, use_length=True) (GluonNLP's self-attention). length (int32 or int64)
//     has data's shape without the last axis; a length <= 0 gives a row of zeros, one past the row is the row.
//     Backward: d(data) = out * (d(out) - sum(d(out) * out)) on the first length[i] entries, 0 after; no gradient
//     for length (zeros). One pass per row each way.
// bert_gelu(data) -> out
//     0.5 * x * (1 + erf(x / sqrt(2))), the math of mx.nd.LeakyReLU(act_type='gelu'), erf as oneDNN's (Abramowitz
//     and Stegun 7.1.26, |error| < 1.5e-7) on the vectorized exp below.
// bert_selfatt_qk(queries_keys_values; heads) -> out
//     The math of mx.nd.contrib.interleaved_matmul_selfatt_qk (GluonNLP's BERT self-attention scores).
//     queries_keys_values: (seq_len, batch, 3 * heads * head_dim), per position and sequence `heads` blocks
//     [q, k, v] of head_dim each; out: (batch * heads, seq_len, seq_len) with, for n = b * heads + h,
//         out[n, i, j] = scale * sum_d q[i, b, h, d] * k[j, b, h, d],  scale = 1 / sqrt(head_dim)
//     (scale times the sum, as MXNet's CPU op passes it to sgemm as alpha). Backward, g = d(out):
//         dq[i] = scale * sum_j g[n, i, j] * k[j],  dk[j] = scale * sum_i g[n, i, j] * q[i],  dv = 0.
// bert_selfatt_valatt(queries_keys_values, attention; heads) -> out
//     The math of mx.nd.contrib.interleaved_matmul_selfatt_valatt: attention (batch * heads, seq_len, seq_len)
//     weighs the v blocks; out: (seq_len, batch, heads * head_dim) with
//         out[i, b, h * head_dim + d] = sum_j attention[n, i, j] * v[j, b, h, d]
//     Backward, g = d(out): dv[j] = sum_i attention[n, i, j] * g[i, b, h], dq = dk = 0,
//         d(attention)[n, i, j] = sum_d g[i, b, h, d] * v[j, b, h, d].
//     Both run one OpenMP task per (sequence, head); every product is rows of scalar-weighted sums of
//     contiguous rows (k and v transposed into a scratch block where the sum runs over head_dim), each output
//     accumulated in index order in its own vector lane.
//
// bert_adam_update(weight_0, grad_0, mean_0, var_0, weight_1, ...; num_tensors, lrs, wds, beta1, beta2, epsilon,
//                  rescale_grad, clip_gradient) -> (new_weight_0, new_weight_1, ...)
//     GluonNLP's BERTAdam step on num_tensors float32 weights at once; means and vars are mutated inputs and the
//     weights are updated in place when called with out=weights (like mx.nd.adam_update). Per element, as MXNet's
//     adamw_update with eta = lr:
//         g = clip(grad * rescale_grad, clip_gradient)      (no clipping when clip_gradient < 0)
//         mean = beta1 * mean + (1 - beta1) * g;  var = beta2 * var + (1 - beta2) * g * g
//         weight = weight - lr * (mean / (sqrt(var) + epsilon) + wd * weight)
//     lrs and wds are comma-separated, one per tensor. One pass over memory, every tensor split across the threads.
// bert_sum_sq(data_0, data_1, ...; num_arrays) -> out
//     out[i] = sum(data_i ** 2), float32 (accumulated in float64 per thread): the squared norms that
//     gluonnlp.utils.grad_global_norm gets from multi_sum_sq.
//
// bert_fc(data, weight, bias) -> out
//     out = data . weight^T + bias over the last axis (data (..., in), weight (out, in), bias (out,)): the math of
//     mx.nd.FullyConnected(data, weight, bias, num_hidden=out, flatten=False). The products run on the CBLAS sgemm of
//     the library named by $BERT_TUTORIAL_BLAS (scipy-openblas32's OpenBLAS by default; ILP64 cblas_sgemm64_ or LP64
//     cblas_sgemm, either with the scipy_ prefix of the scipy-openblas wheels), opened
//     on first use; without it the call fails when it is made. Backward: d(data) = d(out) . weight,
//     d(weight) = d(out)^T . data, d(bias) = d(out) summed over rows (per-thread partial sums added in a fixed order).
//
// Built with portable flags; the hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and chosen at load
// time (target_clones), so one build serves every x86-64 CPU.

#include <dlfcn.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;

typedef std::unordered_map<std::string, std::string> Attrs;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTI_ISA __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTI_ISA
#endif

// Below this many elements, waking the OpenMP team costs more than the work.
static const int64_t kParallelMin = 1 << 15;

// An optional numeric attribute: `fallback` when it is absent, false when it is there but not a number of type T.
template <typename T>
static bool parse_attr(const Attrs& attrs, const char* key, T fallback, T* out) {
  auto it = attrs.find(key);
  if (it == attrs.end()) {
    *out = fallback;
    return true;
  }
  try {
    size_t used = 0;
    if constexpr (std::is_floating_point<T>::value) {
      *out = std::stod(it->second, &used);
    } else {
      *out = std::stoll(it->second, &used);
    }
    return used == it->second.size();
  } catch (...) {
    return false;
  }
}

static int64_t count(const MXTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return n;
}

// ------------------------------------------------------------------------------------------------ LayerNorm

// One row: the row is read from memory once; the second and third sweeps run from L1 (a row is a few KB).
// Two sweeps for the variance (not sum and sum of squares) keep the result as exact as MXNet's.
MULTI_ISA static void ln_forward_rows(const float* x, const float* gamma, const float* beta, float* y,
                                      float* mean_out, float* rstd_out, int64_t begin, int64_t end, int64_t n,
                                      float eps) {
  const float inv_n = 1.0f / static_cast<float>(n);
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) sum += xr[j];
    const float mean = sum * inv_n;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < n; ++j) {
      const float c = xr[j] - mean;
      sq += c * c;
    }
    const float rstd = 1.0f / std::sqrt(sq * inv_n + eps);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) yr[j] = (xr[j] - mean) * rstd * gamma[j] + beta[j];
    mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, xhat = (x - mean) * rstd; gamma's and
// beta's gradients accumulate into this thread's own rows dgamma, dbeta (summed over threads afterwards).
MULTI_ISA static void ln_backward_rows(const float* dy, const float* x, const float* gamma, const float* mean,
                                       const float* rstd, float* dx, float* dgamma, float* dbeta, int64_t begin,
                                       int64_t end, int64_t n) {
  const float inv_n = 1.0f / static_cast<float>(n);
  for (int64_t r = begin; r < end; ++r) {
    const float* dyr = dy + r * n;
    const float* xr = x + r * n;
    const float m = mean[r], s = rstd[r];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t j = 0; j < n; ++j) {
      const float xhat = (xr[j] - m) * s;
      const float g = dyr[j] * gamma[j];
      sum_g += g;
      sum_gx += g * xhat;
      dgamma[j] += dyr[j] * xhat;
      dbeta[j] += dyr[j];
    }
    if (dx != nullptr) {
      float* dxr = dx + r * n;
      const float a = sum_g * inv_n, b = sum_gx * inv_n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float xhat = (xr[j] - m) * s;
        dxr[j] = s * (dyr[j] * gamma[j] - a - xhat * b);
      }
    }
  }
}

static MXReturnValue ln_parse(const Attrs& attrs, int* num_in, int* num_out) {
  double eps;
  if (!parse_attr<double>(attrs, "eps", 1e-5, &eps) || !(eps >= 0)) {
    MX_ERROR_MSG << "bert_layer_norm: eps must be a number >= 0";
    return MX_FAIL;
  }
  *num_in = 3;
  *num_out = 3;
  return MX_SUCCESS;
}

static MXReturnValue ln_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  for (size_t i = 0; i < in->size(); ++i) {
    if (in->at(i) != kFloat32) {
      MX_ERROR_MSG << "bert_layer_norm: input " << i << " must be float32";
      return MX_FAIL;
    }
  }
  for (size_t i = 0; i < out->size(); ++i) out->at(i) = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue ln_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                    std::vector<std::vector<unsigned>>* out) {
  const std::vector<unsigned>& data = in->at(0);
  if (data.empty()) {
    MX_ERROR_MSG << "bert_layer_norm: data needs at least one axis";
    return MX_FAIL;
  }
  const unsigned units = data.back();
  for (int i = 1; i < 3; ++i) {
    if (in->at(i).size() != 1 || in->at(i)[0] != units) {
      MX_ERROR_MSG << "bert_layer_norm: gamma and beta must have shape (" << units << ",)";
      return MX_FAIL;
    }
  }
  std::vector<unsigned> stat(data.begin(), data.end() - 1);
  stat.push_back(1);
  out->at(0) = data;
  out->at(1) = stat;
  out->at(2) = stat;
  return MX_SUCCESS;
}

static MXReturnValue ln_forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                const OpResource& res) {
  double eps;
  parse_attr<double>(attrs, "eps", 1e-5, &eps);
  MXTensor& data = inputs->at(0);
  const int64_t n = data.shape.back();
  const int64_t rows = n ? count(data) / n : 0;
  const float* x = data.data<float>();
  const float* gamma = inputs->at(1).data<float>();
  const float* beta = inputs->at(2).data<float>();
  float* y = outputs->at(0).data<float>();
  float* mean = outputs->at(1).data<float>();
  float* rstd = outputs->at(2).data<float>();
  const float feps = static_cast<float>(eps);
#pragma omp parallel if (rows * n >= kParallelMin)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    ln_forward_rows(x, gamma, beta, y, mean, rstd, begin, end, n, feps);
  }
  return MX_SUCCESS;
}

// inputs: d(out), d(mean), d(rstd), data, gamma, beta, out, mean, rstd; outputs: d(data), d(gamma), d(beta).
// The statistics are outputs only for this pass: their incoming gradients are ignored.
static MXReturnValue ln_backward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                 const OpResource& res) {
  const float* dy = inputs->at(0).data<float>();
  MXTensor& data = inputs->at(3);
  const int64_t n = data.shape.back();
  const int64_t rows = n ? count(data) / n : 0;
  const float* x = data.data<float>();
  const float* gamma = inputs->at(4).data<float>();
  const float* mean = inputs->at(7).data<float>();
  const float* rstd = inputs->at(8).data<float>();
  float* dx = outputs->at(0).data<float>();
  float* dgamma = outputs->at(1).data<float>();
  float* dbeta = outputs->at(2).data<float>();
  const bool parallel = rows * n >= kParallelMin;
  const int max_threads = parallel ? omp_get_max_threads() : 1;
  // Per-thread partial sums of gamma's and beta's gradients, reduced in a fixed order (deterministic).
  float* partial = static_cast<float*>(res.alloc_cpu(static_cast<int>(sizeof(float) * 2 * n * max_threads)));
  std::memset(partial, 0, sizeof(float) * 2 * n * max_threads);
  int used = 1;
#pragma omp parallel num_threads(max_threads) if (parallel)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
    used = nt;
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    ln_backward_rows(dy, x, gamma, mean, rstd, dx, partial + 2 * n * t, partial + 2 * n * t + n, begin, end, n);
  }
  for (int64_t j = 0; j < n; ++j) {
    float g = 0.0f, b = 0.0f;
    for (int t = 0; t < used; ++t) {
      g += partial[2 * n * t + j];
      b += partial[2 * n * t + n + j];
    }
    dgamma[j] = g;
    dbeta[j] = b;
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_layer_norm)
    .setForward(ln_forward, "cpu")
    .setBackward(ln_backward, "cpu")
    .setParseAttrs(ln_parse)
    .setInferType(ln_infer_type)
    .setInferShape(ln_infer_shape);

// -------------------------------------------------------------------------------------------------- Dropout

// murmur3's 32-bit finalizer: a bijection of uint32 with full avalanche; two rounds keyed by (k0, k1).
static inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

static inline uint32_t element_hash(uint32_t i, uint32_t k0, uint32_t k1) { return fmix32(fmix32(i ^ k0) + k1); }

static inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// y[i] = x[i] * scale where hash(i) < threshold, else 0 (for i in [begin, end)).
MULTI_ISA static void dropout_apply(const float* x, float* y, int64_t begin, int64_t end, uint32_t k0, uint32_t k1,
                                    uint32_t threshold, float scale) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const bool keep = element_hash(static_cast<uint32_t>(i), k0, k1) < threshold;
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

struct DropoutConfig {
  double p;
  int64_t seed, offset;
};

static bool dropout_config(const Attrs& attrs, DropoutConfig* c) {
  if (!parse_attr<double>(attrs, "p", 0.5, &c->p) || !(c->p >= 0.0 && c->p < 1.0)) {
    MX_ERROR_MSG << "bert_dropout: p must be a number in [0, 1)";
    return false;
  }
  if (!parse_attr<int64_t>(attrs, "seed", -1, &c->seed) || !parse_attr<int64_t>(attrs, "offset", 0, &c->offset)) {
    MX_ERROR_MSG << "bert_dropout: seed and offset must be integers";
    return false;
  }
  return true;
}

// keep(i) <=> hash(i) < threshold: the keep probability is threshold / 2^32 = 1 - p up to 2^-32.
static uint32_t keep_threshold(double p) {
  const double t = std::floor((1.0 - p) * 4294967296.0);
  return t >= 4294967295.0 ? 4294967295u : static_cast<uint32_t>(t);
}

static float keep_scale(double p) { return static_cast<float>(1.0 / (1.0 - p)); }

static MXReturnValue dropout_parse(const Attrs& attrs, int* num_in, int* num_out) {
  DropoutConfig c;
  if (!dropout_config(attrs, &c)) return MX_FAIL;
  *num_in = 2;
  *num_out = 2;
  return MX_SUCCESS;
}

static MXReturnValue dropout_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32 || in->at(1) != kFloat32) {
    MX_ERROR_MSG << "bert_dropout: data and train must be float32";
    return MX_FAIL;
  }
  out->at(0) = kFloat32;
  out->at(1) = kInt32;
  return MX_SUCCESS;
}

static MXReturnValue dropout_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                         std::vector<std::vector<unsigned>>* out) {
  if (in->at(1).size() != 1 || in->at(1)[0] != 1) {
    MX_ERROR_MSG << "bert_dropout: train must have shape (1,)";
    return MX_FAIL;
  }
  out->at(0) = in->at(0);
  out->at(1) = {2};
  return MX_SUCCESS;
}

static void dropout_run(const float* x, float* y, int64_t size, uint32_t k0, uint32_t k1, double p) {
  const uint32_t threshold = keep_threshold(p);
  const float scale = keep_scale(p);
#pragma omp parallel if (size >= kParallelMin)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    dropout_apply(x, y, size * t / nt, size * (t + 1) / nt, k0, k1, threshold, scale);
  }
}

static MXReturnValue dropout_forward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                     std::vector<MXTensor>* outputs, const OpResource& res) {
  DropoutConfig c;
  if (!dropout_config(attrs, &c)) return MX_FAIL;
  const int64_t size = count(inputs->at(0));
  if (size > (int64_t(1) << 32)) {
    MX_ERROR_MSG << "bert_dropout: at most 2^32 elements";
    return MX_FAIL;
  }
  const float* x = inputs->at(0).data<float>();
  const bool train = inputs->at(1).data<float>()[0] != 1.0f;
  float* y = outputs->at(0).data<float>();
  uint32_t* key = reinterpret_cast<uint32_t*>(outputs->at(1).data<int32_t>());
  uint64_t k;
  if (c.seed >= 0) {
    k = splitmix64(splitmix64(static_cast<uint64_t>(c.seed)) ^ static_cast<uint64_t>(c.offset));
  } else {
    // MXNet's CPU generator, reseeded by mx.random.seed: the run's seed decides every mask.
    mx_cpu_rand_t& gen = res.get_cpu_rand_states()[0];
    k = (static_cast<uint64_t>(gen()) << 32) ^ static_cast<uint64_t>(gen()) ^ static_cast<uint64_t>(c.offset);
  }
  key[0] = static_cast<uint32_t>(k);
  key[1] = static_cast<uint32_t>(k >> 32);
  if (!train || c.p == 0.0) {
    if (y != x) std::memcpy(y, x, sizeof(float) * size);
    return MX_SUCCESS;
  }
  dropout_run(x, y, size, key[0], key[1], c.p);
  return MX_SUCCESS;
}

// inputs: d(out), d(key), data, train, out, key; outputs: d(data), d(train).
static MXReturnValue dropout_backward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                      std::vector<MXTensor>* outputs, const OpResource& res) {
  DropoutConfig c;
  if (!dropout_config(attrs, &c)) return MX_FAIL;
  const float* dy = inputs->at(0).data<float>();
  const int64_t size = count(inputs->at(0));
  const bool train = inputs->at(3).data<float>()[0] != 1.0f;
  const uint32_t* key = reinterpret_cast<const uint32_t*>(inputs->at(5).data<int32_t>());
  float* dx = outputs->at(0).data<float>();
  if (outputs->size() > 1 && outputs->at(1).data_ptr != nullptr) outputs->at(1).data<float>()[0] = 0.0f;
  if (!train || c.p == 0.0) {
    if (dx != dy) std::memcpy(dx, dy, sizeof(float) * size);
    return MX_SUCCESS;
  }
  dropout_run(dy, dx, size, key[0], key[1], c.p);
  return MX_SUCCESS;
}

REGISTER_OP(bert_dropout)
    .setForward(dropout_forward, "cpu")
    .setBackward(dropout_backward, "cpu")
    .setParseAttrs(dropout_parse)
    .setInferType(dropout_infer_type)
    .setInferShape(dropout_infer_shape);

// -------------------------------------------------------------------------------------------------- Softmax

// exp(x) for x <= 0 (Cephes' expf: Cody-Waite reduction, degree-6 polynomial; relative error ~1e-7), 0 below
// -87.3 where expf's results are subnormal. Branch-free, so the loops calling it vectorize (on AVX2 and AVX-512).
static inline float exp_nonpositive(float x) {
  const bool tiny = x < -87.3f;
  x = tiny ? 0.0f : x;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (|x / ln 2| < 2^22 here): std::floor blocks vectorization
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * z + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return tiny ? 0.0f : e * scale;
}

// Rows [begin, end) of m entries; row r uses its first len(r) entries (clamped to [0, m]).
template <typename L>
MULTI_ISA static void softmax_forward_rows(const float* x, const L* length, float* y, int64_t begin, int64_t end,
                                           int64_t m) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * m;
    float* yr = y + r * m;
    int64_t n = static_cast<int64_t>(length[r]);
    n = n < 0 ? 0 : (n > m ? m : n);
    float mx = n ? xr[0] : 0.0f;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < n; ++j) mx = xr[j] > mx ? xr[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {
      const float e = exp_nonpositive(xr[j] - mx);
      yr[j] = e;
      sum += e;
    }
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) yr[j] = yr[j] / sum;
    for (int64_t j = n; j < m; ++j) yr[j] = 0.0f;
  }
}

template <typename L>
MULTI_ISA static void softmax_backward_rows(const float* dy, const float* y, const L* length, float* dx,
                                            int64_t begin, int64_t end, int64_t m) {
  for (int64_t r = begin; r < end; ++r) {
    const float* dyr = dy + r * m;
    const float* yr = y + r * m;
    float* dxr = dx + r * m;
    int64_t n = static_cast<int64_t>(length[r]);
    n = n < 0 ? 0 : (n > m ? m : n);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) sum += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dxr[j] = yr[j] * (dyr[j] - sum);
    for (int64_t j = n; j < m; ++j) dxr[j] = 0.0f;
  }
}

static MXReturnValue softmax_parse(const Attrs& attrs, int* num_in, int* num_out) {
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

static MXReturnValue softmax_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32) {
    MX_ERROR_MSG << "bert_softmax: data must be float32";
    return MX_FAIL;
  }
  if (in->at(1) != kInt32 && in->at(1) != kInt64) {
    MX_ERROR_MSG << "bert_softmax: length must be int32 or int64";
    return MX_FAIL;
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue softmax_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                         std::vector<std::vector<unsigned>>* out) {
  const std::vector<unsigned>& data = in->at(0);
  if (data.size() < 2 || in->at(1) != std::vector<unsigned>(data.begin(), data.end() - 1)) {
    MX_ERROR_MSG << "bert_softmax: data needs two axes or more and length data's shape without the last axis";
    return MX_FAIL;
  }
  out->at(0) = data;
  return MX_SUCCESS;
}

static MXReturnValue softmax_forward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                     std::vector<MXTensor>* outputs, const OpResource& res) {
  MXTensor& data = inputs->at(0);
  const int64_t m = data.shape.back();
  const int64_t rows = m ? count(data) / m : 0;
  const float* x = data.data<float>();
  float* y = outputs->at(0).data<float>();
  const bool wide = inputs->at(1).dtype == kInt64;
  const void* length = inputs->at(1).data_ptr;
#pragma omp parallel if (rows * m >= kParallelMin)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    if (wide)
      softmax_forward_rows(x, static_cast<const int64_t*>(length), y, begin, end, m);
    else
      softmax_forward_rows(x, static_cast<const int32_t*>(length), y, begin, end, m);
  }
  return MX_SUCCESS;
}

// inputs: d(out), data, length, out; outputs: d(data), d(length).
static MXReturnValue softmax_backward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                      std::vector<MXTensor>* outputs, const OpResource& res) {
  const float* dy = inputs->at(0).data<float>();
  MXTensor& out = inputs->at(3);
  const int64_t m = out.shape.back();
  const int64_t rows = m ? count(out) / m : 0;
  const float* y = out.data<float>();
  const bool wide = inputs->at(2).dtype == kInt64;
  const void* length = inputs->at(2).data_ptr;
  float* dx = outputs->at(0).data<float>();
  if (outputs->size() > 1 && outputs->at(1).data_ptr != nullptr)
    std::memset(outputs->at(1).data_ptr, 0, (wide ? 8 : 4) * static_cast<size_t>(rows));
#pragma omp parallel if (rows * m >= kParallelMin)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    if (wide)
      softmax_backward_rows(dy, y, static_cast<const int64_t*>(length), dx, begin, end, m);
    else
      softmax_backward_rows(dy, y, static_cast<const int32_t*>(length), dx, begin, end, m);
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_softmax)
    .setForward(softmax_forward, "cpu")
    .setBackward(softmax_backward, "cpu")
    .setParseAttrs(softmax_parse)
    .setInferType(softmax_infer_type)
    .setInferShape(softmax_infer_shape);

// ----------------------------------------------------------------------------------------------------- GELU

static const float kRsqrt2 = 0.70710678118654752f, kRsqrt2Pi = 0.39894228040143268f;

// erf(x / sqrt(2)) (Abramowitz and Stegun 7.1.26, as oneDNN's gelu_erf) given e = exp(-x^2 / 2).
static inline float erf_rsqrt2(float x, float e) {
  const float a = std::fabs(x) * kRsqrt2;
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  return std::copysign(1.0f - p * t * e, x);
}

MULTI_ISA static void gelu_forward_range(const float* x, float* y, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const float xi = x[i];
    const float e = exp_nonpositive(-0.5f * xi * xi);
    y[i] = 0.5f * xi * (1.0f + erf_rsqrt2(xi, e));
  }
}

MULTI_ISA static void gelu_backward_range(const float* dy, const float* x, float* dx, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const float xi = x[i];
    const float e = exp_nonpositive(-0.5f * xi * xi);
    dx[i] = dy[i] * (0.5f * (1.0f + erf_rsqrt2(xi, e)) + xi * e * kRsqrt2Pi);
  }
}

static MXReturnValue gelu_parse(const Attrs& attrs, int* num_in, int* num_out) {
  *num_in = 1;
  *num_out = 1;
  return MX_SUCCESS;
}

static MXReturnValue gelu_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32) {
    MX_ERROR_MSG << "bert_gelu: data must be float32";
    return MX_FAIL;
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue gelu_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                      std::vector<std::vector<unsigned>>* out) {
  out->at(0) = in->at(0);
  return MX_SUCCESS;
}

static MXReturnValue gelu_forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                  const OpResource& res) {
  const int64_t size = count(inputs->at(0));
  const float* x = inputs->at(0).data<float>();
  float* y = outputs->at(0).data<float>();
#pragma omp parallel if (size >= kParallelMin)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    gelu_forward_range(x, y, size * t / nt, size * (t + 1) / nt);
  }
  return MX_SUCCESS;
}

// inputs: d(out), data, out; outputs: d(data).
static MXReturnValue gelu_backward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                   std::vector<MXTensor>* outputs, const OpResource& res) {
  const int64_t size = count(inputs->at(1));
  const float* dy = inputs->at(0).data<float>();
  const float* x = inputs->at(1).data<float>();
  float* dx = outputs->at(0).data<float>();
#pragma omp parallel if (size >= kParallelMin)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    gelu_backward_range(dy, x, dx, size * t / nt, size * (t + 1) / nt);
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_gelu)
    .setForward(gelu_forward, "cpu")
    .setBackward(gelu_backward, "cpu")
    .setParseAttrs(gelu_parse)
    .setInferType(gelu_infer_type)
    .setInferShape(gelu_infer_shape);

// ------------------------------------------------------------------------------------------- Self-attention

static const int kRowBlock = 4, kColBlock = 16;

// C[r * ldc + c] = alpha * sum_{t < k} W[r * wr + t * wt] * B[t * ldb + c] for r < m, c < n: rows of C are
// scalar-weighted sums of contiguous rows of B. Tiles of kRowBlock x kColBlock outputs stay in registers over the
// whole sum; each output is summed in order t = 0, 1, ... and scaled once, the same in every ISA version.
MULTI_ISA static void weighted_rows(const float* W, int64_t wr, int64_t wt, const float* B, int64_t ldb, float* C,
                                    int64_t ldc, int64_t m, int64_t n, int64_t k, float alpha) {
  for (int64_t c0 = 0; c0 < n; c0 += kColBlock) {
    const int64_t w = n - c0 < kColBlock ? n - c0 : kColBlock;
    int64_t r = 0;
    if (w == kColBlock) {
      for (; r + kRowBlock <= m; r += kRowBlock) {
        float acc[kRowBlock][kColBlock] = {};
        for (int64_t t = 0; t < k; ++t) {
          const float* b = B + t * ldb + c0;
          for (int rr = 0; rr < kRowBlock; ++rr) {
            const float s = W[(r + rr) * wr + t * wt];
#pragma omp simd
            for (int c = 0; c < kColBlock; ++c) acc[rr][c] += s * b[c];
          }
        }
        for (int rr = 0; rr < kRowBlock; ++rr) {
          float* out = C + (r + rr) * ldc + c0;
#pragma omp simd
          for (int c = 0; c < kColBlock; ++c) out[c] = alpha * acc[rr][c];
        }
      }
    }
    for (; r < m; ++r) {  // the rows left over, and the last columns when n is not a multiple of kColBlock
      float acc[kColBlock] = {};
      for (int64_t t = 0; t < k; ++t) {
        const float* b = B + t * ldb + c0;
        const float s = W[r * wr + t * wt];
#pragma omp simd
        for (int64_t c = 0; c < w; ++c) acc[c] += s * b[c];
      }
      float* out = C + r * ldc + c0;
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) out[c] = alpha * acc[c];
    }
  }
}

// Rows of one (sequence, head) lie ld floats apart, often a multiple of 4 KB: read in place they would share a few
// cache sets. Each task copies its operands into contiguous scratch first.
// dst[j * head_dim + d] = src[j * ld + d]: seq rows of head_dim (stride ld) packed.
static void pack_rows(const float* src, int64_t ld, float* dst, int64_t seq, int64_t head_dim) {
  for (int64_t j = 0; j < seq; ++j) std::memcpy(dst + j * head_dim, src + j * ld, sizeof(float) * head_dim);
}

// dst[d * seq + j] = src[j * ld + d]: seq rows of head_dim (stride ld) as head_dim rows of seq.
static void transpose_rows(const float* src, int64_t ld, float* dst, int64_t seq, int64_t head_dim) {
  for (int64_t j = 0; j < seq; ++j)
    for (int64_t d = 0; d < head_dim; ++d) dst[d * seq + j] = src[j * ld + d];
}

static void zero_rows(float* dst, int64_t ld, int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r) std::memset(dst + r * ld, 0, sizeof(float) * width);
}

// The sizes of an interleaved (seq_len, batch, 3 * heads * head_dim) projection.
struct AttentionShape {
  int64_t seq, batch, heads, head_dim;
  int64_t tasks() const { return batch * heads; }
  int64_t qkv_ld() const { return batch * heads * 3 * head_dim; }  // from one position to the next
  int64_t out_ld() const { return batch * heads * head_dim; }      // valatt's output and its gradient
  // multiply-adds of one product: below kParallelMin the team is not woken
  bool parallel() const { return tasks() * seq * seq * head_dim >= kParallelMin; }
};

static AttentionShape attention_shape(const MXTensor& qkv, int64_t heads) {
  return {qkv.shape[0], qkv.shape[1], heads, qkv.shape[2] / (3 * heads)};
}

static bool attention_heads(const Attrs& attrs, const char* op, int64_t* heads) {
  if (attrs.find("heads") == attrs.end() || !parse_attr<int64_t>(attrs, "heads", 0, heads) || *heads < 1) {
    MX_ERROR_MSG << op << ": heads must be an integer >= 1";
    return false;
  }
  return true;
}

static bool attention_qkv_shape(const std::vector<unsigned>& qkv, int64_t heads, const char* op) {
  if (qkv.size() != 3 || qkv[2] == 0 || qkv[2] % (3 * heads) != 0) {
    MX_ERROR_MSG << op << ": queries_keys_values must have shape (seq_len, batch, 3 * heads * head_dim), head_dim >= 1, "
                 << "with heads = " << heads;
    return false;
  }
  return true;
}

// Scratch of `per_thread` floats for each thread a parallel region over `shape` may run.
static float* attention_scratch(const OpResource& res, const AttentionShape& shape, int64_t per_thread,
                                int* threads) {
  *threads = shape.parallel() ? omp_get_max_threads() : 1;
  const int64_t size = per_thread * *threads;
  return size ? static_cast<float*>(res.alloc_cpu(static_cast<int>(sizeof(float) * size))) : nullptr;
}

static MXReturnValue qk_parse(const Attrs& attrs, int* num_in, int* num_out) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_qk", &heads)) return MX_FAIL;
  *num_in = 1;
  *num_out = 1;
  return MX_SUCCESS;
}

static MXReturnValue qk_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32) {
    MX_ERROR_MSG << "bert_selfatt_qk: queries_keys_values must be float32";
    return MX_FAIL;
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue qk_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                    std::vector<std::vector<unsigned>>* out) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_qk", &heads)) return MX_FAIL;
  const std::vector<unsigned>& qkv = in->at(0);
  if (!attention_qkv_shape(qkv, heads, "bert_selfatt_qk")) return MX_FAIL;
  out->at(0) = {static_cast<unsigned>(qkv[1] * heads), qkv[0], qkv[0]};
  return MX_SUCCESS;
}

// 1 / sqrt(head_dim) as MXNet's op computes it (float sqrt, double division, rounded to float).
static float qk_scale(int64_t head_dim) { return static_cast<float>(1.0 / std::sqrt(static_cast<float>(head_dim))); }

static MXReturnValue qk_forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                const OpResource& res) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_qk", &heads)) return MX_FAIL;
  const AttentionShape a = attention_shape(inputs->at(0), heads);
  const float* qkv = inputs->at(0).data<float>();
  float* out = outputs->at(0).data<float>();
  const int64_t S = a.seq, D = a.head_dim, ld = a.qkv_ld();
  const float scale = qk_scale(D);
  int threads;
  float* scratch = attention_scratch(res, a, 3 * D * S, &threads);
#pragma omp parallel num_threads(threads) if (a.parallel())
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* q = scratch + 3 * D * S * t;
    float* k = q + D * S;
    float* kt = k + D * S;
    for (int64_t n = a.tasks() * t / nt; n < a.tasks() * (t + 1) / nt; ++n) {
      pack_rows(qkv + n * 3 * D, ld, q, S, D);
      pack_rows(qkv + n * 3 * D + D, ld, k, S, D);
      transpose_rows(k, D, kt, S, D);
      weighted_rows(q, D, 1, kt, S, out + n * S * S, S, S, S, D, scale);  // out[i, :] = sum_d q[i, d] * kt[d, :]
    }
  }
  return MX_SUCCESS;
}

// inputs: d(out), queries_keys_values, out; outputs: d(queries_keys_values).
static MXReturnValue qk_backward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                 const OpResource& res) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_qk", &heads)) return MX_FAIL;
  const AttentionShape a = attention_shape(inputs->at(1), heads);
  const float* g = inputs->at(0).data<float>();
  const float* qkv = inputs->at(1).data<float>();
  float* dqkv = outputs->at(0).data<float>();
  const int64_t S = a.seq, D = a.head_dim, ld = a.qkv_ld();
  const float scale = qk_scale(D);
  int threads;
  float* scratch = attention_scratch(res, a, 2 * D * S, &threads);
#pragma omp parallel num_threads(threads) if (a.parallel())
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* q = scratch + 2 * D * S * t;
    float* k = q + D * S;
    for (int64_t n = a.tasks() * t / nt; n < a.tasks() * (t + 1) / nt; ++n) {
      const float* gn = g + n * S * S;
      float* dq = dqkv + n * 3 * D;
      pack_rows(qkv + n * 3 * D, ld, q, S, D);
      pack_rows(qkv + n * 3 * D + D, ld, k, S, D);
      weighted_rows(gn, S, 1, k, D, dq, ld, S, D, S, scale);      // dq[i, :] = sum_j g[i, j] * k[j, :]
      weighted_rows(gn, 1, S, q, D, dq + D, ld, S, D, S, scale);  // dk[j, :] = sum_i g[i, j] * q[i, :]
      zero_rows(dq + 2 * D, ld, S, D);
    }
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_selfatt_qk)
    .setForward(qk_forward, "cpu")
    .setBackward(qk_backward, "cpu")
    .setParseAttrs(qk_parse)
    .setInferType(qk_infer_type)
    .setInferShape(qk_infer_shape);

static MXReturnValue valatt_parse(const Attrs& attrs, int* num_in, int* num_out) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_valatt", &heads)) return MX_FAIL;
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

static MXReturnValue valatt_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  if (in->at(0) != kFloat32 || in->at(1) != kFloat32) {
    MX_ERROR_MSG << "bert_selfatt_valatt: queries_keys_values and attention must be float32";
    return MX_FAIL;
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue valatt_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                        std::vector<std::vector<unsigned>>* out) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_valatt", &heads)) return MX_FAIL;
  const std::vector<unsigned>& qkv = in->at(0);
  if (!attention_qkv_shape(qkv, heads, "bert_selfatt_valatt")) return MX_FAIL;
  const std::vector<unsigned> att = {static_cast<unsigned>(qkv[1] * heads), qkv[0], qkv[0]};
  if (in->at(1) != att) {
    MX_ERROR_MSG << "bert_selfatt_valatt: attention must have shape (batch * heads, seq_len, seq_len) = (" << att[0]
                 << ", " << att[1] << ", " << att[2] << ")";
    return MX_FAIL;
  }
  out->at(0) = {qkv[0], qkv[1], qkv[2] / 3};
  return MX_SUCCESS;
}

static MXReturnValue valatt_forward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                    std::vector<MXTensor>* outputs, const OpResource& res) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_valatt", &heads)) return MX_FAIL;
  const AttentionShape a = attention_shape(inputs->at(0), heads);
  const float* qkv = inputs->at(0).data<float>();
  const float* att = inputs->at(1).data<float>();
  float* out = outputs->at(0).data<float>();
  const int64_t S = a.seq, D = a.head_dim, ld = a.qkv_ld(), ldo = a.out_ld();
  int threads;
  float* scratch = attention_scratch(res, a, D * S, &threads);
#pragma omp parallel num_threads(threads) if (a.parallel())
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* v = scratch + D * S * t;
    for (int64_t n = a.tasks() * t / nt; n < a.tasks() * (t + 1) / nt; ++n) {
      pack_rows(qkv + n * 3 * D + 2 * D, ld, v, S, D);
      weighted_rows(att + n * S * S, S, 1, v, D, out + n * D, ldo, S, D, S, 1.0f);  // out[i, :] = sum_j att[i, j] * v[j, :]
    }
  }
  return MX_SUCCESS;
}

// inputs: d(out), queries_keys_values, attention, out; outputs: d(queries_keys_values), d(attention).
static MXReturnValue valatt_backward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                     std::vector<MXTensor>* outputs, const OpResource& res) {
  int64_t heads;
  if (!attention_heads(attrs, "bert_selfatt_valatt", &heads)) return MX_FAIL;
  const AttentionShape a = attention_shape(inputs->at(1), heads);
  const float* g = inputs->at(0).data<float>();
  const float* qkv = inputs->at(1).data<float>();
  const float* att = inputs->at(2).data<float>();
  float* dqkv = outputs->at(0).data<float>();
  float* datt = outputs->at(1).data<float>();
  const int64_t S = a.seq, D = a.head_dim, ld = a.qkv_ld(), ldo = a.out_ld();
  int threads;
  float* scratch = attention_scratch(res, a, 3 * D * S, &threads);
#pragma omp parallel num_threads(threads) if (a.parallel())
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* gn = scratch + 3 * D * S * t;
    float* v = gn + D * S;
    float* vt = v + D * S;
    for (int64_t n = a.tasks() * t / nt; n < a.tasks() * (t + 1) / nt; ++n) {
      const float* an = att + n * S * S;
      float* dq = dqkv + n * 3 * D;
      pack_rows(g + n * D, ldo, gn, S, D);
      pack_rows(qkv + n * 3 * D + 2 * D, ld, v, S, D);
      transpose_rows(v, D, vt, S, D);
      zero_rows(dq, ld, S, 2 * D);
      weighted_rows(an, 1, S, gn, D, dq + 2 * D, ld, S, D, S, 1.0f);  // dv[j, :] = sum_i att[i, j] * g[i, :]
      weighted_rows(gn, D, 1, vt, S, datt + n * S * S, S, S, S, D, 1.0f);  // datt[i, :] = sum_d g[i, d] * vt[d, :]
    }
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_selfatt_valatt)
    .setForward(valatt_forward, "cpu")
    .setBackward(valatt_backward, "cpu")
    .setParseAttrs(valatt_parse)
    .setInferType(valatt_infer_type)
    .setInferShape(valatt_infer_shape);

// ---------------------------------------------------------------------------------------------------- Adam

MULTI_ISA static void adam_range(const float* w, float* out, const float* g, float* m, float* v, int64_t begin, int64_t end, float lr,
                                 float wd, float beta1, float beta2, float eps, float rescale, float clip) {
  const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
  if (clip >= 0.0f) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      float gi = g[i] * rescale;
      gi = gi > clip ? clip : (gi < -clip ? -clip : gi);
      const float mi = beta1 * m[i] + c1 * gi;
      const float vi = beta2 * v[i] + c2 * (gi * gi);
      m[i] = mi;
      v[i] = vi;
      out[i] = w[i] - lr * (mi / (std::sqrt(vi) + eps) + wd * w[i]);
    }
  } else {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i] * rescale;
      const float mi = beta1 * m[i] + c1 * gi;
      const float vi = beta2 * v[i] + c2 * (gi * gi);
      m[i] = mi;
      v[i] = vi;
      out[i] = w[i] - lr * (mi / (std::sqrt(vi) + eps) + wd * w[i]);
    }
  }
}

// A comma-separated list of exactly n numbers.
static bool parse_list(const Attrs& attrs, const char* key, int64_t n, std::vector<float>* out) {
  auto it = attrs.find(key);
  if (it == attrs.end()) return false;
  out->clear();
  const std::string& text = it->second;
  size_t start = 0;
  while (start <= text.size()) {
    size_t stop = text.find(',', start);
    if (stop == std::string::npos) stop = text.size();
    const std::string item = text.substr(start, stop - start);
    try {
      size_t used = 0;
      out->push_back(std::stof(item, &used));
      if (used != item.size()) return false;
    } catch (...) {
      return false;
    }
    start = stop + 1;
  }
  return static_cast<int64_t>(out->size()) == n;
}

static MXReturnValue adam_parse(const Attrs& attrs, int* num_in, int* num_out) {
  int64_t n = 0;
  if (!parse_attr<int64_t>(attrs, "num_tensors", 0, &n) || n < 1) {
    MX_ERROR_MSG << "bert_adam_update: num_tensors must be an integer >= 1";
    return MX_FAIL;
  }
  // Checked here, when the call is made: an error in the forward would surface later, asynchronously.
  std::vector<float> values;
  double x;
  if (!parse_list(attrs, "lrs", n, &values) || !parse_list(attrs, "wds", n, &values) ||
      !parse_attr<double>(attrs, "beta1", 0.9, &x) || !parse_attr<double>(attrs, "beta2", 0.999, &x) ||
      !parse_attr<double>(attrs, "epsilon", 1e-6, &x) || !parse_attr<double>(attrs, "rescale_grad", 1.0, &x) ||
      !parse_attr<double>(attrs, "clip_gradient", -1.0, &x)) {
    MX_ERROR_MSG << "bert_adam_update: lrs and wds need num_tensors numbers each; beta1, beta2, epsilon, "
                 << "rescale_grad and clip_gradient must be numbers";
    return MX_FAIL;
  }
  *num_in = static_cast<int>(4 * n);
  *num_out = static_cast<int>(n);
  return MX_SUCCESS;
}

static MXReturnValue adam_mutate(const Attrs& attrs, std::vector<int>* indices) {
  int64_t n = 0;
  parse_attr<int64_t>(attrs, "num_tensors", 0, &n);
  for (int64_t k = 0; k < n; ++k) {
    indices->push_back(static_cast<int>(4 * k + 2));
    indices->push_back(static_cast<int>(4 * k + 3));
  }
  return MX_SUCCESS;
}

static MXReturnValue adam_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  for (int t : *in) {
    if (t != kFloat32) {
      MX_ERROR_MSG << "bert_adam_update: weights, gradients and states must be float32";
      return MX_FAIL;
    }
  }
  for (auto& t : *out) t = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue adam_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                      std::vector<std::vector<unsigned>>* out) {
  for (size_t k = 0; k + 3 < in->size(); k += 4) {
    for (size_t j = 1; j < 4; ++j) {
      if (in->at(k + j) != in->at(k)) {
        MX_ERROR_MSG << "bert_adam_update: tensor " << k / 4 << ": gradient, mean and var need the weight's shape";
        return MX_FAIL;
      }
    }
    out->at(k / 4) = in->at(k);
  }
  return MX_SUCCESS;
}

static MXReturnValue adam_forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                  const OpResource& res) {
  const int64_t n = static_cast<int64_t>(inputs->size() / 4);
  std::vector<float> lrs, wds;
  double beta1, beta2, eps, rescale, clip;
  if (!parse_list(attrs, "lrs", n, &lrs) || !parse_list(attrs, "wds", n, &wds) ||
      !parse_attr<double>(attrs, "beta1", 0.9, &beta1) || !parse_attr<double>(attrs, "beta2", 0.999, &beta2) ||
      !parse_attr<double>(attrs, "epsilon", 1e-6, &eps) || !parse_attr<double>(attrs, "rescale_grad", 1.0, &rescale) ||
      !parse_attr<double>(attrs, "clip_gradient", -1.0, &clip)) {
    MX_ERROR_MSG << "bert_adam_update: lrs and wds need num_tensors numbers each; beta1, beta2, epsilon, "
                 << "rescale_grad and clip_gradient must be numbers";
    return MX_FAIL;
  }
  int64_t total = 0;
  for (int64_t k = 0; k < n; ++k) total += count(inputs->at(4 * k));
#pragma omp parallel if (total >= kParallelMin)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t k = 0; k < n; ++k) {
      const int64_t size = count(inputs->at(4 * k));
      adam_range(inputs->at(4 * k).data<float>(), outputs->at(k).data<float>(), inputs->at(4 * k + 1).data<float>(),
                 inputs->at(4 * k + 2).data<float>(), inputs->at(4 * k + 3).data<float>(), size * t / nt,
                 size * (t + 1) / nt, lrs[k], wds[k], static_cast<float>(beta1), static_cast<float>(beta2),
                 static_cast<float>(eps), static_cast<float>(rescale), static_cast<float>(clip));
    }
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_adam_update)
    .setForward(adam_forward, "cpu")
    .setParseAttrs(adam_parse)
    .setMutateInputs(adam_mutate)
    .setInferType(adam_infer_type)
    .setInferShape(adam_infer_shape);

// -------------------------------------------------------------------------------------------- Sum of squares

MULTI_ISA static double sum_sq_range(const float* x, int64_t begin, int64_t end) {
  // float32 lanes over blocks, float64 across blocks: the vector loop stays fast and the total stays exact
  double total = 0.0;
  const int64_t block = 4096;
  for (int64_t start = begin; start < end; start += block) {
    const int64_t stop = start + block < end ? start + block : end;
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (int64_t i = start; i < stop; ++i) part += x[i] * x[i];
    total += part;
  }
  return total;
}

static MXReturnValue sum_sq_parse(const Attrs& attrs, int* num_in, int* num_out) {
  int64_t n = 0;
  if (!parse_attr<int64_t>(attrs, "num_arrays", 0, &n) || n < 1) {
    MX_ERROR_MSG << "bert_sum_sq: num_arrays must be an integer >= 1";
    return MX_FAIL;
  }
  *num_in = static_cast<int>(n);
  *num_out = 1;
  return MX_SUCCESS;
}

static MXReturnValue sum_sq_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  for (int t : *in) {
    if (t != kFloat32) {
      MX_ERROR_MSG << "bert_sum_sq: arrays must be float32";
      return MX_FAIL;
    }
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue sum_sq_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                        std::vector<std::vector<unsigned>>* out) {
  out->at(0) = std::vector<unsigned>{static_cast<unsigned>(in->size())};
  return MX_SUCCESS;
}

static MXReturnValue sum_sq_forward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                    std::vector<MXTensor>* outputs, const OpResource& res) {
  const int64_t n = static_cast<int64_t>(inputs->size());
  int64_t total = 0;
  for (int64_t k = 0; k < n; ++k) total += count(inputs->at(k));
  const int threads = total >= kParallelMin ? omp_get_max_threads() : 1;
  std::vector<double> parts(static_cast<size_t>(n * threads), 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t k = 0; k < n; ++k) {
      const int64_t size = count(inputs->at(k));
      parts[k * threads + t] = sum_sq_range(inputs->at(k).data<float>(), size * t / nt, size * (t + 1) / nt);
    }
  }
  float* out = outputs->at(0).data<float>();
  for (int64_t k = 0; k < n; ++k) {
    double s = 0.0;
    for (int t = 0; t < threads; ++t) s += parts[k * threads + t];
    out[k] = static_cast<float>(s);
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_sum_sq)
    .setForward(sum_sq_forward, "cpu")
    .setParseAttrs(sum_sq_parse)
    .setInferType(sum_sq_infer_type)
    .setInferShape(sum_sq_infer_shape);

// --------------------------------------------------------------------------------------- Dense (CBLAS sgemm)

enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };
typedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
typedef void (*sgemm32_t)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                          int);

struct Blas {
  sgemm64_t sgemm64 = nullptr;
  sgemm32_t sgemm32 = nullptr;
  std::string error;
};

static const Blas& blas() {
  static Blas b;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* path = std::getenv("BERT_TUTORIAL_BLAS");
    if (path == nullptr || !*path) {
      b.error = "BERT_TUTORIAL_BLAS names no CBLAS library";
      return;
    }
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      b.error = std::string("cannot open ") + path + (why ? std::string(" (") + why + ")" : std::string());
      return;
    }
    // ILP64 first; the scipy-openblas wheels prefix every symbol with scipy_.
    for (const char* name : {"cblas_sgemm64_", "scipy_cblas_sgemm64_"})
      if (b.sgemm64 == nullptr) b.sgemm64 = reinterpret_cast<sgemm64_t>(dlsym(handle, name));
    for (const char* name : {"cblas_sgemm", "scipy_cblas_sgemm"})
      if (b.sgemm64 == nullptr && b.sgemm32 == nullptr) b.sgemm32 = reinterpret_cast<sgemm32_t>(dlsym(handle, name));
    if (b.sgemm64 == nullptr && b.sgemm32 == nullptr)
      b.error = std::string(path) + " has no CBLAS sgemm ([scipy_]cblas_sgemm[64_])";
  });
  return b;
}

// Row-major C[m x n] = op(A) . op(B) + beta * C.
static void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                  const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const Blas& lib = blas();
  const int ta = trans_a ? kTrans : kNoTrans, tb = trans_b ? kTrans : kNoTrans;
  if (lib.sgemm64)
    lib.sgemm64(kRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  else
    lib.sgemm32(kRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a,
                static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

static MXReturnValue fc_parse(const Attrs& attrs, int* num_in, int* num_out) {
  const Blas& lib = blas();
  if (!lib.error.empty()) {
    MX_ERROR_MSG << "bert_fc: " << lib.error;
    return MX_FAIL;
  }
  *num_in = 3;
  *num_out = 1;
  return MX_SUCCESS;
}

static MXReturnValue fc_infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  for (int t : *in) {
    if (t != kFloat32) {
      MX_ERROR_MSG << "bert_fc: data, weight and bias must be float32";
      return MX_FAIL;
    }
  }
  out->at(0) = kFloat32;
  return MX_SUCCESS;
}

static MXReturnValue fc_infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                                    std::vector<std::vector<unsigned>>* out) {
  const std::vector<unsigned>&data = in->at(0), &weight = in->at(1), &bias = in->at(2);
  if (data.empty() || weight.size() != 2 || weight[1] != data.back() || bias.size() != 1 || bias[0] != weight[0]) {
    MX_ERROR_MSG << "bert_fc: needs data (..., in), weight (out, in) and bias (out,)";
    return MX_FAIL;
  }
  out->at(0) = data;
  out->at(0).back() = weight[0];
  return MX_SUCCESS;
}

static MXReturnValue fc_forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                const OpResource& res) {
  MXTensor &data = inputs->at(0), &weight = inputs->at(1);
  const int64_t n = weight.shape[0], k = weight.shape[1];
  const int64_t m = k ? count(data) / k : 0;
  const float* bias = inputs->at(2).data<float>();
  float* y = outputs->at(0).data<float>();
  if (m == 0 || n == 0) return MX_SUCCESS;
#pragma omp parallel for if (m * n >= kParallelMin)
  for (int64_t r = 0; r < m; ++r) std::memcpy(y + r * n, bias, sizeof(float) * n);
  if (k) sgemm(false, true, m, n, k, data.data<float>(), k, weight.data<float>(), k, 1.0f, y, n);
  return MX_SUCCESS;
}

// inputs: d(out), data, weight, bias, out; outputs: d(data), d(weight), d(bias).
static MXReturnValue fc_backward(const Attrs& attrs, std::vector<MXTensor>* inputs,
                                 std::vector<MXTensor>* outputs, const OpResource& res) {
  const float* dy = inputs->at(0).data<float>();
  MXTensor &data = inputs->at(1), &weight = inputs->at(2);
  const int64_t n = weight.shape[0], k = weight.shape[1];
  const int64_t m = k ? count(data) / k : 0;
  float *dx = outputs->at(0).data<float>(), *dw = outputs->at(1).data<float>(), *db = outputs->at(2).data<float>();
  if (m == 0 || n == 0 || k == 0) {
    std::memset(dx, 0, sizeof(float) * count(data));
    std::memset(dw, 0, sizeof(float) * n * k);
    std::memset(db, 0, sizeof(float) * n);
    return MX_SUCCESS;
  }
  sgemm(false, false, m, k, n, dy, n, weight.data<float>(), k, 0.0f, dx, k);
  sgemm(true, false, n, k, m, dy, n, data.data<float>(), k, 0.0f, dw, k);
  const int threads = m * n >= kParallelMin ? omp_get_max_threads() : 1;
  std::vector<float> parts(static_cast<size_t>(threads * n), 0.0f);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* part = parts.data() + t * n;
    for (int64_t r = m * t / nt; r < m * (t + 1) / nt; ++r) {
      const float* row = dy + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) part[j] += row[j];
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    float sum = 0.0f;
    for (int t = 0; t < threads; ++t) sum += parts[t * n + j];
    db[j] = sum;
  }
  return MX_SUCCESS;
}

REGISTER_OP(bert_fc)
    .setForward(fc_forward, "cpu")
    .setBackward(fc_backward, "cpu")
    .setParseAttrs(fc_parse)
    .setInferType(fc_infer_type)
    .setInferShape(fc_infer_shape);

MXReturnValue initialize(int version) {
  if (version < 10900) {
    MX_ERROR_MSG << "bert_kernels needs MXNet >= 1.9, got " << version;
    return MX_FAIL;
  }
  return MX_SUCCESS;
}
