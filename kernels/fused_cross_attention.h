// Host entry point of the fused cross-attention kernel: O = softmax(scale * Q K^T) V per head.
// Layout: Q (B, Nq, H*D), K and V (B, Nk, H*D), O (B, Nq, H*D), contiguous, 16-byte aligned.
// fp16 or fp32 in and out; softmax and accumulation in fp32.
#pragma once

#include "plugin_core.h"

#include <cuda_runtime_api.h>

namespace iqart
{

enum class ElementType : int32_t
{
    kFloat32,
    kFloat16
};

// Exact workspace bytes launchFusedCrossAttention needs for this shape (0 when unsplit).
inline size_t fusedCrossAttentionWorkspaceSize(AttentionShape const& shape)
{
    return planLaunch(shape).workspace.bytes;
}

// Enqueues the kernel(s) on `stream`. `scale` must already be resolved (> 0). Returns
// cudaErrorInvalidValue for a shape the plan rejects, a misaligned pointer or a workspace smaller
// than fusedCrossAttentionWorkspaceSize(shape); otherwise the first CUDA error met, if any.
cudaError_t launchFusedCrossAttention(ElementType type, void const* q, void const* k, void const* v, void* o,
    AttentionShape const& shape, float scale, void* workspace, size_t workspace_bytes, cudaStream_t stream) noexcept;

} // namespace iqart
