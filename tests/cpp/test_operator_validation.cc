// SPDX-License-Identifier: Apache-2.0
// Every operator rejects bad arguments with a clear hpc_ops::Error before any
// launch. Pointers are fake: if validation let a call through, the launch
// would fail (no GPU) or fault, so a passing test shows the check came first.
#include <cuda_runtime_api.h>

#include "hpc_ops/hpc_ops.h"
#include "test_harness.h"

using namespace hpc_ops;

namespace {
void* fake(uintptr_t address) { return reinterpret_cast<void*>(address); }
Tensor bf16(std::initializer_list<int64_t> shape) {
  return make_tensor(fake(0x10000), DType::kBFloat16, shape);
}
Tensor fp8(std::initializer_list<int64_t> shape) {
  return make_tensor(fake(0x20000), DType::kFloat8E4M3, shape);
}
Tensor f32(std::initializer_list<int64_t> shape) {
  return make_tensor(fake(0x30000), DType::kFloat32, shape);
}
const Fp8Output kNoQuant{};
constexpr auto kInvalid = ErrorKind::kInvalidArgument;
constexpr auto kUnsupported = ErrorKind::kUnsupported;
}  // namespace

TEST(rms_norm_rejects_bad_arguments) {
  const Tensor w = bf16({64});
  EXPECT_THROW_MSG(rms_norm(make_tensor(fake(0x10000), DType::kFloat16, {4, 64}), w, 1e-6f,
                            bf16({4, 64}), kNoQuant, nullptr),
                   kInvalid, "hpc_ops.rms_norm: x must be bfloat16, got float16");
  EXPECT_THROW_MSG(rms_norm(bf16({64}), w, 1e-6f, bf16({64}), kNoQuant, nullptr), kInvalid,
                   "x must be 2-D [rows, hidden], got 1-D");
  EXPECT_THROW_MSG(rms_norm(bf16({4, 60}), bf16({60}), 1e-6f, bf16({4, 60}), kNoQuant, nullptr),
                   kUnsupported, "x.shape[1] = 60, expected a multiple of 8 (the hidden size)");
  EXPECT_THROW_MSG(rms_norm(bf16({4, 64}), bf16({72}), 1e-6f, bf16({4, 64}), kNoQuant, nullptr),
                   kInvalid, "weight.shape[0] = 72, expected 64 (the hidden size, x.shape[1])");
  EXPECT_THROW_MSG(rms_norm(bf16({4, 64}), w, 1e-6f, bf16({5, 64}), kNoQuant, nullptr), kInvalid,
                   "out has shape [5, 64], expected [4, 64]");
  EXPECT_THROW_MSG(rms_norm(bf16({4, 64}), w, -1.0f, bf16({4, 64}), kNoQuant, nullptr), kInvalid,
                   "eps = -1, expected a finite value >= 0");
  EXPECT_THROW_MSG(rms_norm(bf16({4, 64}), w, 1e-6f, fp8({4, 64}), kNoQuant, nullptr), kInvalid,
                   "out must be bfloat16, got float8_e4m3fn");
  EXPECT_THROW_MSG(rms_norm(make_tensor(fake(0x10000), DType::kBFloat16, {4, 64}, {64, 2}), w,
                            1e-6f, bf16({4, 64}), kNoQuant, nullptr),
                   kUnsupported, "x.stride(1) = 2, expected 1");
  EXPECT_THROW_MSG(rms_norm(make_tensor(fake(0x10002), DType::kBFloat16, {4, 64}), w, 1e-6f,
                            bf16({4, 64}), kNoQuant, nullptr),
                   kUnsupported, "x.data_ptr() = 0x10002 is not 16-byte aligned");
  Tensor cpu = bf16({4, 64});
  cpu.device.type = DeviceType::kCPU;
  EXPECT_THROW_MSG(rms_norm(cpu, w, 1e-6f, bf16({4, 64}), kNoQuant, nullptr), kInvalid,
                   "x must be on a CUDA device, got cpu");
  EXPECT_THROW_MSG(
      rms_norm(bf16({4, 64}), make_tensor(fake(0x10000), DType::kBFloat16, {64}, 1), 1e-6f,
               bf16({4, 64}), kNoQuant, nullptr),
      kInvalid, "weight is on cuda:1 but x is on cuda:0");
}

