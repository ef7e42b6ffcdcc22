// Scores images with a TensorRT plan written by `iqart build`, from C++.
//
//   iqart_score <model.plan> <libiqart_plugins.so> <image.ppm>...        no-reference models
//   iqart_score <model.plan> <libiqart_plugins.so> <dist.ppm,ref.ppm>... full-reference models
//
// Images are binary PPM (P6, 8-bit RGB) and must share one size: they form one uint8 NHWC batch
// (input "image", and "reference" for FR plans); the plan outputs "score", float32 (N,).
#include "NvInferRuntime.h"

#include <cuda_runtime_api.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace
{

#define CHECK_CUDA(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (call);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
        {                                                                                                              \
            throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(status_));                         \
        }                                                                                                              \
    } while (0)

class Logger : public nvinfer1::ILogger
{
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TensorRT] " << message << '\n';
        }
    }
};

struct Image
{
    int64_t width{};
    int64_t height{};
    std::vector<uint8_t> rgb; // height * width * 3, row-major
};

// Next header token of a PPM file; '#' starts a comment that runs to the end of the line.
std::string ppmToken(std::istream& in)
{
    std::string token;
    int c = in.get();
    while (c != EOF && (std::isspace(c) || c == '#'))
    {
        if (c == '#')
        {
            while (c != EOF && c != '\n')
                c = in.get();
        }
        c = in.get();
    }
    while (c != EOF && !std::isspace(c))
    {
        token.push_back(static_cast<char>(c));
        c = in.get();
    }
    return token; // the single whitespace after the token is consumed, as P6 requires
}

Image readPpm(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error("cannot open " + path);
    if (ppmToken(in) != "P6")
        throw std::runtime_error(path + ": not a binary PPM (P6) file");
    Image image;
    image.width = std::stoll(ppmToken(in));
    image.height = std::stoll(ppmToken(in));
    if (std::stoi(ppmToken(in)) != 255)
        throw std::runtime_error(path + ": only 8-bit PPM (maxval 255) is supported");
    image.rgb.resize(static_cast<size_t>(image.width * image.height * 3));
    in.read(reinterpret_cast<char*>(image.rgb.data()), static_cast<std::streamsize>(image.rgb.size()));
    if (in.gcount() != static_cast<std::streamsize>(image.rgb.size()))
        throw std::runtime_error(path + ": truncated pixel data");
    return image;
}

// Packs same-sized images into one (N, H, W, 3) uint8 batch.
std::vector<uint8_t> packBatch(std::vector<Image> const& images)
{
    std::vector<uint8_t> batch;
    for (Image const& image : images)
    {
        if (image.width != images[0].width || image.height != images[0].height)
            throw std::runtime_error("all images of a batch must share one size");
        batch.insert(batch.end(), image.rgb.begin(), image.rgb.end());
    }
    return batch;
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error("cannot open " + path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool hasInput(nvinfer1::ICudaEngine const& engine, char const* name)
{
    for (int32_t i = 0; i < engine.getNbIOTensors(); ++i)
    {
        char const* tensor = engine.getIOTensorName(i);
        if (std::string(tensor) == name && engine.getTensorIOMode(tensor) == nvinfer1::TensorIOMode::kINPUT)
            return true;
    }
    return false;
}

// A device buffer freed on scope exit.
struct DeviceBuffer
{
    void* data{};
    explicit DeviceBuffer(size_t bytes) { CHECK_CUDA(cudaMalloc(&data, bytes)); }
    ~DeviceBuffer() { cudaFree(data); }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

int run(int argc, char** argv)
{
    if (argc < 4)
    {
        std::cerr << "usage: " << argv[0] << " <model.plan> <libiqart_plugins.so> <image.ppm | dist.ppm,ref.ppm>...\n";
        return 2;
    }
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    if (!runtime || runtime->getPluginRegistry().loadLibrary(argv[2]) == nullptr)
        throw std::runtime_error(std::string("cannot load the plugin library ") + argv[2]);
    std::vector<char> const plan = readFile(argv[1]);
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine)
        throw std::runtime_error(std::string("cannot deserialize the plan ") + argv[1]);
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());
    if (!context)
        throw std::runtime_error("cannot create an execution context");

    bool const full_reference = hasInput(*engine, "reference");
    std::vector<std::string> paths;
    std::vector<Image> images;
    std::vector<Image> references;
    for (int i = 3; i < argc; ++i)
    {
        std::string const arg = argv[i];
        size_t const comma = arg.find(',');
        if (full_reference != (comma != std::string::npos))
            throw std::runtime_error(full_reference ? "this FR plan needs dist.ppm,ref.ppm pairs, got " + arg
                                                    : "this NR plan takes single images, got " + arg);
        paths.push_back(arg);
        images.push_back(readPpm(arg.substr(0, comma)));
        if (full_reference)
            references.push_back(readPpm(arg.substr(comma + 1)));
    }

    int64_t const n = static_cast<int64_t>(images.size());
    nvinfer1::Dims dims{};
    dims.nbDims = 4;
    dims.d[0] = n;
    dims.d[1] = images[0].height;
    dims.d[2] = images[0].width;
    dims.d[3] = 3;
    std::vector<uint8_t> const batch = packBatch(images);
    cudaStream_t stream{};
    CHECK_CUDA(cudaStreamCreate(&stream));
    DeviceBuffer image_buffer(batch.size());
    DeviceBuffer score_buffer(static_cast<size_t>(n) * sizeof(float));
    CHECK_CUDA(cudaMemcpyAsync(image_buffer.data, batch.data(), batch.size(), cudaMemcpyHostToDevice, stream));
    bool ok = context->setInputShape("image", dims) && context->setTensorAddress("image", image_buffer.data)
        && context->setTensorAddress("score", score_buffer.data);
    std::unique_ptr<DeviceBuffer> reference_buffer;
    std::vector<uint8_t> reference_batch;
    if (full_reference)
    {
        reference_batch = packBatch(references);
        if (reference_batch.size() != batch.size())
            throw std::runtime_error("references must have the size of their distorted images");
        reference_buffer = std::make_unique<DeviceBuffer>(reference_batch.size());
        CHECK_CUDA(cudaMemcpyAsync(reference_buffer->data, reference_batch.data(), reference_batch.size(),
            cudaMemcpyHostToDevice, stream));
        ok = ok && context->setInputShape("reference", dims)
            && context->setTensorAddress("reference", reference_buffer->data);
    }
    if (!ok)
        throw std::runtime_error("the plan rejects this batch (its optimization profile bounds N, H, W)");
    if (!context->enqueueV3(stream))
        throw std::runtime_error("enqueueV3 failed");
    std::vector<float> scores(static_cast<size_t>(n));
    CHECK_CUDA(cudaMemcpyAsync(scores.data(), score_buffer.data, scores.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    CHECK_CUDA(cudaStreamDestroy(stream));
    for (int64_t i = 0; i < n; ++i)
        std::printf("%s\t%.6f\n", paths[static_cast<size_t>(i)].c_str(), scores[static_cast<size_t>(i)]);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(argc, argv);
    }
    catch (std::exception const& e)
    {
        std::cerr << "error: " << e.what() << '\n';
        return 1;
    }
}
