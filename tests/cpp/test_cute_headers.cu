// SPDX-License-Identifier: Apache-2.0
// Compiles a CuTe layout algebra check against the pinned CUTLASS headers for
// sm_90a; running it checks the same facts on the host.
#include <cstdio>

#include <cute/tensor.hpp>

int main() {
  using namespace cute;
  // A 64x128 bf16 tile, K-major, split into 8-element (16-byte) vectors.
  auto tile = make_layout(make_shape(Int<64>{}, Int<128>{}), LayoutRight{});
  static_assert(size(tile) == 64 * 128, "tile size");
  auto vectors = zipped_divide(tile, make_shape(Int<1>{}, Int<8>{}));
  static_assert(size<1>(vectors) == 64 * 16, "vector count");
  const bool ok = tile(1, 0) == 128 && tile(0, 1) == 1;
  std::printf("%d passed, %d failed\n", ok ? 1 : 0, ok ? 0 : 1);
  return ok ? 0 : 1;
}