TEST(fp8_output_arguments) {
  const Tensor x = bf16({4, 256});
  const Tensor w = bf16({256});
  EXPECT_THROW_MSG(rms_norm(x, w, 1e-6f, fp8({4, 256}), Fp8Output{Fp8Scaling::kPerToken, {}},
                            nullptr),
                   kInvalid, "quantization per_token needs a scale tensor (output)");
  EXPECT_THROW_MSG(rms_norm(x, w, 1e-6f, fp8({4, 256}),
                            Fp8Output{Fp8Scaling::kPerTensorDynamic, f32({1})}, nullptr),
                   kUnsupported, "quantization per_tensor (dynamic) is not supported here");
  EXPECT_THROW_MSG(rms_norm(x, w, 1e-6f, fp8({4, 256}),
                            Fp8Output{Fp8Scaling::kPerToken, f32({4})}, nullptr),
                   kInvalid, "scale must be 2-D [rows, 1], got 1-D");
  EXPECT_THROW_MSG(rms_norm(x, w, 1e-6f, fp8({4, 256}),
                            Fp8Output{Fp8Scaling::kPerGroup128, f32({4, 3})}, nullptr),
                   kInvalid, "scale.shape[1] = 3, expected 2 (one scale per 128 columns");
  EXPECT_THROW_MSG(rms_norm(x, w, 1e-6f, fp8({4, 256}),
                            Fp8Output{Fp8Scaling::kPerTensorStatic, f32({2})}, nullptr),
                   kInvalid, "scale must hold exactly 1 element");
  EXPECT_THROW_MSG(rms_norm(x, w, 1e-6f, fp8({4, 256}),
                            Fp8Output{Fp8Scaling::kPerTensorStatic, bf16({1})}, nullptr),
                   kInvalid, "scale must be float32, got bfloat16");
  EXPECT_THROW_MSG(rms_norm(x, w, 1e-6f, bf16({4, 256}), Fp8Output{Fp8Scaling::kNone, f32({1})},
                            nullptr),
                   kInvalid, "a scale tensor was given but no FP8 quantization was requested");
}

TEST(fused_add_rms_norm_rejects_bad_arguments) {
  const Tensor x = bf16({4, 64});
  const Tensor w = bf16({64});
  EXPECT_THROW_MSG(fused_add_rms_norm(x, bf16({4, 72}), w, 1e-6f, bf16({4, 64}), bf16({4, 64}),
                                      kNoQuant, nullptr),
                   kInvalid, "hpc_ops.fused_add_rms_norm: residual has shape [4, 72]");
  EXPECT_THROW_MSG(fused_add_rms_norm(x, bf16({4, 64}), w, 1e-6f, bf16({4, 64}),
                                      f32({4, 64}), kNoQuant, nullptr),
                   kInvalid, "residual_out must be bfloat16, got float32");
}

TEST(activation_rejects_bad_arguments) {
  EXPECT_THROW_MSG(act_and_mul(Activation::kSilu, bf16({4, 100}), bf16({4, 50}), kNoQuant, nullptr),
                   kUnsupported,
                   "hpc_ops.silu_and_mul: x.shape[1] = 100, expected a multiple of 16 (2 * C, with C a multiple of 8)");
  EXPECT_THROW_MSG(act_and_mul(Activation::kGeluTanh, bf16({4, 128}), bf16({4, 128}), kNoQuant,
                               nullptr),
                   kInvalid, "hpc_ops.gelu_tanh_and_mul: out.shape[1] = 128, expected 64");
  const Tensor counts = make_tensor(fake(0x40000), DType::kInt32, {3});
  EXPECT_THROW_MSG(act_and_mul_masked(Activation::kSilu, bf16({4, 8, 128}), counts,
                                      bf16({4, 8, 64}), kNoQuant, nullptr),
                   kInvalid, "row_counts.shape[0] = 3, expected 4 (the number of experts E");
  EXPECT_THROW_MSG(act_and_mul_masked(Activation::kSilu, bf16({4, 8, 128}),
                                      make_tensor(fake(0x40000), DType::kInt64, {4}),
                                      bf16({4, 8, 64}), kNoQuant, nullptr),
                   kInvalid, "row_counts must be int32, got int64");
  EXPECT_THROW_MSG(act_and_mul_masked(Activation::kSilu, bf16({4, 8, 128}),
                                      make_tensor(fake(0x40000), DType::kInt32, {4}),
                                      fp8({4, 8, 64}),
                                      Fp8Output{Fp8Scaling::kPerGroup128, f32({4, 8})}, nullptr),
                   kInvalid, "scale must be 3-D [E, max_rows, ceil(C / 128)]");
}

TEST(quantize_rejects_bad_arguments) {
  EXPECT_THROW_MSG(quantize_fp8(make_tensor(fake(0x10000), DType::kInt32, {4, 64}), fp8({4, 64}),
                                Fp8Output{Fp8Scaling::kPerToken, f32({4, 1})}, nullptr),
                   kInvalid, "x must be one of {bfloat16, float16, float32}, got int32");
  EXPECT_THROW_MSG(quantize_fp8(bf16({4, 64}), fp8({4, 64}), kNoQuant, nullptr), kUnsupported,
                   "quantization none is not supported here; supported: per_tensor (static)");
}

TEST(valid_call_without_gpu_is_a_cuda_error_not_a_crash) {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
    std::printf("  (skipped: a GPU is present and the pointers are fake)\n");
    return;
  }
  EXPECT_THROW_MSG(rms_norm(bf16({4, 64}), bf16({64}), 1e-6f, bf16({4, 64}), kNoQuant, nullptr),
                   ErrorKind::kCuda, "hpc_ops.rms_norm: CUDA error");
  // Empty problems return before touching the device.
  rms_norm(bf16({0, 64}), bf16({64}), 1e-6f, bf16({0, 64}), kNoQuant, nullptr);
}

TEST_MAIN()
