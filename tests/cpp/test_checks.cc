// SPDX-License-Identifier: Apache-2.0
// The validation helpers: each failure names the operator, the argument, the
// expectation and the value found; valid inputs pass silently.
#include "common/check.h"
#include "test_harness.h"

using hpc_ops::DType;
using hpc_ops::ErrorKind;
using hpc_ops::make_tensor;
using hpc_ops::Tensor;
using hpc_ops::detail::Checker;

namespace {
void* fake(uintptr_t address) { return reinterpret_cast<void*>(address); }
}  // namespace

TEST(dtype_messages) {
  const Checker check("my_op");
  const Tensor t = make_tensor(fake(0x1000), DType::kFloat16, {4, 8});
  check.dtype(t, "x", {DType::kFloat16});
  EXPECT_THROW_MSG(check.dtype(t, "x", {DType::kBFloat16}), ErrorKind::kInvalidArgument,
                   "hpc_ops.my_op: x must be bfloat16, got float16");
  EXPECT_THROW_MSG(check.dtype(t, "x", {DType::kBFloat16, DType::kFloat32}),
                   ErrorKind::kInvalidArgument, "x must be one of {bfloat16, float32}, got float16");
}

TEST(rank_and_shape_messages) {
  const Checker check("my_op");
  const Tensor t = make_tensor(fake(0x1000), DType::kBFloat16, {2, 3, 4});
  EXPECT_THROW_MSG(check.ndim(t, "x", 2, "[rows, hidden]"), ErrorKind::kInvalidArgument,
                   "x must be 2-D [rows, hidden], got 3-D with shape [2, 3, 4]");
  EXPECT_THROW_MSG(check.dim(t, "x", 2, 5, "the hidden size"), ErrorKind::kInvalidArgument,
                   "x.shape[2] = 4, expected 5 (the hidden size)");
  EXPECT_THROW_MSG(check.dim_multiple_of(t, "x", 1, 8, "the hidden size"),
                   ErrorKind::kUnsupported, "x.shape[1] = 3, expected a multiple of 8");
  EXPECT_THROW_MSG(check.dim_at_most(t, "x", 2, 2, "why"), ErrorKind::kUnsupported,
                   "x.shape[2] = 4, supported up to 2 (why)");
  const Tensor u = make_tensor(fake(0x1000), DType::kBFloat16, {2, 3});
  EXPECT_THROW_MSG(check.same_shape(u, "out", t, "x"), ErrorKind::kInvalidArgument,
                   "out has shape [2, 3], expected [2, 3, 4] (the shape of x)");
}

TEST(stride_and_alignment_messages) {
  const Checker check("my_op");
  const Tensor strided = make_tensor(fake(0x1000), DType::kBFloat16, {4, 8}, {16, 2});
  EXPECT_THROW_MSG(check.last_dim_contiguous(strided, "x"), ErrorKind::kUnsupported,
                   "x.stride(1) = 2, expected 1 (the last dim must be contiguous)");
  EXPECT_THROW_MSG(check.contiguous(strided, "x"), ErrorKind::kUnsupported,
                   "x must be contiguous: stride(1) = 2, expected 1");
  const Tensor misaligned = make_tensor(fake(0x1002), DType::kBFloat16, {4, 8});
  EXPECT_THROW_MSG(check.aligned(misaligned, "x", 16), ErrorKind::kUnsupported,
                   "x.data_ptr() = 0x1002 is not 16-byte aligned");
  const Tensor odd_rows = make_tensor(fake(0x1000), DType::kBFloat16, {4, 8}, {12, 1});
  EXPECT_THROW_MSG(check.aligned(odd_rows, "x", 16), ErrorKind::kUnsupported,
                   "x.stride(0) = 12 elements (24 bytes), expected a multiple of 16 bytes");
  // A row stride larger than the row is fine when aligned; a single row is exempt.
  check.aligned(make_tensor(fake(0x1000), DType::kBFloat16, {4, 8}, {24, 1}), "x", 16);
  check.aligned(make_tensor(fake(0x1000), DType::kBFloat16, {1, 8}, {12, 1}), "x", 16);
  EXPECT_THROW_MSG(
      check.non_negative_strides(make_tensor(fake(0x1000), DType::kBFloat16, {4, 8}, {-8, 1}), "x"),
      ErrorKind::kUnsupported, "x.stride(0) = -8, expected >= 0");
}

TEST(device_messages) {
  const Checker check("my_op");
  Tensor cpu = make_tensor(fake(0x1000), DType::kBFloat16, {4, 8});
  cpu.device = {hpc_ops::DeviceType::kCPU, 0};
  EXPECT_THROW_MSG(check.on_cuda(cpu, "x"), ErrorKind::kInvalidArgument,
                   "x must be on a CUDA device, got cpu");
  const Tensor gpu0 = make_tensor(fake(0x1000), DType::kBFloat16, {4, 8}, 0);
  const Tensor gpu1 = make_tensor(fake(0x1000), DType::kBFloat16, {4, 8}, 1);
  EXPECT_THROW_MSG(check.same_device(gpu1, "weight", gpu0, "x"), ErrorKind::kInvalidArgument,
                   "weight is on cuda:1 but x is on cuda:0");
  check.same_device(gpu0, "weight", gpu0, "x");
}

TEST(make_tensor_strides) {
  const Tensor t = make_tensor(fake(0x1000), DType::kFloat32, {2, 3, 4});
  EXPECT_EQ(t.strides[0], 12);
  EXPECT_EQ(t.strides[1], 4);
  EXPECT_EQ(t.strides[2], 1);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(hpc_ops::dtype_size(DType::kFloat8E4M3), 1);
  EXPECT_EQ(std::string(hpc_ops::dtype_name(DType::kFloat8E4M3)), std::string("float8_e4m3fn"));
}

TEST_MAIN()
