// The TensorRT runtime: the artifact's cached plans (built by `iqart build` or the Python tensorrt
// backend), run with enqueueV3 on a CUDA stream. Both outputs, score and attributes, are bound on
// every run: TensorRT refuses to run a plan with an output left without an address.
//
// A plan only serves the graph, GPU, TensorRT version and plugin build it was built with, and the
// shapes in its profile; each plan's record says which (plan_records.h). Plans of the plugin graph
// need our plugin library (libiqart_plugins.so) loaded first. Its key, which the record names, is
// "file-<sha256[:16]>" of the library, or, for a library in the Python engine's plugin cache
// ($IQART_HOME/plugins/<build key>/), that build key.
#include "engine.h"

#include "files.h"
#include "plan_records.h"
#include "sha256.h"

#include "NvInferRuntime.h"
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

namespace iqart
{

namespace
{

void check_cuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
        throw Error(std::string(what) + ": " + cudaGetErrorString(status));
}

class Logger : public nvinfer1::ILogger
{
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
            std::cerr << "[TensorRT] " << message << '\n';
    }
};

Logger& logger()
{
    static Logger instance; // TensorRT expects one logger per process
    return instance;
}

std::string tensorrt_version()
{
    return std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "."
        + std::to_string(getInferLibPatchVersion()) + "." + std::to_string(getInferLibBuildVersion());
}

std::set<std::string> plugin_keys(std::string const& library)
{
    std::vector<char> const bytes = read_binary_file(library);
    std::set<std::string> keys{"none", "file-" + sha256_bytes(bytes.data(), bytes.size()).substr(0, 16)};
    std::filesystem::path const path(library);
    if (path.parent_path().parent_path().filename() == "plugins")
        keys.insert(path.parent_path().filename().string());
    return keys;
}

// A device buffer that grows as batches grow.
class DeviceBuffer
{
public:
    DeviceBuffer() = default;
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    ~DeviceBuffer() { cudaFree(data_); }

    void* reserve(std::size_t bytes)
    {
        if (bytes > size_)
        {
            check_cuda(cudaFree(data_), "cudaFree");
            data_ = nullptr;
            size_ = 0;
            check_cuda(cudaMalloc(&data_, bytes), "cudaMalloc");
            size_ = bytes;
        }
        return data_;
    }

private:
    void* data_ = nullptr;
    std::size_t size_ = 0;
};

struct LoadedPlan
{
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
};

