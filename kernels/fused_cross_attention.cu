// Fused cross-attention kernels (see fused_cross_attention.h for the contract).
//
// Paths, chosen by planLaunch (plugin_core.cpp) and, for the tiled one, by element type and GPU:
//  * split keys (Nq <= 4, e.g. QualiCLIP's attention pool: 1 query, ~12k keys, 32 heads):
//    one block per ((batch, head), key chunk); groups of threads stream one key row each with
//    16-byte loads, score it against every query of the head, keep online softmaxes, and the
//    block merges its groups;
//  * tiled (e.g. BPCLIP: Nq = Nk of 49 to a few hundred, 4 heads): one block per (batch, head,
//    64-query tile, key chunk), flash style. fp16 on sm_80+ runs on tensor cores
//    (tensorCoreTiledKernel); fp32, held to 1e-5, and fp16 on older GPUs run on fp32 cores
//    (tiledKernel).
// When a row's keys are split over several blocks, each writes its partial (max, sum, acc) to
// the workspace and a combine kernel merges them. All softmax arithmetic is fp32 in log2 units.
#include "fused_cross_attention.h"
#include "mma_fragments.h"
#include "softmax_merge.h"

#include <cuda_fp16.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

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

// Split-keys path. Block = ((b, h), key chunk): every query of the head (Nq <= kQueries) is
// scored against each key row as it streams by, so K and V are read once per head, not once per
// query. kLanes threads share a key (16 bytes each); kGroups keys are in flight, kKeysPerStep per
// group. kQueries is 1 (QualiCLIP's pool) or kMaxSplitKeysQueries; unused query slots are zeros.
template <typename T, int D, int kQueries>
__global__ void __launch_bounds__(kThreadsPerBlock) splitKeysKernel(KernelArgs<T> args)
{
    constexpr int kVec = kVecElems<T>;
    constexpr int kLanes = D / kVec;
    constexpr int kGroups = kThreadsPerBlock / kLanes;
    constexpr int kKeysPerStep = kQueries == 1 ? 4 : 2;
    static_assert(kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "a key's lanes must sit in one warp");

    __shared__ float s_max[kQueries][kGroups];
    __shared__ float s_sum[kQueries][kGroups];
    __shared__ float s_acc[kQueries][kGroups * D];

    int64_t const heads = args.num_heads;
    int64_t const h = blockIdx.x % heads;
    int64_t const b = blockIdx.x / heads;
    int const queries = static_cast<int>(min(args.q_len, int64_t{kQueries}));
    int const group = threadIdx.x / kLanes;
    int const dim0 = (threadIdx.x % kLanes) * kVec;
    int64_t const key_stride = heads * D;

    float q[kQueries][kVec] = {};
#pragma unroll
    for (int i = 0; i < kQueries; ++i)
    {
        if (i < queries)
        {
            loadFloats(args.q + ((b * args.q_len + i) * heads + h) * D + dim0, q[i]);
#pragma unroll
            for (int e = 0; e < kVec; ++e)
            {
                q[i][e] *= args.scale_log2;
            }
        }
    }

    int64_t const head_offset = b * args.kv_len * key_stride + h * D + dim0;
    T const* k_head = args.k + head_offset;
    T const* v_head = args.v + head_offset;
    int64_t const key_begin = int64_t{blockIdx.y} * args.keys_per_split;
    int64_t const key_end = min(args.kv_len, key_begin + args.keys_per_split);

    OnlineSoftmax stats[kQueries];
    float acc[kQueries][kVec] = {};
#pragma unroll
    for (int i = 0; i < kQueries; ++i)
    {
        stats[i] = OnlineSoftmax::empty();
    }
    // The loop bound is uniform over the block, so whole warps reach the shuffles in groupSum.
    for (int64_t base = key_begin; base < key_end; base += kGroups * kKeysPerStep)
    {
        float score[kKeysPerStep][kQueries];
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
#pragma unroll
            for (int i = 0; i < kQueries; ++i)
            {
                score[u][i] = 0.0f;
#pragma unroll
                for (int e = 0; e < kVec; ++e)
                {
                    score[u][i] = fmaf(q[i][e], key_vec[e], score[u][i]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < kQueries; ++i)
        {
            float step_max = -INFINITY;
#pragma unroll
            for (int u = 0; u < kKeysPerStep; ++u)
            {
                score[u][i] = groupSum<kLanes>(score[u][i]);
                if (base + u * kGroups + group >= key_end)
                {
                    score[u][i] = -INFINITY;
                }
                step_max = fmaxf(step_max, score[u][i]);
            }
            float const factor = stats[i].rebase(step_max);
#pragma unroll
            for (int e = 0; e < kVec; ++e)
            {
                acc[i][e] *= factor;
            }
#pragma unroll
            for (int u = 0; u < kKeysPerStep; ++u)
            {
                float const p = stats[i].accept(score[u][i]);
#pragma unroll
                for (int e = 0; e < kVec; ++e)
                {
                    acc[i][e] = fmaf(p, value[u][e], acc[i][e]);
                }
            }
        }
    }

    // Merge the groups' partial softmaxes; lanes of a group hold identical stats.
#pragma unroll
    for (int i = 0; i < kQueries; ++i)
    {
        if (threadIdx.x % kLanes == 0)
        {
            s_max[i][group] = stats[i].max;
            s_sum[i][group] = stats[i].sum;
        }
#pragma unroll
        for (int e = 0; e < kVec; ++e)
        {
            s_acc[i][group * D + dim0 + e] = acc[i][e];
        }
    }
    __syncthreads();
    for (int index = threadIdx.x; index < queries * D; index += kThreadsPerBlock)
    {
        int const i = index / D;
        int const d = index % D;
        OnlineSoftmax const merged = mergeStats(kGroups, s_max[i], s_sum[i]);
        float const merged_acc = mergeAccumulators(kGroups, s_max[i], merged.max, s_acc[i] + d, D);
        writeResult<T, D>(args, (b * args.q_len + i) * heads + h, d, merged_acc, merged);
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

// Tiled path on fp32 cores (fp32 inputs; fp16 below sm_80). Block = (b, h, 64-query tile, key
// chunk); thread (ty, tx) owns query rows ty + 16 i (i < 4), scores of keys tx + 8 j (j < 4) in
// each 32-key tile, and output columns tx + 8 c. The 8 threads of a row are consecutive lanes, so
// row reductions are 3 shuffles.
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
            }
            // 16-byte stores: scalar ones from 8 lanes 8 floats apart hit the same banks 8-way.
#pragma unroll
            for (int e = 0; e < kVec; e += 4)
            {
                *reinterpret_cast<float4*>(s_v + r * kVStride + c + e) = make_float4(vx[e], vx[e + 1], vx[e + 2], vx[e + 3]);
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

// Keys per shared-memory tile of the tensor-core kernel: 64, or 32 for D = 128, so that two
// stages of K and V fit the 48 KB of static shared memory.
template <int D>
constexpr int kTensorKeysPerTile = D == 128 ? 32 : 64;

// Tiled path on tensor cores (fp16, sm_80+). Block = (b, h, 64-query tile, key chunk); warp w
// owns query rows 16 w .. 16 w + 15 of the tile. Per key tile: S = Q K^T and O += P V by
// mma.m16n8k16 (fp16 products, fp32 accumulation), softmax on the S registers in fp32. K and V
// tiles are double-buffered in shared memory with cp.async; rows are padded by 16 bytes so the
// 8 rows an ldmatrix reads start in distinct bank quads. P is rounded to fp16 for the second
// product, as in SDPA's and FlashAttention's fp16 kernels.
// Launch bounds with a minimum of 1 block per SM let ptxas keep S, O and Q in registers: left to
// itself it capped the D = 64 kernel at 128 registers on sm_90 and spilled.
template <int D>
__global__ void __launch_bounds__(kThreadsPerBlock, 1) tensorCoreTiledKernel(KernelArgs<__half> args)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int kBK = kTensorKeysPerTile<D>;
    constexpr int kStride = D + 8; // halves per shared row
    constexpr int kChunksPerRow = D / 8; // 16-byte chunks
    constexpr int kKeyTiles = kBK / 8;   // n-tiles of S
    constexpr int kDimTiles = D / 8;     // n-tiles of O
    constexpr int kSteps = D / 16;       // k-steps of S = Q K^T
    static_assert(kThreadsPerBlock == 4 * 32 && kTiledQueriesPerBlock == 4 * 16, "four warps of 16 query rows");
    static_assert(kKeyChunkGranule % kBK == 0, "key chunks hold whole key tiles");

    __shared__ alignas(16) __half s_k[2][kBK * kStride];
    __shared__ alignas(16) __half s_v[2][kBK * kStride];

    int const warp = threadIdx.x / 32;
    int const lane = threadIdx.x % 32;
    int64_t const heads = args.num_heads;
    int64_t const tile = blockIdx.x % args.q_tiles;
    int64_t const head_index = blockIdx.x / args.q_tiles; // b * H + h
    int64_t const h = head_index % heads;
    int64_t const b = head_index / heads;
    int64_t const token_stride = heads * D;
    __half const* const q_head = args.q + b * args.q_len * token_stride + h * D;
    __half const* const k_head = args.k + b * args.kv_len * token_stride + h * D;
    __half const* const v_head = args.v + b * args.kv_len * token_stride + h * D;
    int64_t const q0 = tile * kTiledQueriesPerBlock + warp * 16;
    int64_t const key_begin = int64_t{blockIdx.y} * args.keys_per_split;
    int64_t const key_end = min(args.kv_len, key_begin + args.keys_per_split);
    int64_t const key_tiles = (key_end - key_begin + kBK - 1) / kBK;
    // A warp whose 16 rows all lie past Nq only helps with the copies (uniform over the warp).
    bool const warp_has_rows = q0 < args.q_len;

    // This warp's Q rows as A registers, read once; rows past Nq are zeros (finite, never stored).
    uint32_t q_frag[kSteps][4];
#pragma unroll
    for (int step = 0; step < kSteps; ++step)
    {
#pragma unroll
        for (int reg = 0; reg < 4; ++reg)
        {
            int64_t const query = q0 + mma::aRow(lane, reg);
            q_frag[step][reg] = query < args.q_len ? *reinterpret_cast<uint32_t const*>(
                                    q_head + query * token_stride + step * 16 + mma::aColumn(lane, reg))
                                                   : 0u;
        }
    }

    auto copy_tile = [&](int stage, int64_t first_key) {
        for (int i = threadIdx.x; i < kBK * kChunksPerRow; i += kThreadsPerBlock)
        {
            int const row = i / kChunksPerRow;
            int const column = i % kChunksPerRow * 8;
            int64_t const key = first_key + row;
            bool const inside = key < key_end;
            int64_t const offset = (inside ? key : key_begin) * token_stride + column;
            mma::copyAsync16(&s_k[stage][row * kStride + column], k_head + offset, inside ? 16 : 0);
            mma::copyAsync16(&s_v[stage][row * kStride + column], v_head + offset, inside ? 16 : 0);
        }
        mma::commitCopies();
    };

    OnlineSoftmax stats[2] = {OnlineSoftmax::empty(), OnlineSoftmax::empty()}; // rows group, group + 8
    float acc[kDimTiles][4] = {};

    copy_tile(0, key_begin);
    for (int64_t t = 0; t < key_tiles; ++t)
    {
        int const stage = static_cast<int>(t & 1);
        int64_t const k0 = key_begin + t * kBK;
        if (t + 1 < key_tiles)
        {
            copy_tile(stage ^ 1, k0 + kBK); // its stage was last read before the previous barrier
            mma::waitCopies<1>();
        }
        else
        {
            mma::waitCopies<0>();
        }
        __syncthreads();

        if (warp_has_rows)
        {
            float score[kKeyTiles][4] = {};
#pragma unroll
            for (int step = 0; step < kSteps; ++step)
            {
#pragma unroll
                for (int pair = 0; pair < kKeyTiles / 2; ++pair)
                {
                    uint32_t k_frag[4];
                    mma::loadMatrices(k_frag,
                        &s_k[stage][(pair * 16 + mma::keyTileRow(lane)) * kStride + step * 16 + mma::keyTileColumn(lane)]);
                    mma::multiplyAccumulate(score[2 * pair], q_frag[step], k_frag[0], k_frag[1]);
                    mma::multiplyAccumulate(score[2 * pair + 1], q_frag[step], k_frag[2], k_frag[3]);
                }
            }

            // Softmax in log2 units; elements 0, 1 belong to row group, 2, 3 to row group + 8.
            float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < kKeyTiles; ++n)
            {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                {
                    bool const inside = k0 + n * 8 + mma::cColumn(lane, e) < key_end;
                    score[n][e] = inside ? score[n][e] * args.scale_log2 : -INFINITY;
                    tile_max[e >> 1] = fmaxf(tile_max[e >> 1], score[n][e]);
                }
            }
            // The four lanes of a group share rows: after the reduction they share each row's max,
            // so their partial sums are simply added at the end.
            float factor[2];
#pragma unroll
            for (int r = 0; r < 2; ++r)
            {
                factor[r] = stats[r].rebase(groupMax<4>(tile_max[r]));
            }
#pragma unroll
            for (int n = 0; n < kDimTiles; ++n)
            {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                {
                    acc[n][e] *= factor[e >> 1];
                }
            }

#pragma unroll
            for (int j = 0; j < kBK / 16; ++j)
            {
                // P of keys 16 j .. 16 j + 15 as A registers: C tiles 2j and 2j + 1, rounded to fp16.
                uint32_t p_frag[4];
#pragma unroll
                for (int half_tile = 0; half_tile < 2; ++half_tile)
                {
                    float (&s)[4] = score[2 * j + half_tile];
#pragma unroll
                    for (int r = 0; r < 2; ++r)
                    {
                        float const lo = stats[r].accept(s[2 * r]);
                        float const hi = stats[r].accept(s[2 * r + 1]);
                        __half2 const packed = __floats2half2_rn(lo, hi);
                        p_frag[2 * half_tile + r] = *reinterpret_cast<uint32_t const*>(&packed);
                    }
                }
#pragma unroll
                for (int pair = 0; pair < kDimTiles / 2; ++pair)
                {
                    uint32_t v_frag[4];
                    mma::loadMatricesTransposed(v_frag,
                        &s_v[stage][(j * 16 + mma::valueTileRow(lane)) * kStride + pair * 16 + mma::valueTileColumn(lane)]);
                    mma::multiplyAccumulate(acc[2 * pair], p_frag, v_frag[0], v_frag[1]);
                    mma::multiplyAccumulate(acc[2 * pair + 1], p_frag, v_frag[2], v_frag[3]);
                }
            }
        }
        __syncthreads(); // every warp is done with this stage before it is copied over
    }

#pragma unroll
    for (int r = 0; r < 2; ++r)
    {
        OnlineSoftmax row_stats = stats[r];
        row_stats.sum = groupSum<4>(row_stats.sum);
        int64_t const query = q0 + mma::cRow(lane, 2 * r);
        if (query < args.q_len)
        {
            int64_t const row = (b * args.q_len + query) * heads + h;
#pragma unroll
            for (int n = 0; n < kDimTiles; ++n)
            {
#pragma unroll
                for (int e = 2 * r; e < 2 * r + 2; ++e)
                {
                    writeResult<__half, D>(args, row, n * 8 + mma::cColumn(lane, e), acc[n][e], row_stats);
                }
            }
        }
    }
#else
    __trap(); // never launched below sm_80: the host picks the FFMA kernel there
#endif
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

// Launches through cudaLaunchKernel, whose status is this launch's own: cudaGetLastError after
// <<<>>> would also report (and clear) an error some earlier launch on this thread left behind.
template <typename Args>
cudaError_t launchKernel(void const* kernel, dim3 grid, unsigned threads, size_t smem_bytes, cudaStream_t stream,
    Args args)
{
    void* params[] = {&args};
    return cudaLaunchKernel(kernel, grid, dim3(threads), params, smem_bytes, stream);
}

// A per-device value computed on a device's first launch and kept (device ordinals below 64;
// beyond that it is computed every time). 0 means not computed yet.
class PerDevice
{
public:
    template <typename Compute>
    cudaError_t get(int& value, Compute compute)
    {
        int device = 0;
        IQART_CUDA_TRY(cudaGetDevice(&device));
        bool const cached = device >= 0 && device < kDevices;
        value = cached ? values_[device].load(std::memory_order_relaxed) : 0;
        if (value == 0)
        {
            IQART_CUDA_TRY(compute(value));
            if (cached)
            {
                values_[device].store(value, std::memory_order_relaxed);
            }
        }
        return cudaSuccess;
    }

private:
    static constexpr int kDevices = 64;
    std::atomic<int> values_[kDevices]{};
};

// Whether the tensor-core kernel runs here: the architecture of the code the device would run
// (binaryVersion), not the device's, decides; a build without sm_80+ code keeps the FFMA kernel.
template <int D>
cudaError_t tensorCoresUsable(bool& usable)
{
    static PerDevice binary_version;
    int version = 0;
    IQART_CUDA_TRY(binary_version.get(version, [](int& out) {
        cudaFuncAttributes attributes{};
        IQART_CUDA_TRY(cudaFuncGetAttributes(&attributes, tensorCoreTiledKernel<D>));
        out = attributes.binaryVersion;
        return cudaSuccess;
    }));
    usable = version >= 80;
    return cudaSuccess;
}

// The FFMA tiled kernel's shared memory exceeds the default 48 KB for D = 128; the opt-in is a
// per-device function attribute, so it is set once per device, not on every launch.
template <typename T, int D>
cudaError_t allowTiledSharedMemory(size_t smem_bytes)
{
    if (smem_bytes <= 48 * 1024)
    {
        return cudaSuccess;
    }
    static PerDevice configured;
    int done = 0;
    return configured.get(done, [smem_bytes](int& out) {
        IQART_CUDA_TRY(cudaFuncSetAttribute(
            tiledKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)));
        out = 1;
        return cudaSuccess;
    });
}

template <typename T, int D>
cudaError_t launchTiled(KernelArgs<T> const& args, dim3 grid, cudaStream_t stream)
{
    if constexpr (std::is_same_v<T, __half>)
    {
        bool tensor_cores = false;
        IQART_CUDA_TRY(tensorCoresUsable<D>(tensor_cores));
        if (tensor_cores)
        {
            return launchKernel(reinterpret_cast<void const*>(tensorCoreTiledKernel<D>), grid, kThreadsPerBlock, 0,
                stream, args);
        }
    }
    size_t const smem_bytes = tiledSmemFloats<D>() * sizeof(float);
    IQART_CUDA_TRY((allowTiledSharedMemory<T, D>(smem_bytes)));
    return launchKernel(reinterpret_cast<void const*>(tiledKernel<T, D>), grid, kThreadsPerBlock, smem_bytes, stream,
        args);
}

template <typename T, int D>
cudaError_t launchTyped(KernelArgs<T> const& args, LaunchPlan const& plan, AttentionShape const& shape,
    cudaStream_t stream)
{
    dim3 const grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.splits));
    if (plan.path == AttentionPath::kSplitKeys)
    {
        void const* kernel = shape.q_len == 1 ? reinterpret_cast<void const*>(splitKeysKernel<T, D, 1>)
                                              : reinterpret_cast<void const*>(splitKeysKernel<T, D, kMaxSplitKeysQueries>);
        IQART_CUDA_TRY(launchKernel(kernel, grid, kThreadsPerBlock, 0, stream, args));
    }
    else
    {
        IQART_CUDA_TRY((launchTiled<T, D>(args, grid, stream)));
    }
    if (plan.splits > 1)
    {
        IQART_CUDA_TRY(launchKernel(reinterpret_cast<void const*>(combineKernel<T, D>),
            dim3(static_cast<unsigned>(shape.rows())), D, 0, stream, args));
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
