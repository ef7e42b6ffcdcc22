// iqart_resize_raw: applies a resize policy to raw RGB bytes with the library's resize, so tests can
// compare it byte for byte with the Python engine's.
//
//   iqart_resize_raw IN.rgb WIDTH HEIGHT POLICY OUT.rgb     POLICY: native | short_side=N | fixed=HxW
//
// Writes the resized pixels (rows of RGB, no header) and prints "WIDTH HEIGHT" of the result.
#include "iqart/resize.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace
{

iqart::ResizePolicy parse_policy(std::string const& text)
{
    iqart::ResizePolicy policy;
    if (text == "native")
        return policy;
    if (text.rfind("short_side=", 0) == 0)
    {
        policy.kind = iqart::ResizePolicy::Kind::ShortSide;
        policy.short_side = std::stoi(text.substr(11));
        return policy;
    }
    std::size_t const x = text.find('x', 6);
    if (text.rfind("fixed=", 0) == 0 && x != std::string::npos)
    {
        policy.kind = iqart::ResizePolicy::Kind::Fixed;
        policy.height = std::stoi(text.substr(6, x - 6));
        policy.width = std::stoi(text.substr(x + 1));
        return policy;
    }
    throw std::invalid_argument("bad policy " + text + " (native, short_side=N or fixed=HxW)");
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 6)
    {
        std::cerr << "usage: " << argv[0] << " IN.rgb WIDTH HEIGHT POLICY OUT.rgb\n";
        return 2;
    }
    try
    {
        int const width = std::stoi(argv[2]);
        int const height = std::stoi(argv[3]);
        std::ifstream in(argv[1], std::ios::binary);
        std::vector<uint8_t> const rgb{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        if (rgb.size() != static_cast<std::size_t>(width) * height * 3)
            throw std::runtime_error(std::string(argv[1]) + ": expected " + std::to_string(width * height * 3)
                + " bytes, found " + std::to_string(rgb.size()));
        iqart::Size const size = iqart::resize_target(width, height, parse_policy(argv[4]));
        std::vector<uint8_t> const out = iqart::resize_bicubic(rgb.data(), width, height, 0, size.width, size.height);
        std::ofstream(argv[5], std::ios::binary).write(reinterpret_cast<char const*>(out.data()),
            static_cast<std::streamsize>(out.size()));
        std::printf("%d %d\n", size.width, size.height);
        return 0;
    }
    catch (std::exception const& e)
    {
        std::cerr << "error: " << e.what() << '\n';
        return 1;
    }
}
