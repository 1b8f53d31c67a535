// SPDX-License-Identifier: Apache-2.0
// Helper for the per-family instantiation tables: one entry per vectors-per-
// thread variant of a (prologue, input dtype) pair. Each family's
// *_kernels.cu lists its pairs; that list is the whole set of kernels it compiles.
#pragma once

#include <array>

#include "rowwise/rowwise_host.h"
#include "rowwise/rowwise_kernel.cuh"
#include "rowwise/bulk_kernel.cuh"
#include "rowwise/looped_kernel.cuh"
#include "rowwise/stream_kernel.cuh"

namespace hpc_ops::rowwise {

template <Prologue kPrologue, class TIn>
constexpr std::array<KernelEntry, 5> vec_variants(DType in_dtype) {
  return {{
      {{kPrologue, in_dtype, 1}, &launch_rowwise_kernel<kPrologue, TIn, 1>},
      {{kPrologue, in_dtype, 2}, &launch_rowwise_kernel<kPrologue, TIn, 2>},
      {{kPrologue, in_dtype, 4}, &launch_rowwise_kernel<kPrologue, TIn, 4>},
      {{kPrologue, in_dtype, 8}, &launch_rowwise_kernel<kPrologue, TIn, 8>},
      {{kPrologue, in_dtype, 16}, &launch_rowwise_kernel<kPrologue, TIn, 16>},
  }};
}

// The streaming kernel of a (prologue, input dtype) pair; key vecs_per_thread 0.
template <Prologue kPrologue, class TIn>
constexpr std::array<KernelEntry, 1> stream_variant(DType in_dtype) {
  return {{{{kPrologue, in_dtype, kStreamingKernel}, &launch_stream_kernel<kPrologue, TIn>}}};
}

// The bulk-copy kernel of a (prologue, input dtype) pair; key vecs_per_thread -1.
template <Prologue kPrologue, class TIn>
constexpr std::array<KernelEntry, 1> bulk_variant(DType in_dtype) {
  return {{{{kPrologue, in_dtype, kBulkKernel}, &launch_bulk_kernel<kPrologue, TIn>}}};
}

// The looped kernel of a (prologue, input dtype) pair; key kLoopedKernel.
template <Prologue kPrologue, class TIn>
constexpr std::array<KernelEntry, 1> looped_variant(DType in_dtype) {
  return {{{{kPrologue, in_dtype, kLoopedKernel}, &launch_looped_kernel<kPrologue, TIn>}}};
}

// Concatenates the variant lists of one family into a single table.
template <size_t... kSizes>
constexpr auto concat_tables(const std::array<KernelEntry, kSizes>&... parts) {
  std::array<KernelEntry, (kSizes + ...)> all{};
  size_t n = 0;
  ((
       [&] {
         for (const KernelEntry& e : parts) all[n++] = e;
       }()),
   ...);
  return all;
}

}  // namespace hpc_ops::rowwise