class TensorRTEngine : public Engine
{
public:
    TensorRTEngine(Spec const& spec, ScorerOptions const& options) : spec_(spec), device_(options.device)
    {
        check_cuda(cudaSetDevice(device_), "cudaSetDevice");
        cudaDeviceProp properties{};
        check_cuda(cudaGetDeviceProperties(&properties, device_), "cudaGetDeviceProperties");
        environment_.gpu = properties.name;
        environment_.sm = std::to_string(properties.major) + "." + std::to_string(properties.minor);
        environment_.tensorrt = tensorrt_version();
        environment_.plugins = {"none"};
        runtime_.reset(nvinfer1::createInferRuntime(logger()));
        if (!runtime_)
            throw Error("TensorRT: cannot create a runtime (libnvinfer " + environment_.tensorrt + ")");
        std::string library = options.plugin_library;
        if (library.empty() && std::getenv("IQART_PLUGIN_LIBRARY") != nullptr)
            library = std::getenv("IQART_PLUGIN_LIBRARY");
        if (!library.empty())
        {
            environment_.plugins = plugin_keys(library);
            if (runtime_->getPluginRegistry().loadLibrary(library.c_str()) == nullptr)
                throw Error(library + ": TensorRT cannot load this plugin library");
            plugin_library_ = library;
        }
        directory_ = join_path(spec.directory, "plans");
        std::vector<std::string> unreadable;
        for (PlanRecord& record : read_plan_records(directory_, unreadable))
        {
            std::string const why = plan_mismatch(record, environment_, spec);
            if (why.empty())
                usable_.push_back(std::move(record));
            else
                rejected_.push_back(record.record_path + ": " + why);
        }
        rejected_.insert(rejected_.end(), unreadable.begin(), unreadable.end());
        if (usable_.empty())
            throw Error(explain("no TensorRT plan fits this machine"));
        // Plugin plans first when the plugin is loaded (the Python backend prefers them), then the narrowest profile.
        std::stable_sort(usable_.begin(), usable_.end(), [](PlanRecord const& a, PlanRecord const& b) {
            return std::make_pair(a.plugin == "none", a.batch[2]) < std::make_pair(b.plugin == "none", b.batch[2]);
        });
        check_cuda(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }

    ~TensorRTEngine() override
    {
        if (stream_ != nullptr)
            cudaStreamDestroy(stream_);
    }

    Outputs run(int n, int height, int width, uint8_t const* images, uint8_t const* references) override
    {
        int largest = 0;
        for (PlanRecord const& record : usable_)
            if (record.accepts_image(height, width))
                largest = std::max(largest, record.batch[2]);
        if (largest == 0)
            throw Error(explain(std::to_string(width) + "x" + std::to_string(height)
                + " is outside every plan's image sides (build one with `iqart build DIR --max-side N`)"));
        if (n > largest) // more images than any plan takes at once: in chunks
        {
            std::size_t const image_bytes = static_cast<std::size_t>(height) * width * 3;
            Outputs outputs;
            for (int start = 0; start < n; start += largest)
            {
                int const count = std::min(largest, n - start);
                Outputs const part = run(count, height, width, images + start * image_bytes,
                    references ? references + start * image_bytes : nullptr);
                outputs.scores.insert(outputs.scores.end(), part.scores.begin(), part.scores.end());
                outputs.attributes.insert(outputs.attributes.end(), part.attributes.begin(), part.attributes.end());
            }
            return outputs;
        }
        for (PlanRecord const& record : usable_)
            if (record.accepts_image(height, width) && record.accepts_batch(n))
                return execute(load(record), n, height, width, images, references);
        throw Error(explain("no plan takes a batch of " + std::to_string(n)));
    }

    std::string describe() const override
    {
        return "TensorRT " + environment_.tensorrt + " on " + environment_.gpu + " (sm " + environment_.sm
            + "), plans in " + directory_ + (plugin_library_.empty() ? "" : ", plugin " + plugin_library_);
    }

private:
    std::string explain(std::string const& problem) const
    {
        std::string text = directory_ + ": " + problem + " (" + environment_.gpu + ", sm " + environment_.sm
            + ", TensorRT " + environment_.tensorrt + ")";
        for (std::string const& line : rejected_)
            text += "\n  " + line;
        return text + "\n  build a plan on this machine with `iqart build DIR`";
    }

    LoadedPlan& load(PlanRecord const& record)
    {
        auto const found = loaded_.find(record.plan_path);
        if (found != loaded_.end())
            return found->second;
        std::string const graph = join_path(spec_.directory, record.graph);
        if (is_regular_file(graph))
            check_graph(spec_, record.graph); // a graph file present must be the one spec.json records
        std::vector<char> const plan = read_binary_file(record.plan_path);
        if (sha256_bytes(plan.data(), plan.size()) != record.plan_sha256)
            throw Error(record.plan_path + ": contents do not match its record (damaged or replaced); delete it and "
                "rebuild with `iqart build DIR`");
        LoadedPlan loaded;
        loaded.engine.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
        if (!loaded.engine)
            throw Error(record.plan_path + ": TensorRT cannot deserialize this plan");
        loaded.context.reset(loaded.engine->createExecutionContext());
        if (!loaded.context)
            throw Error(record.plan_path + ": cannot create an execution context");
        check_outputs(*loaded.engine, record.plan_path);
        return loaded_.emplace(record.plan_path, std::move(loaded)).first->second;
    }

    // The plan's outputs must be exactly score (N,) and attributes (N, K), float32: an output this
    // engine does not bind would make every run fail.
    void check_outputs(nvinfer1::ICudaEngine const& engine, std::string const& plan_path) const
    {
        std::set<std::string> outputs;
        for (int i = 0; i < engine.getNbIOTensors(); ++i)
        {
            char const* name = engine.getIOTensorName(i);
            if (engine.getTensorIOMode(name) == nvinfer1::TensorIOMode::kOUTPUT)
                outputs.insert(name);
        }
        if (outputs != std::set<std::string>{"score", "attributes"})
        {
            std::string names;
            for (std::string const& name : outputs)
                names += (names.empty() ? "" : ", ") + name;
            throw Error(plan_path + ": its outputs are " + (names.empty() ? "none" : names)
                + ", not score and attributes (a plan of an older graph: rebuild it with `iqart build DIR`)");
        }
        if (engine.getTensorDataType("score") != nvinfer1::DataType::kFLOAT)
            throw Error(plan_path + ": its score output is not float32");
        nvinfer1::Dims const shape = engine.getTensorShape("attributes");
        std::size_t const k = spec_.attribute_names.size();
        if (engine.getTensorDataType("attributes") != nvinfer1::DataType::kFLOAT || shape.nbDims != 2
            || shape.d[1] != static_cast<int64_t>(k))
            throw Error(plan_path + ": its attributes output is not float32 (N, " + std::to_string(k) + ")");
    }

    Outputs execute(LoadedPlan& plan, int n, int height, int width, uint8_t const* images,
        uint8_t const* references)
    {
        check_cuda(cudaSetDevice(device_), "cudaSetDevice");
        std::size_t const bytes = static_cast<std::size_t>(n) * height * width * 3;
        nvinfer1::Dims dims{};
        dims.nbDims = 4;
        dims.d[0] = n;
        dims.d[1] = height;
        dims.d[2] = width;
        dims.d[3] = 3;
        void* image_buffer = image_buffer_.reserve(bytes);
        std::size_t const k = spec_.attribute_names.size();
        void* score_buffer = score_buffer_.reserve(static_cast<std::size_t>(n) * sizeof(float));
        void* attribute_buffer = attribute_buffer_.reserve(static_cast<std::size_t>(n) * k * sizeof(float));
        check_cuda(cudaMemcpyAsync(image_buffer, images, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
        bool ok = plan.context->setInputShape("image", dims) && plan.context->setTensorAddress("image", image_buffer)
            && plan.context->setTensorAddress("score", score_buffer)
            && plan.context->setTensorAddress("attributes", attribute_buffer);
        if (references != nullptr)
        {
            void* reference_buffer = reference_buffer_.reserve(bytes);
            check_cuda(cudaMemcpyAsync(reference_buffer, references, bytes, cudaMemcpyHostToDevice, stream_),
                "cudaMemcpyAsync");
            ok = ok && plan.context->setInputShape("reference", dims)
                && plan.context->setTensorAddress("reference", reference_buffer);
        }
        if (!ok)
            throw Error(directory_ + ": the plan rejects a batch of " + std::to_string(n) + " images of "
                + std::to_string(width) + "x" + std::to_string(height));
        if (!plan.context->enqueueV3(stream_))
            throw Error(directory_ + ": enqueueV3 failed");
        Outputs outputs;
        outputs.scores.resize(static_cast<std::size_t>(n));
        outputs.attributes.resize(static_cast<std::size_t>(n) * k);
        check_cuda(cudaMemcpyAsync(outputs.scores.data(), score_buffer, outputs.scores.size() * sizeof(float),
                       cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync");
        check_cuda(cudaMemcpyAsync(outputs.attributes.data(), attribute_buffer,
                       outputs.attributes.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync");
        check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        return outputs;
    }

    Spec spec_;
    int device_;
    PlanEnvironment environment_;
    std::string directory_;
    std::string plugin_library_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::vector<PlanRecord> usable_;
    std::vector<std::string> rejected_;
    std::map<std::string, LoadedPlan> loaded_;
    cudaStream_t stream_ = nullptr;
    DeviceBuffer image_buffer_, reference_buffer_, score_buffer_, attribute_buffer_;
};

} // namespace

std::unique_ptr<Engine> make_tensorrt_engine(Spec const& spec, ScorerOptions const& options)
{
    return std::make_unique<TensorRTEngine>(spec, options);
}

bool has_tensorrt()
{
    return true;
}

} // namespace iqart
