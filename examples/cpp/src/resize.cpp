// The resize policy, bit-exact with the Python engine's (PIL's antialiased bicubic on 8-bit RGB).
//
// The resampling is separable: each output column (then row) is a weighted sum of the input
// columns (rows) within the filter's support around its centre. When shrinking, the bicubic
// kernel is stretched by the scale factor, which low-pass filters the image (antialiasing).
// Bit-exactness with PIL rests on doing the same arithmetic in the same order: weights computed
// in double and normalised to sum 1, then rounded to 22-bit fixed point; sums in integers
// starting from half an LSB, shifted down and clamped to 0..255 after each pass. This file is
// compiled with -ffp-contract=off: a fused multiply-add would round differently.
#include "iqart/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace iqart
{

Size resize_target(int width, int height, ResizePolicy const& policy)
{
    switch (policy.kind)
    {
    case ResizePolicy::Kind::Native: return {width, height};
    case ResizePolicy::Kind::Fixed: return {policy.width, policy.height};
    case ResizePolicy::Kind::ShortSide:
    {
        // Python's round(): to nearest, ties to even, which std::nearbyint does in the default rounding mode.
        double const scale = static_cast<double>(policy.short_side) / std::min(width, height);
        int const w = static_cast<int>(std::nearbyint(width * scale));
        int const h = static_cast<int>(std::nearbyint(height * scale));
        return {std::max(1, w), std::max(1, h)};
    }
    }
    return {width, height};
}

namespace
{

constexpr int kWeightBits = 22;     // fixed-point weights: 8-bit pixels times weights fit an int32 with headroom
constexpr double kBicubicRadius = 2.0;

// Keys' cubic convolution kernel with a = -0.5 (what PIL calls BICUBIC).
double bicubic(double x)
{
    constexpr double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

// For each output index: the first input index it reads, how many it reads, and their weights.
struct Taps
{
    int width = 0; // weights stored per output index (the largest support)
    std::vector<int> first;
    std::vector<int> count;
    std::vector<int32_t> weights;
};

Taps taps_for(int in_size, int out_size)
{
    double const scale = static_cast<double>(in_size) / out_size;
    double const stretch = std::max(scale, 1.0); // the kernel widens only when shrinking
    double const support = kBicubicRadius * stretch;
    double const inverse_stretch = 1.0 / stretch;
    Taps taps;
    taps.width = static_cast<int>(std::ceil(support)) * 2 + 1;
    taps.first.resize(out_size);
    taps.count.resize(out_size);
    taps.weights.assign(static_cast<std::size_t>(out_size) * taps.width, 0);
    std::vector<double> weights(taps.width);
    for (int out = 0; out < out_size; ++out)
    {
        double const centre = (out + 0.5) * scale; // in input coordinates, pixel centres at i + 0.5
        int const low = std::max(0, static_cast<int>(centre - support + 0.5));
        int const high = std::min(in_size, static_cast<int>(centre + support + 0.5));
        int const count = high - low;
        double total = 0.0;
        for (int i = 0; i < count; ++i)
        {
            weights[i] = bicubic((static_cast<double>(i + low) - centre + 0.5) * inverse_stretch);
            total += weights[i];
        }
        int32_t* fixed = &taps.weights[static_cast<std::size_t>(out) * taps.width];
        for (int i = 0; i < count; ++i)
        {
            double const w = total != 0.0 ? weights[i] / total : weights[i];
            double const scaled = w * (1 << kWeightBits);
            fixed[i] = static_cast<int32_t>(w < 0 ? -0.5 + scaled : 0.5 + scaled); // round half away from zero
        }
        taps.first[out] = low;
        taps.count[out] = count;
    }
    return taps;
}

inline uint8_t to_byte(int64_t sum)
{
    int64_t const value = sum >> kWeightBits;
    return static_cast<uint8_t>(value < 0 ? 0 : (value > 255 ? 255 : value));
}

// Resamples along rows: `src` rows of `in_width` RGB pixels -> rows of taps.first.size() pixels.
std::vector<uint8_t> resample_rows(uint8_t const* src, int height, std::size_t stride, Taps const& taps)
{
    int const out_width = static_cast<int>(taps.first.size());
    std::vector<uint8_t> out(static_cast<std::size_t>(out_width) * height * 3);
    for (int y = 0; y < height; ++y)
    {
        uint8_t const* row = src + static_cast<std::size_t>(y) * stride;
        uint8_t* dst = &out[static_cast<std::size_t>(y) * out_width * 3];
        for (int x = 0; x < out_width; ++x)
        {
            int32_t const* w = &taps.weights[static_cast<std::size_t>(x) * taps.width];
            uint8_t const* px = row + static_cast<std::size_t>(taps.first[x]) * 3;
            int64_t r = 1 << (kWeightBits - 1), g = r, b = r;
            for (int i = 0; i < taps.count[x]; ++i)
            {
                r += px[3 * i] * static_cast<int64_t>(w[i]);
                g += px[3 * i + 1] * static_cast<int64_t>(w[i]);
                b += px[3 * i + 2] * static_cast<int64_t>(w[i]);
            }
            dst[3 * x] = to_byte(r);
            dst[3 * x + 1] = to_byte(g);
            dst[3 * x + 2] = to_byte(b);
        }
    }
    return out;
}

// Resamples along columns: rows of `width` RGB pixels -> taps.first.size() rows.
std::vector<uint8_t> resample_columns(uint8_t const* src, int width, std::size_t stride, Taps const& taps)
{
    int const out_height = static_cast<int>(taps.first.size());
    std::size_t const row_bytes = static_cast<std::size_t>(width) * 3;
    std::vector<uint8_t> out(row_bytes * out_height);
    for (int y = 0; y < out_height; ++y)
    {
        int32_t const* w = &taps.weights[static_cast<std::size_t>(y) * taps.width];
        uint8_t const* top = src + static_cast<std::size_t>(taps.first[y]) * stride;
        uint8_t* dst = &out[static_cast<std::size_t>(y) * row_bytes];
        for (std::size_t c = 0; c < row_bytes; ++c)
        {
            int64_t sum = 1 << (kWeightBits - 1);
            for (int i = 0; i < taps.count[y]; ++i)
                sum += top[static_cast<std::size_t>(i) * stride + c] * static_cast<int64_t>(w[i]);
            dst[c] = to_byte(sum);
        }
    }
    return out;
}

} // namespace

std::vector<uint8_t> resize_bicubic(uint8_t const* src, int width, int height, std::size_t stride, int out_width,
    int out_height)
{
    if (stride == 0)
        stride = static_cast<std::size_t>(width) * 3;
    std::size_t const row_bytes = static_cast<std::size_t>(width) * 3;
    // Like PIL, a pass whose size does not change is skipped (it would be the identity anyway).
    if (out_width != width)
    {
        std::vector<uint8_t> rows = resample_rows(src, height, stride, taps_for(width, out_width));
        if (out_height == height)
            return rows;
        return resample_columns(rows.data(), out_width, static_cast<std::size_t>(out_width) * 3,
            taps_for(height, out_height));
    }
    if (out_height != height)
        return resample_columns(src, width, stride, taps_for(height, out_height));
    std::vector<uint8_t> copy(row_bytes * height);
    for (int y = 0; y < height; ++y)
        std::memcpy(&copy[y * row_bytes], src + static_cast<std::size_t>(y) * stride, row_bytes);
    return copy;
}

} // namespace iqart
