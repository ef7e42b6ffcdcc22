// The resize policy applied exactly as the Python engine applies it (iqart.engine.pipeline.images):
// the target size rule, and PIL's antialiased bicubic resampling of 8-bit RGB, byte for byte.
#pragma once

#include "iqart/spec.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace iqart
{

struct Size
{
    int width = 0;
    int height = 0;
};

// The (width, height) an image of this size is resized to under `policy` (its own size for native).
Size resize_target(int width, int height, ResizePolicy const& policy);

// `src` (height rows of `stride` bytes, RGB) resampled to out_width x out_height with PIL's
// BICUBIC filter as `Image.resize(size, BICUBIC, reducing_gap=None)` does it: a horizontal pass
// then a vertical pass, each with fixed-point weights and results rounded and clamped to 8 bits.
std::vector<uint8_t> resize_bicubic(uint8_t const* src, int width, int height, std::size_t stride, int out_width,
    int out_height);

} // namespace iqart
