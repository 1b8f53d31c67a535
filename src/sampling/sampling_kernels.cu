// SPDX-License-Identifier: Apache-2.0
// Launch of the fused sampling kernel: float32 and bfloat16 logits, CTAs of
// 1024 or 512 threads (four instantiations), one cluster per row.
#include <cuda_bf16.h>

#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/launch.h"
#include "sampling/sampling_config.h"
#include "sampling/sampling_kernel.cuh"
#include "sampling/sampling_kernels.h"

namespace hpc_ops::sampling {

static_assert(kWideCluster <= kMaxClusterSize, "the kernel's cluster loops cover the wide split");

namespace {

// Opts the kernel into the device's whole shared memory and into clusters of
// up to 16 CTAs, once per device.
template <typename T, int kCtaThreads>
void prepare(const char* op) {
  HPC_OPS_CUDA_CHECK(op, detail::once_per_device([] {
    const cudaError_t err = cudaFuncSetAttribute(sampling_kernel<T, kCtaThreads>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 detail::kSmemPerCtaMax);
    if (err != cudaSuccess) return err;
    return cudaFuncSetAttribute(sampling_kernel<T, kCtaThreads>,
                                cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  }));
}

template <typename T, int kCtaThreads>
void launch(const SamplingParams& p, int rows, int cluster, int64_t smem, const char* op,
            cudaStream_t stream) {
  prepare<T, kCtaThreads>(op);
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(cluster), static_cast<unsigned>(rows));
  shape.block = dim3(kCtaThreads);
  shape.smem_bytes = static_cast<size_t>(smem);
  shape.cluster_x = static_cast<unsigned>(cluster);
  HPC_OPS_CUDA_CHECK(op, detail::launch_kernel(sampling_kernel<T, kCtaThreads>, shape, stream, p));
}

template <typename T>
void launch_with(const SamplingParams& p, int rows, const ClusterSplit& split, const char* op,
                 cudaStream_t stream) {
  if (split.threads == kPairedCtaThreads) {
    launch<T, kPairedCtaThreads>(p, rows, split.cluster, split.smem_bytes, op, stream);
  } else {
    launch<T, kThreads>(p, rows, split.cluster, split.smem_bytes, op, stream);
  }
}

}  // namespace

int wide_clusters_resident(const char* op) {
  prepare<float, kThreads>(op);
  int count = 0;
  HPC_OPS_CUDA_CHECK(op, detail::cached_per_device(&count, [](int* resident) {
    // One 1024-thread CTA per SM whatever its shared memory (registers), so
    // the budget stands for every split.
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(kWideCluster, 1);
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = size_t{detail::kSmemPerCtaMax};
    cudaLaunchAttribute cluster;
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = kWideCluster;
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    config.attrs = &cluster;
    config.numAttrs = 1;
    if (cudaOccupancyMaxActiveClusters(resident, sampling_kernel<float, kThreads>, &config) !=
        cudaSuccess) {
      (void)cudaGetLastError();  // a device that cannot form such clusters: none
      *resident = 0;
    }
    return cudaSuccess;
  }));
  return count;
}

int64_t shared_state_bytes() { return kSharedStateBytes; }

void launch_sampling(const SamplingParams& p, bool bf16_logits, int rows, const ClusterSplit& split,
                     const char* op, cudaStream_t stream) {
  if (bf16_logits) {
    launch_with<__nv_bfloat16>(p, rows, split, op, stream);
  } else {
    launch_with<float>(p, rows, split, op, stream);
  }
}

}  // namespace hpc_ops::sampling
