// Fused cross-attention kernels (see fused_cross_attention.h for the contract).
//
// Two paths, chosen by planLaunch (plugin_core.cpp):
//  * split keys (Nq <= 4, e.g. QualiCLIP's attention pool: 1 query, ~12k keys, 32 heads):
//    one block per (output row, key chunk); groups of threads stream one key row each with
//    16-byte loads, keep an online softmax, and the block merges its groups;
//  * tiled (e.g. BPCLIP: Nq = Nk of a few hundred, 4 heads): one block per (batch, head,
//    64-query tile, key chunk); 32-key tiles of K and V go through shared memory, flash style.
// When a row's keys are split over several blocks, each writes its partial (max, sum, acc) to
// the workspace and a combine kernel merges them. All softmax arithmetic is fp32 in log2 units.
#include "fused_cross_attention.h"
#include "softmax_merge.h"

#include <cuda_fp16.h>

#include <cstdint>

#define IQART_CUDA_TRY(call)                                                                                           \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (call);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
        {                                                                                                              \
            return status_;                                                                                            \
        }                                                                                                              \
    } while (0)

namespace iqart
{
namespace
{

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kTiledThreadsX = 8;  // threads sharing one query row in the tiled kernel
constexpr int kTiledThreadsY = kThreadsPerBlock / kTiledThreadsX;
static_assert(kTiledQueriesPerBlock % kTiledThreadsY == 0 && kTiledKeysPerTile % kTiledThreadsX == 0,
    "tiles must split evenly over the thread grid");

template <typename T>
struct KernelArgs
{
    T const* q;
    T const* k;
    T const* v;
    T* o;
    float* part_max; // workspace partials, used when splits > 1: [row * splits + split]
    float* part_sum;
    float* part_acc; // [(row * splits + split) * D + d]
    int64_t q_len;
    int64_t kv_len;
    int64_t keys_per_split;
    int64_t q_tiles; // tiled path: 64-query tiles per (batch, head)
    int32_t num_heads;
    int32_t splits;
    float scale_log2; // scale * log2(e): scores come out in log2 units for exp2f
};

// 16-byte loads converted to fp32: 8 halves or 4 floats.
template <typename T>
constexpr int kVecElems = 16 / sizeof(T);

__device__ inline void loadFloats(float const* src, float (&dst)[4])
{
    float4 const x = *reinterpret_cast<float4 const*>(src);
    dst[0] = x.x;
    dst[1] = x.y;
    dst[2] = x.z;
    dst[3] = x.w;
}

__device__ inline void loadFloats(__half const* src, float (&dst)[8])
{
    uint4 const raw = *reinterpret_cast<uint4 const*>(src);
    __half2 const* pairs = reinterpret_cast<__half2 const*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        float2 const f = __half22float2(pairs[i]);
        dst[2 * i] = f.x;
        dst[2 * i + 1] = f.y;
    }
}

__device__ inline void storeFloat(float* dst, float x)
{
    *dst = x;
}

__device__ inline void storeFloat(__half* dst, float x)
{
    *dst = __float2half_rn(x);
}

// Sum or max over aligned groups of `Lanes` consecutive lanes; every lane gets the result.
template <int Lanes>
__device__ inline float groupSum(float x)
{
#pragma unroll
    for (int offset = Lanes / 2; offset > 0; offset /= 2)
    {
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    }
    return x;
}

template <int Lanes>
__device__ inline float groupMax(float x)
{
#pragma unroll
    for (int offset = Lanes / 2; offset > 0; offset /= 2)
    {
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    }
    return x;
}

// Writes one finished row value: normalised output, or an unnormalised partial for the combine.
template <typename T, int D>
__device__ inline void writeResult(KernelArgs<T> const& args, int64_t row, int d, float acc, OnlineSoftmax stats)
{
    if (args.splits == 1)
    {
        storeFloat(args.o + row * D + d, normalise(acc, stats.sum));
        return;
    }
    int64_t const slot = row * args.splits + blockIdx.y;
    args.part_acc[slot * D + d] = acc;
    if (d == 0)
    {
        args.part_max[slot] = stats.max;
        args.part_sum[slot] = stats.sum;
    }
}

// Split-keys path. Block = (row, key chunk); row = (b * Nq + q) * H + h indexes Q and O rows of D.
// kLanes threads share a key (16 bytes each); kGroups keys are in flight, kKeysPerStep per group.
template <typename T, int D>
__global__ void __launch_bounds__(kThreadsPerBlock) splitKeysKernel(KernelArgs<T> args)
{
    constexpr int kVec = kVecElems<T>;
    constexpr int kLanes = D / kVec;
    constexpr int kGroups = kThreadsPerBlock / kLanes;
    constexpr int kKeysPerStep = 4;
    static_assert(kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "a key's lanes must sit in one warp");
    static_assert(D <= kThreadsPerBlock, "the block merge uses one thread per output value");

    __shared__ float s_max[kGroups];
    __shared__ float s_sum[kGroups];
    __shared__ float s_acc[kGroups * D];

    int64_t const row = blockIdx.x;
    int64_t const heads = args.num_heads;
    int64_t const h = row % heads;
    int64_t const b = row / heads / args.q_len;
    int const group = threadIdx.x / kLanes;
    int const dim0 = (threadIdx.x % kLanes) * kVec;

    float q[kVec];
    loadFloats(args.q + row * D + dim0, q);
#pragma unroll
    for (int e = 0; e < kVec; ++e)
    {
        q[e] *= args.scale_log2;
    }

    int64_t const key_stride = heads * D;
    int64_t const head_offset = b * args.kv_len * key_stride + h * D + dim0;
    T const* k_head = args.k + head_offset;
    T const* v_head = args.v + head_offset;
    int64_t const key_begin = int64_t{blockIdx.y} * args.keys_per_split;
    int64_t const key_end = min(args.kv_len, key_begin + args.keys_per_split);

    OnlineSoftmax stats = OnlineSoftmax::empty();
    float acc[kVec] = {};
    // The loop bound is uniform over the block, so whole warps reach the shuffles in groupSum.
    for (int64_t base = key_begin; base < key_end; base += kGroups * kKeysPerStep)
    {
        float score[kKeysPerStep];
        float value[kKeysPerStep][kVec];
#pragma unroll
        for (int u = 0; u < kKeysPerStep; ++u)
        {
            int64_t const key = base + u * kGroups + group;
            float key_vec[kVec] = {};
#pragma unroll
            for (int e = 0; e < kVec; ++e)
            {
                value[u][e] = 0.0f;
            }
            if (key < key_end)
            {
                loadFloats(k_head + key * key_stride, key_vec);
                loadFloats(v_head + key * key_stride, value[u]);
            }
            score[u] = 0.0f;
#pragma unroll
            for (int e = 0; e < kVec; ++e)
            {
                score[u] = fmaf(q[e], key_vec[e], score[u]);
            }
        }
        float step_max = -INFINITY;
#pragma unroll
        for (int u = 0; u < kKeysPerStep; ++u)
        {
            score[u] = groupSum<kLanes>(score[u]);
            if (base + u * kGroups + group >= key_end)
            {
                score[u] = -INFINITY;
            }
            step_max = fmaxf(step_max, score[u]);
        }
        float const factor = stats.rebase(step_max);
#pragma unroll
        for (int e = 0; e < kVec; ++e)
        {
            acc[e] *= factor;
        }
#pragma unroll
        for (int u = 0; u < kKeysPerStep; ++u)
        {
            float const p = stats.accept(score[u]);
#pragma unroll
            for (int e = 0; e < kVec; ++e)
            {
                acc[e] = fmaf(p, value[u][e], acc[e]);
            }
        }
    }

    // Merge the groups' partial softmaxes; lanes of a group hold identical stats.
    if (threadIdx.x % kLanes == 0)
    {
        s_max[group] = stats.max;
        s_sum[group] = stats.sum;
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e)
    {
        s_acc[group * D + dim0 + e] = acc[e];
    }
    __syncthreads();
    if (threadIdx.x < D)
    {
        int const d = threadIdx.x;
        OnlineSoftmax const merged = mergeStats(kGroups, s_max, s_sum);
        float const merged_acc = mergeAccumulators(kGroups, s_max, merged.max, s_acc + d, D);
        writeResult<T, D>(args, row, d, merged_acc, merged);
    }
}

// Shared-memory floats of the tiled kernel: Q tile, K tile (rows padded by 1 so the column reads
// of the score loop hit distinct banks), V tile, probability tile (padded by 8, same reason).
template <int D>
constexpr int64_t tiledSmemFloats()
{
    return kTiledQueriesPerBlock * (D + 1) + kTiledKeysPerTile * (D + 1) + kTiledKeysPerTile * D
        + kTiledQueriesPerBlock * (kTiledKeysPerTile + 8);
}

// Tiled path. Block = (b, h, 64-query tile, key chunk); thread (ty, tx) owns query rows
// ty + 16 i (i < 4), scores of keys tx + 8 j (j < 4) in each 32-key tile, and output columns
// tx + 8 c. The 8 threads of a row are consecutive lanes, so row reductions are 3 shuffles.
template <typename T, int D>
__global__ void __launch_bounds__(kThreadsPerBlock) tiledKernel(KernelArgs<T> args)
{
    constexpr int kVec = kVecElems<T>;
    constexpr int kVecsPerRow = D / kVec;
    constexpr int kBQ = static_cast<int>(kTiledQueriesPerBlock);
    constexpr int kBK = static_cast<int>(kTiledKeysPerTile);
    constexpr int kRows = kBQ / kTiledThreadsY;
    constexpr int kCols = kBK / kTiledThreadsX;
    constexpr int kDims = D / kTiledThreadsX;
    constexpr int kQStride = D + 1;
    constexpr int kKStride = D + 1;
    constexpr int kVStride = D;
    constexpr int kPStride = kBK + 8;

    extern __shared__ float smem[];
    float* const s_q = smem;
    float* const s_k = s_q + kBQ * kQStride;
    float* const s_v = s_k + kBK * kKStride;
    float* const s_p = s_v + kBK * kVStride;

    int const tx = threadIdx.x % kTiledThreadsX;
    int const ty = threadIdx.x / kTiledThreadsX;
    int64_t const heads = args.num_heads;
    int64_t const tile = blockIdx.x % args.q_tiles;
    int64_t const head_index = blockIdx.x / args.q_tiles; // b * H + h
    int64_t const h = head_index % heads;
    int64_t const b = head_index / heads;
    int64_t const q0 = tile * kBQ;
    int64_t const key_begin = int64_t{blockIdx.y} * args.keys_per_split;
    int64_t const key_end = min(args.kv_len, key_begin + args.keys_per_split);

    // Q tile, pre-scaled; rows past Nq are zeros (finite scores, never stored).
    for (int i = threadIdx.x; i < kBQ * kVecsPerRow; i += kThreadsPerBlock)
    {
        int const r = i / kVecsPerRow;
        int const c = (i % kVecsPerRow) * kVec;
        int64_t const query = q0 + r;
        float x[kVec] = {};
        if (query < args.q_len)
        {
            loadFloats(args.q + ((b * args.q_len + query) * heads + h) * D + c, x);
        }
#pragma unroll
        for (int e = 0; e < kVec; ++e)
        {
            s_q[r * kQStride + c + e] = x[e] * args.scale_log2;
        }
    }

    OnlineSoftmax stats[kRows];
    float acc[kRows][kDims];
#pragma unroll
    for (int i = 0; i < kRows; ++i)
    {
        stats[i] = OnlineSoftmax::empty();
#pragma unroll
        for (int c = 0; c < kDims; ++c)
        {
            acc[i][c] = 0.0f;
        }
    }

    for (int64_t k0 = key_begin; k0 < key_end; k0 += kBK)
    {
        __syncthreads(); // the previous tile's K, V and P are no longer read
        for (int i = threadIdx.x; i < kBK * kVecsPerRow; i += kThreadsPerBlock)
        {
            int const r = i / kVecsPerRow;
            int const c = (i % kVecsPerRow) * kVec;
            int64_t const key = k0 + r;
            float kx[kVec] = {};
            float vx[kVec] = {};
            if (key < key_end)
            {
                int64_t const offset = ((b * args.kv_len + key) * heads + h) * D + c;
                loadFloats(args.k + offset, kx);
                loadFloats(args.v + offset, vx);
            }
#pragma unroll
            for (int e = 0; e < kVec; ++e)
            {
                s_k[r * kKStride + c + e] = kx[e];
                s_v[r * kVStride + c + e] = vx[e];
            }
        }
        __syncthreads();

        float score[kRows][kCols] = {};
#pragma unroll 8
        for (int d = 0; d < D; ++d)
        {
            float qd[kRows];
            float kd[kCols];
#pragma unroll
            for (int i = 0; i < kRows; ++i)
            {
                qd[i] = s_q[(ty + i * kTiledThreadsY) * kQStride + d];
            }
#pragma unroll
            for (int j = 0; j < kCols; ++j)
            {
                kd[j] = s_k[(tx + j * kTiledThreadsX) * kKStride + d];
            }
#pragma unroll
            for (int i = 0; i < kRows; ++i)
            {
#pragma unroll
                for (int j = 0; j < kCols; ++j)
                {
                    score[i][j] = fmaf(qd[i], kd[j], score[i][j]);
                }
            }
        }

#pragma unroll
        for (int i = 0; i < kRows; ++i)
        {
            float tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < kCols; ++j)
            {
                if (k0 + tx + j * kTiledThreadsX >= key_end)
                {
                    score[i][j] = -INFINITY;
                }
                tile_max = fmaxf(tile_max, score[i][j]);
            }
            // Every thread of the row sees the same max, so their per-thread sums share one scale
            // and are simply added at the end.
            float const factor = stats[i].rebase(groupMax<kTiledThreadsX>(tile_max));
#pragma unroll
            for (int c = 0; c < kDims; ++c)
            {
                acc[i][c] *= factor;
            }
#pragma unroll
            for (int j = 0; j < kCols; ++j)
            {
                s_p[(ty + i * kTiledThreadsY) * kPStride + tx + j * kTiledThreadsX] = stats[i].accept(score[i][j]);
            }
        }
        __syncthreads();

#pragma unroll 4
        for (int key = 0; key < kBK; ++key)
        {
            float p[kRows];
#pragma unroll
            for (int i = 0; i < kRows; ++i)
            {
                p[i] = s_p[(ty + i * kTiledThreadsY) * kPStride + key];
            }
#pragma unroll
            for (int c = 0; c < kDims; ++c)
            {
                float const value = s_v[key * kVStride + tx + c * kTiledThreadsX];
#pragma unroll
                for (int i = 0; i < kRows; ++i)
                {
                    acc[i][c] = fmaf(p[i], value, acc[i][c]);
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < kRows; ++i)
    {
        OnlineSoftmax row_stats = stats[i];
        row_stats.sum = groupSum<kTiledThreadsX>(row_stats.sum);
        int64_t const query = q0 + ty + i * kTiledThreadsY;
        if (query < args.q_len)
        {
            int64_t const row = (b * args.q_len + query) * heads + h;
#pragma unroll
            for (int c = 0; c < kDims; ++c)
            {
                writeResult<T, D>(args, row, tx + c * kTiledThreadsX, acc[i][c], row_stats);
            }
        }
    }
}

// Merges each row's key-chunk partials. Block = one row, one thread per output value.
template <typename T, int D>
__global__ void __launch_bounds__(D) combineKernel(KernelArgs<T> args)
{
    int64_t const row = blockIdx.x;
    int const d = threadIdx.x;
    int64_t const first = row * args.splits;
    OnlineSoftmax const merged = mergeStats(args.splits, args.part_max + first, args.part_sum + first);
    float const acc = mergeAccumulators(args.splits, args.part_max + first, merged.max, args.part_acc + first * D + d, D);
    storeFloat(args.o + row * D + d, normalise(acc, merged.sum));
}

template <typename T, int D>
cudaError_t launchTyped(KernelArgs<T> args, LaunchPlan const& plan, AttentionShape const& shape, cudaStream_t stream)
{
    dim3 const grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.splits));
    if (plan.path == AttentionPath::kSplitKeys)
    {
        splitKeysKernel<T, D><<<grid, kThreadsPerBlock, 0, stream>>>(args);
    }
    else
    {
        size_t const smem_bytes = tiledSmemFloats<D>() * sizeof(float);
        if (smem_bytes > 48 * 1024)
        {
            IQART_CUDA_TRY(cudaFuncSetAttribute(
                tiledKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)));
        }
        tiledKernel<T, D><<<grid, kThreadsPerBlock, smem_bytes, stream>>>(args);
    }
    IQART_CUDA_TRY(cudaGetLastError());
    if (plan.splits > 1)
    {
        combineKernel<T, D><<<static_cast<unsigned>(shape.rows()), D, 0, stream>>>(args);
        IQART_CUDA_TRY(cudaGetLastError());
    }
    return cudaSuccess;
}

