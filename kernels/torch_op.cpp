// Torch binding of the fused cross-attention kernel:
//   torch.ops.iqart.fused_cross_attention(q, k, v, num_heads, scale) -> o
// CUDA tensors only, fp16 or fp32, inference only (no autograd). scale 0 means 1/sqrt(head size).
// Built on first use by engine/fused_op.py (torch.utils.cpp_extension.load).
#include "fused_cross_attention.h"
#include "plugin_core.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace
{

// The kernel reads 16-byte vectors: make the tensor contiguous, and copy a view whose storage
// offset breaks the alignment.
at::Tensor contiguousAligned(at::Tensor const& t)
{
    at::Tensor c = t.contiguous();
    return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : c.clone();
}

at::Tensor fusedCrossAttention(at::Tensor const& q, at::Tensor const& k, at::Tensor const& v, int64_t num_heads, double scale)
{
    TORCH_CHECK(q.is_cuda() && k.is_cuda() && v.is_cuda(), "iqart::fused_cross_attention: q, k, v must be CUDA tensors");
    TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
        "iqart::fused_cross_attention: q, k, v must be on one device");
    TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
        "iqart::fused_cross_attention: q, k, v must share one dtype");
    TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kFloat,
        "iqart::fused_cross_attention: dtype must be float16 or float32, got ", q.scalar_type());
    TORCH_CHECK(std::isfinite(scale) && scale >= 0.0, "iqart::fused_cross_attention: scale must be finite and >= 0");

    iqart::AttentionShape shape;
    size_t workspace_bytes = 0;
    try
    {
        shape = iqart::attentionShape(q.sizes().vec(), k.sizes().vec(), v.sizes().vec(), num_heads);
        workspace_bytes = iqart::fusedCrossAttentionWorkspaceSize(shape);
    }
    catch (std::invalid_argument const& e)
    {
        TORCH_CHECK(false, e.what());
    }
    float const resolved_scale
        = iqart::resolveScale({static_cast<int32_t>(num_heads), static_cast<float>(scale)}, shape.head_dim);

    c10::cuda::CUDAGuard const guard(q.device());
    at::Tensor const qc = contiguousAligned(q);
    at::Tensor const kc = contiguousAligned(k);
    at::Tensor const vc = contiguousAligned(v);
    at::Tensor out = at::empty_like(qc, at::MemoryFormat::Contiguous);
    at::Tensor workspace = at::empty({static_cast<int64_t>(workspace_bytes)}, qc.options().dtype(at::kByte));
    iqart::ElementType const type
        = q.scalar_type() == at::kHalf ? iqart::ElementType::kFloat16 : iqart::ElementType::kFloat32;
    cudaError_t const status = iqart::launchFusedCrossAttention(type, qc.data_ptr(), kc.data_ptr(), vc.data_ptr(),
        out.data_ptr(), shape, resolved_scale, workspace_bytes ? workspace.data_ptr() : nullptr, workspace_bytes,
        c10::cuda::getCurrentCUDAStream(q.device().index()).stream());
    TORCH_CHECK(status == cudaSuccess, "iqart::fused_cross_attention: ", cudaGetErrorString(status));
    return out;
}

} // namespace

TORCH_LIBRARY(iqart, m)
{
    m.def("fused_cross_attention(Tensor q, Tensor k, Tensor v, int num_heads, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(iqart, CUDA, m)
{
    m.impl("fused_cross_attention", &fusedCrossAttention);
}
