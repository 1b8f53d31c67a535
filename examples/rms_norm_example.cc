// SPDX-License-Identifier: Apache-2.0
// Example: calling hpc_ops from C++ without Python.
//   RMSNorm of a [rows, hidden] bf16 activation, then the same with FP8
//   per-token output, checked against a float64 CPU reference.
// Build: part of the CMake build (target rms_norm_example). Run: ./rms_norm_example
// Without a GPU it says so and exits 0.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "hpc_ops/hpc_ops.h"

#define CHECK_CUDA(expr)                                                           \
  do {                                                                             \
    cudaError_t e = (expr);                                                        \
    if (e != cudaSuccess) {                                                        \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(e));       \
      return 1;                                                                    \
    }                                                                              \
  } while (0)

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("rms_norm_example: no CUDA device, nothing to run\n");
    return 0;
  }
  const int64_t rows = 7, hidden = 4096;
  const float eps = 1e-6f;

  // ---- Inputs on the host ------------------------------------------------------
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<__nv_bfloat16> x(rows * hidden), w(hidden);
  for (auto& v : x) v = __float2bfloat16(normal(rng));
  for (auto& v : w) v = __float2bfloat16(1.0f + 0.1f * normal(rng));

  // ---- Device buffers: the library never allocates -------------------------------
  void *d_x, *d_w, *d_out, *d_q, *d_scale;
  CHECK_CUDA(cudaMalloc(&d_x, x.size() * 2));
  CHECK_CUDA(cudaMalloc(&d_w, w.size() * 2));
  CHECK_CUDA(cudaMalloc(&d_out, x.size() * 2));
  CHECK_CUDA(cudaMalloc(&d_q, x.size()));
  CHECK_CUDA(cudaMalloc(&d_scale, rows * sizeof(float)));
  CHECK_CUDA(cudaMemcpy(d_x, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_w, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));

  // ---- The calls: views + explicit outputs + a stream -------------------------------
  using namespace hpc_ops;
  const Tensor tx = make_tensor(d_x, DType::kBFloat16, {rows, hidden});
  const Tensor tw = make_tensor(d_w, DType::kBFloat16, {hidden});
  try {
    rms_norm(tx, tw, eps, make_tensor(d_out, DType::kBFloat16, {rows, hidden}), Fp8Output{},
             stream);
    Fp8Output per_token{Fp8Scaling::kPerToken, make_tensor(d_scale, DType::kFloat32, {rows, 1})};
    rms_norm(tx, tw, eps, make_tensor(d_q, DType::kFloat8E4M3, {rows, hidden}), per_token, stream);
  } catch (const Error& e) {
    std::fprintf(stderr, "hpc_ops error: %s\n", e.what());
    return 1;
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));

  // ---- Check against a float64 reference ---------------------------------------------
  std::vector<__nv_bfloat16> out(x.size());
  std::vector<__nv_fp8_e4m3> q(x.size());
  std::vector<float> scale(rows);
  CHECK_CUDA(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(q.data(), d_q, q.size(), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(scale.data(), d_scale, rows * sizeof(float), cudaMemcpyDeviceToHost));
  double worst_bf16 = 0.0, worst_fp8 = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double sum_sq = 0.0;
    for (int64_t c = 0; c < hidden; ++c) {
      const double v = __bfloat162float(x[r * hidden + c]);
      sum_sq += v * v;
    }
    const double inv_rms = 1.0 / std::sqrt(sum_sq / hidden + eps);
    for (int64_t c = 0; c < hidden; ++c) {
      const double ref = __bfloat162float(x[r * hidden + c]) * inv_rms * __bfloat162float(w[c]);
      const double got = __bfloat162float(out[r * hidden + c]);
      const double deq = static_cast<float>(q[r * hidden + c]) * scale[r];
      worst_bf16 = std::fmax(worst_bf16, std::fabs(got - ref) / (std::fabs(ref) + 1e-2));
      worst_fp8 = std::fmax(worst_fp8, std::fabs(deq - ref) / (std::fabs(ref) + 1e-1));
    }
  }
  std::printf("rms_norm %lldx%lld: worst relative error bf16 %.2e, fp8 per-token %.2e\n",
              static_cast<long long>(rows), static_cast<long long>(hidden), worst_bf16, worst_fp8);
  const bool ok = worst_bf16 < 1e-2 && worst_fp8 < 1.3e-1;
  std::printf("%s\n", ok ? "OK" : "MISMATCH");
  cudaFree(d_x); cudaFree(d_w); cudaFree(d_out); cudaFree(d_q); cudaFree(d_scale);
  cudaStreamDestroy(stream);
  return ok ? 0 : 1;
}
