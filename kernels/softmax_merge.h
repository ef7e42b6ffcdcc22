// Online-softmax arithmetic shared by the CUDA kernels and the CPU unit test, so the delicate
// parts (empty partials, rescaling when the running max moves) are tested without a GPU.
// Scores are in log2 units (the kernels fold log2(e) into the scale and use exp2f).
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define IQART_HOST_DEVICE __host__ __device__
#else
#define IQART_HOST_DEVICE
#endif

namespace iqart
{

// exp2(value - max), except that a -inf value (a partial that saw no key, or a masked key) weighs
// 0 even when max is also -inf, where exp2(-inf - -inf) would be NaN.
IQART_HOST_DEVICE inline float softmaxWeight(float value, float max)
{
    return value == -INFINITY ? 0.0f : exp2f(value - max);
}

// Running max and sum of one softmax row, built block by block.
struct OnlineSoftmax
{
    float max;
    float sum;

    IQART_HOST_DEVICE static OnlineSoftmax empty() { return {-INFINITY, 0.0f}; }

    // Raises the running max to cover a block whose largest score is block_max. Returns the factor
    // by which accumulators built so far must be multiplied (the sum is rescaled here).
    IQART_HOST_DEVICE float rebase(float block_max)
    {
        float const new_max = fmaxf(max, block_max);
        float const factor = softmaxWeight(max, new_max);
        max = new_max;
        sum *= factor;
        return factor;
    }

    // Unnormalised probability of one score of the current block; added to the sum.
    IQART_HOST_DEVICE float accept(float score)
    {
        float const p = softmaxWeight(score, max);
        sum += p;
        return p;
    }
};

// Max and sum of n partial softmax states merged into one.
IQART_HOST_DEVICE inline OnlineSoftmax mergeStats(int n, float const* maxes, float const* sums)
{
    OnlineSoftmax merged = OnlineSoftmax::empty();
    for (int i = 0; i < n; ++i)
    {
        merged.max = fmaxf(merged.max, maxes[i]);
    }
    for (int i = 0; i < n; ++i)
    {
        merged.sum += sums[i] * softmaxWeight(maxes[i], merged.max);
    }
    return merged;
}

// One output value's accumulator merged from n partials (accs[i * acc_stride] belongs to partial i),
// expressed relative to merged_max like the merged sum.
IQART_HOST_DEVICE inline float mergeAccumulators(
    int n, float const* maxes, float merged_max, float const* accs, long long acc_stride)
{
    float acc = 0.0f;
    for (int i = 0; i < n; ++i)
    {
        acc += accs[i * acc_stride] * softmaxWeight(maxes[i], merged_max);
    }
    return acc;
}

// Final division; a row without keys (sum 0, rejected by the shape rules) yields 0, never NaN.
IQART_HOST_DEVICE inline float normalise(float acc, float sum)
{
    return sum > 0.0f ? acc / sum : 0.0f;
}

} // namespace iqart
