// score_gradient ARTIFACT [WIDTH HEIGHT]: scores pixels the program makes itself (a colour gradient,
// WIDTH x HEIGHT, default 96x64) with one call, and prints the score.
#include <iqart/scorer.h>

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv)
{
    if (argc != 2 && argc != 4)
    {
        std::fprintf(stderr, "usage: %s ARTIFACT [WIDTH HEIGHT]\n", argv[0]);
        return 2;
    }
    int const width = argc == 4 ? std::stoi(argv[2]) : 96;
    int const height = argc == 4 ? std::stoi(argv[3]) : 64;
    std::vector<uint8_t> rgb(static_cast<std::size_t>(width) * height * 3);
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
        {
            uint8_t* pixel = &rgb[(static_cast<std::size_t>(y) * width + x) * 3];
            pixel[0] = static_cast<uint8_t>(x * 255 / (width - 1));
            pixel[1] = static_cast<uint8_t>(y * 255 / (height - 1));
            pixel[2] = static_cast<uint8_t>((x + y) % 256);
        }
    try
    {
        iqart::Scorer scorer(argv[1]); // OpenVINO on the CPU
        std::printf("%.9g\n", scorer.score(iqart::ImageView{rgb.data(), width, height}));
        return 0;
    }
    catch (iqart::Error const& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
