// SPDX-License-Identifier: Apache-2.0
// The one heuristic of the row-wise engine: how many 8-element vectors each
// thread keeps in registers, how many threads share a row and how many rows a
// CTA holds. Pure host code, unit-tested on the CPU (tests/cpp) and printed by
// the benchmark.
#pragma once

#include <cstdint>
#include <string>

#include "common/device_info.h"

namespace hpc_ops::rowwise {

// Largest row the engine keeps in registers: 16 vectors x 8 elements x 512 threads.
constexpr int64_t kMaxCols = 16 * 8 * 512;

struct RowwiseConfig {
  int vecs_per_thread = 1;   // compile-time variant: 1, 2, 4, 8 or 16
  int threads_per_row = 32;  // a multiple of 32
  int rows_per_cta = 1;
  int64_t grid = 0;          // row tiles (the launcher caps CTAs at what fits on the GPU)
  int num_sms = 1;
  bool persistent = true;    // cap CTAs at what fits (HPC_OPS_ROWWISE_PERSISTENT=0: one per tile)
  int threads_per_cta() const { return threads_per_row * rows_per_cta; }
  std::string to_string() const;
};

// cols: output columns (multiple of 8, 1..kMaxCols); rows: total rows
// (batches x rows per batch); num_sms: multiprocessors of the device.
// inputs: row tensors read per output element (1: RMSNorm, quantization;
// 2: add + RMSNorm, gated activations). force_vecs (1, 2, 4, 8, 16; 0 =
// choose) overrides the vectors per thread when the row still fits the launch
// bound; it exists for tuning (HPC_OPS_ROWWISE_VECS) and tests.
RowwiseConfig choose_rowwise_config(int64_t cols, int64_t rows, int num_sms, int inputs = 1,
                                    int force_vecs = 0);

// The streaming kernel (stream_kernel.cuh): a warp takes a chunk of
// 2 x slots consecutive 1x128 groups of one row per iteration, one group per
// half-warp per slot.
// NOTE: per-row chunks replaced a grid-stride over single groups, where every
// slot paid its own (row, group) division and 64-bit addressing: ncu counted
// 25 instructions per element on SiLU-and-mul + FP8 at C = 14336 (67% issue
// utilization) against ~11 of arithmetic; 16384 x 14336 static FP8 went from
// 312 to 282 us. Up to 4 slots (4 loads per input in flight per thread), 3
// CTAs of 256 threads per SM (85 registers; 68 used): 6 slots x 3 CTAs took
// 287 us and 8 slots x 2 CTAs 292 us in the same session.
constexpr int kStreamUnroll = 4;
constexpr int kStreamMinCtas = 3;
constexpr int kStreamThreads = 256;

// Slots (pairs of groups) per chunk: kStreamUnroll when the chunks fill every
// resident warp, else 1 (more warps, each with a shorter instruction chain).
// NOTE: one row of C = 14336 took 2.58 us with 4 slots per chunk and 2.05 us
// with one group per half-warp.
int choose_stream_slots(int64_t rows, int64_t groups_per_row, int num_sms);

// Geometry of the bulk-copy kernel (bulk_kernel.cuh): work items are row
// chunks staged in shared memory by the copy engine, `stages` per CTA in flight.
struct BulkConfig {
  bool usable = false;       // false: the rows do not fit the shared-memory budget
  int chunk_cols = 0;        // columns per item (the whole row when a row statistic is needed)
  int stages = 0;
  int ctas_per_sm = 0;
  int buffer_bytes = 0;      // per input per stage, a multiple of 128
  int buffers_offset = 0;    // the barriers come first
  int smem_bytes = 0;        // dynamic shared memory per CTA
  int64_t items = 0;
  int64_t grid = 0;
  std::string to_string() const;
};

constexpr int kBulkThreads = 256;
// NOTE: 4096 columns per item when no row statistic is needed: 8-16 KB per
// input buffer, so a CTA keeps several items in flight within its budget.
constexpr int kBulkChunkCols = 4096;
constexpr int kBulkMaxStages = 8;
using detail::kSmemPerCtaMax;       // common/device_info.h
using detail::kSmemPerSm;
using detail::kSmemReservedPerCta;
constexpr int kBulkStaticSmem = 256;         // bound on the bulk kernel's static shared memory

// cols: output columns; rows: total rows; in_bytes: bytes per input element;
// inputs: row tensors read (1 or 2); whole_row: items must be whole rows (the
// row's sum of squares or maximum is needed). ctas_per_sm (0 = choose)
// exists for tuning (HPC_OPS_BULK_CTAS).
BulkConfig choose_bulk_config(int64_t cols, int64_t rows, int num_sms, int in_bytes, int inputs,
                              bool whole_row, int ctas_per_sm = 0);

// Largest threads per row allowed for a vector count; also the kernel's
// __launch_bounds__, so registers per thread stay under 65536 / that.
// NOTE: measured on the H200: 2 vectors x 256 threads ran add + RMSNorm + FP8
// at hidden 4096 in 36.6 us where 4 x 128 took 46.4 us, so the narrow variants
// may use up to 512 threads per row. The 16-vector variant (rows over 16384
// columns) spills under its 512-thread bound; see docs/perf/norm.md.
// The 4-vector variant is bounded at 224 threads (rows up to 7168 columns) so
// that 4 CTAs fit at 72 registers: RMSNorm at hidden 7168 ran at 87.6% of the
// ceiling with 4 CTAs per SM and 77% with 3.
constexpr int max_threads_for_vecs(int vecs) {
  return vecs <= 2 || vecs == 16 ? 512 : vecs == 4 ? 224 : 256;
}

// Second __launch_bounds__ argument: CTAs that must fit per SM, which caps
// registers at 65536 / (max threads x this). NOTE: uncapped, ptxas spent
// 98-128 registers on the 4-vector variants (2 CTAs of 224 threads per SM);
// capped at 64 they spilled up to 176 bytes; 3 CTAs (85 registers) is the
// compromise. 1-2 vectors fit 64 registers without spills.
constexpr int min_ctas_for_vecs(int vecs) { return vecs <= 2 ? 2 : vecs == 4 ? 4 : vecs == 8 ? 2 : 1; }

// The looped kernel (looped_kernel.cuh): kLoopedVecs vectors per thread per
// pass step, one CTA per row of at most kLoopedMaxThreads threads, bounded so
// that kLoopedMinCtas CTAs fit per SM (<= 51 registers; it uses 48).
constexpr int kLoopedVecs = 4;
constexpr int kLoopedMaxThreads = 256;
constexpr int kLoopedMinCtas = 5;

// Threads of the looped kernel's CTA for a row of `cols` columns: enough that
// one step covers the row, a multiple of 32, at most kLoopedMaxThreads (wider
// rows take several steps).
int looped_threads(int64_t cols);

// Whether RMSNorm (bf16 or static FP8 output) runs on the looped kernel rather
// than the register kernel.
// NOTE: measured on the H200 (docs/perf/norm.md, v8): the looped kernel wins
// from 4096 x 4096 elements up (4096 x 4096: 19.1 vs 19.5-20.2 us; 16384 x
// 7168: 113.4 vs 126.8) and loses below (1024 x 7168: 10.5 vs 9.7; 4096 x
// 2048: 11.5 vs 10.7-11.0).
constexpr int64_t kLoopedMinElements = int64_t{4096} * 4096;
bool use_looped_kernel(int64_t rows, int64_t cols);

}  // namespace hpc_ops::rowwise
