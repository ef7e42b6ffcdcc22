// JPEG (libjpeg-turbo) and PNG (libpng) files -> 8-bit RGB, for the example program.
//
// Pixel values are taken as stored: no EXIF rotation, no ICC conversion (the Python engine does
// both, so its scores match these only for upright sRGB files; the examples are such files).
// Grey and palette images become RGB; transparency is composited on white, as the Python engine
// does; 16-bit PNG samples are scaled to 8 bits with rounding.
#pragma once

#include "iqart/scorer.h"

#include <string>

namespace iqart_example
{

// The image in `path`; iqart::Error naming the file and the problem (unknown format, truncated, corrupt).
iqart::Image read_image(std::string const& path);

} // namespace iqart_example