template <typename T>
cudaError_t launchForHeadDim(KernelArgs<T> const& args, LaunchPlan const& plan, AttentionShape const& shape,
    cudaStream_t stream)
{
    switch (shape.head_dim)
    {
    case 32: return launchTyped<T, 32>(args, plan, shape, stream);
    case 64: return launchTyped<T, 64>(args, plan, shape, stream);
    case 128: return launchTyped<T, 128>(args, plan, shape, stream);
    default: return cudaErrorInvalidValue;
    }
}

bool isAligned16(void const* pointer)
{
    return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}

template <typename T>
cudaError_t launchWithType(void const* q, void const* k, void const* v, void* o, AttentionShape const& shape,
    LaunchPlan const& plan, float scale, void* workspace, cudaStream_t stream)
{
    KernelArgs<T> args{};
    args.q = static_cast<T const*>(q);
    args.k = static_cast<T const*>(k);
    args.v = static_cast<T const*>(v);
    args.o = static_cast<T*>(o);
    if (plan.splits > 1)
    {
        char* const base = static_cast<char*>(workspace);
        args.part_max = reinterpret_cast<float*>(base + plan.workspace.max_offset);
        args.part_sum = reinterpret_cast<float*>(base + plan.workspace.sum_offset);
        args.part_acc = reinterpret_cast<float*>(base + plan.workspace.acc_offset);
    }
    args.q_len = shape.q_len;
    args.kv_len = shape.kv_len;
    args.keys_per_split = plan.keys_per_split;
    args.q_tiles = (shape.q_len + kTiledQueriesPerBlock - 1) / kTiledQueriesPerBlock;
    args.num_heads = shape.num_heads;
    args.splits = plan.splits;
    args.scale_log2 = scale * kLog2e;
    return launchForHeadDim(args, plan, shape, stream);
}

} // namespace

cudaError_t launchFusedCrossAttention(ElementType type, void const* q, void const* k, void const* v, void* o,
    AttentionShape const& shape, float scale, void* workspace, size_t workspace_bytes, cudaStream_t stream) noexcept
{
    LaunchPlan plan;
    try
    {
        plan = planLaunch(shape);
    }
    catch (...)
    {
        return cudaErrorInvalidValue;
    }
    if (shape.rows() == 0)
    {
        return cudaSuccess;
    }
    bool const workspace_ok = plan.splits == 1 || (workspace != nullptr && workspace_bytes >= plan.workspace.bytes);
    bool const aligned = isAligned16(q) && isAligned16(k) && isAligned16(v) && isAligned16(o);
    if (!workspace_ok || !aligned || !(scale > 0.0f))
    {
        return cudaErrorInvalidValue;
    }
    if (type == ElementType::kFloat16)
    {
        return launchWithType<__half>(q, k, v, o, shape, plan, scale, workspace, stream);
    }
    return launchWithType<float>(q, k, v, o, shape, plan, scale, workspace, stream);
}

} // namespace iqart
