#include "image_files.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio> // before jpeglib.h, which uses FILE
#include <cstring>
#include <memory>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

namespace iqart_example
{

namespace
{

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

File open_file(std::string const& path)
{
    File file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file)
        throw iqart::Error(path + ": cannot open (" + std::strerror(errno) + ")");
    return file;
}

// What a decoder leaves when it fails: libjpeg and libpng report errors by longjmp, so the
// decoding functions below keep no C++ objects with destructors between setjmp and the jump.
struct Decoded
{
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;
    std::vector<uint8_t*> rows; // libpng's row pointers, here rather than on the jumping frame
    char error[JMSG_LENGTH_MAX + 200] = {};
};

struct JpegError
{
    jpeg_error_mgr manager;
    std::jmp_buf jump;
    char* message;
};

void jpeg_fail(j_common_ptr info)
{
    auto* error = reinterpret_cast<JpegError*>(info->err);
    (*info->err->format_message)(info, error->message);
    std::longjmp(error->jump, 1);
}

// A truncated JPEG is only a warning to libjpeg (it pads with grey); the Python engine refuses it.
void jpeg_message(j_common_ptr info, int level)
{
    if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF)
    {
        auto* error = reinterpret_cast<JpegError*>(info->err);
        std::strcpy(error->message, "truncated file (premature end of JPEG data)");
        std::longjmp(error->jump, 1);
    }
}

bool decode_jpeg(FILE* file, Decoded* out)
{
    jpeg_decompress_struct info;
    JpegError error;
    error.message = out->error;
    info.err = jpeg_std_error(&error.manager);
    error.manager.error_exit = jpeg_fail;
    error.manager.emit_message = jpeg_message;
    if (setjmp(error.jump))
    {
        jpeg_destroy_decompress(&info);
        return false;
    }
    jpeg_create_decompress(&info);
    jpeg_stdio_src(&info, file);
    jpeg_read_header(&info, TRUE);
    if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK)
    {
        std::strcpy(out->error, "CMYK JPEG: not supported by this example");
        jpeg_destroy_decompress(&info);
        return false;
    }
    info.out_color_space = JCS_RGB;
    jpeg_start_decompress(&info);
    out->width = static_cast<int>(info.output_width);
    out->height = static_cast<int>(info.output_height);
    out->rgb.resize(static_cast<std::size_t>(out->width) * out->height * 3);
    while (info.output_scanline < info.output_height)
    {
        JSAMPROW row = &out->rgb[static_cast<std::size_t>(info.output_scanline) * out->width * 3];
        jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    return true;
}

void png_fail(png_structp png, png_const_charp message)
{
    auto* out = static_cast<Decoded*>(png_get_error_ptr(png));
    std::snprintf(out->error, sizeof(out->error), "%s", message);
    png_longjmp(png, 1);
}

void png_warn(png_structp, png_const_charp) {}

bool decode_png(FILE* file, Decoded* out)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, out, png_fail, png_warn);
    if (png == nullptr)
    {
        std::strcpy(out->error, "out of memory");
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (info == nullptr || setjmp(png_jmpbuf(png)))
    {
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    png_init_io(png, file);
    png_read_info(png, info);
    png_set_expand(png);   // palette -> RGB, grey below 8 bits -> 8 bits, tRNS -> alpha
    png_set_scale_16(png); // 16-bit samples scaled (rounded) to 8 bits
    png_set_gray_to_rgb(png);
    png_read_update_info(png, info);
    int const channels = png_get_channels(png, info);
    out->width = static_cast<int>(png_get_image_width(png, info));
    out->height = static_cast<int>(png_get_image_height(png, info));
    std::size_t const row_bytes = png_get_rowbytes(png, info);
    out->rgb.resize(row_bytes * out->height);
    out->rows.resize(out->height);
    for (int y = 0; y < out->height; ++y)
        out->rows[y] = &out->rgb[y * row_bytes];
    png_read_image(png, out->rows.data());
    png_read_end(png, nullptr);
    png_destroy_read_struct(&png, &info, nullptr);
    if (channels == 4) // RGBA: composite on white, in place
    {
        std::size_t const pixels = static_cast<std::size_t>(out->width) * out->height;
        for (std::size_t i = 0; i < pixels; ++i)
        {
            unsigned const alpha = out->rgb[4 * i + 3];
            for (int c = 0; c < 3; ++c)
            {
                unsigned const blended = out->rgb[4 * i + c] * alpha + 255 * (255 - alpha);
                out->rgb[3 * i + c] = static_cast<uint8_t>((blended + 127) / 255);
            }
        }
        out->rgb.resize(pixels * 3);
    }
    return true;
}

} // namespace

iqart::Image read_image(std::string const& path)
{
    File file = open_file(path);
    unsigned char magic[8] = {};
    std::size_t const got = std::fread(magic, 1, sizeof(magic), file.get());
    std::rewind(file.get());
    bool const jpeg = got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF;
    bool const png = got == 8 && png_sig_cmp(magic, 0, 8) == 0;
    if (!jpeg && !png)
        throw iqart::Error(path + ": not a JPEG or PNG file" + (got == 0 ? " (empty file)" : ""));
    auto decoded = std::make_unique<Decoded>();
    if (!(jpeg ? decode_jpeg(file.get(), decoded.get()) : decode_png(file.get(), decoded.get())))
        throw iqart::Error(path + ": corrupt or truncated " + (jpeg ? "JPEG" : "PNG") + ": " + decoded->error);
    return iqart::Image(decoded->width, decoded->height, std::move(decoded->rgb));
}

} // namespace iqart_example
