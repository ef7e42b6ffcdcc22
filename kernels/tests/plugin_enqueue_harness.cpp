// Runs libiqart_plugins.so on a GPU the way TensorRT would, without TensorRT: the plugin comes
// from its creator (dlopen, getCreators, IPluginCreatorV3One::createPlugin with a
// PluginFieldCollection), and is driven through the calls a TensorRT build and run make, in their
// order: getOutputDataTypes, getOutputShapes (symbolic batch and length, constant width, through
// a small IExprBuilder of our own), supportsFormatCombination position by position,
// configurePlugin and getWorkspaceSize on a profile, getFieldsToSerialize and createPlugin in the
// runtime phase (a plan being deserialized), attachToContext, onShapeChange, then enqueue on fp16
// device buffers (cudaMalloc) and, once more, through clone(). Each output is compared with a
// float64 reference computed here from the same fp16 inputs.
//
// Why it exists: no TensorRT runs on the lent Hopper machines (TensorRT 11's libraries are not
// installable there, and TensorRT for RTX has no SM90 target), so this is the only way the
// plugin's run-time path executes there. benchmarks/plugin_enqueue_check.py builds the library
// and this program, runs it with --dump, and compares the dumped outputs with the torch op too.
//
// Usage: plugin_enqueue_harness <libiqart_plugins.so> [--seed N] [--dump DIR]
//   --seed N    the inputs' seed (default: a fresh one, printed, so a failure can be replayed)
//   --dump DIR  writes each case's Q, K, V and O (raw fp16, little-endian) and DIR/cases.txt
// Exit status: 0 all cases within tolerance, 1 a check failed, 2 bad usage or no library,
// 3 no CUDA device (every host-side call before the first allocation has then been made).
#include "NvInferRuntime.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

// Relative to the largest |reference| value: fp16 inputs, fp16 probabilities in the tensor-core
// product and an fp16 output each round at 2^-11 (4.9e-4) relative; the same bound as the fp16
// checks of the torch op in tests/test_kernels.py.
constexpr double kRelativeTolerance = 2e-3;
constexpr char kNoDevice[] = "no CUDA device";

int gFailures = 0;

bool check(bool condition, std::string const& what)
{
    if (!condition)
    {
        ++gFailures;
        std::printf("FAIL: %s\n", what.c_str());
    }
    return condition;
}

// --- a minimal expression builder: constants and symbols (runtime dimensions) -----------------

class Expr;

class ExprImpl final : public apiv::VDimensionExpr
{
public:
    ExprImpl(bool constant, int64_t value)
        : mConstant(constant)
        , mValue(value)
    {
    }
    bool isConstant() const override { return mConstant; }
    int64_t getConstantValue() const override
    {
        return mConstant ? mValue : std::numeric_limits<int64_t>::min();
    }
    bool isSizeTensor() const override { return false; }

private:
    bool mConstant;
    int64_t mValue;
};

// TensorRT offers no public way to make an IDimensionExpr; a harness standing in for TensorRT
// has to, so it points the interface at its own implementation.
class Expr final : public IDimensionExpr
{
public:
    Expr(bool constant, int64_t value)
        : mOwn(constant, value)
    {
        mImpl = &mOwn;
    }

private:
    ExprImpl mOwn;
};

class ExprBuilderImpl final : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override { return make(true, value); }

    IDimensionExpr const* operation(
        DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
    {
        if (!first.isConstant() || !second.isConstant())
        {
            return make(false, 0);
        }
        int64_t const a = first.getConstantValue();
        int64_t const b = second.getConstantValue();
        switch (op)
        {
        case DimensionOperation::kSUM: return make(true, a + b);
        case DimensionOperation::kPROD: return make(true, a * b);
        case DimensionOperation::kMAX: return make(true, std::max(a, b));
        case DimensionOperation::kMIN: return make(true, std::min(a, b));
        case DimensionOperation::kSUB: return make(true, a - b);
        case DimensionOperation::kEQUAL: return make(true, a == b);
        case DimensionOperation::kLESS: return make(true, a < b);
        case DimensionOperation::kFLOOR_DIV: return b == 0 ? nullptr : make(true, a / b);
        case DimensionOperation::kCEIL_DIV: return b == 0 ? nullptr : make(true, (a + b - 1) / b);
        }
        return nullptr;
    }

    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr; // the plugin has no size-tensor outputs
    }

    IDimensionExpr const* make(bool constant, int64_t value)
    {
        mExprs.push_back(std::make_unique<Expr>(constant, value));
        return mExprs.back().get();
    }

private:
    std::vector<std::unique_ptr<Expr>> mExprs;
};

class ExprBuilder final : public IExprBuilder
{
public:
    ExprBuilder() { mImpl = &mOwn; }
    IDimensionExpr const* make(bool constant, int64_t value) { return mOwn.make(constant, value); }

private:
    ExprBuilderImpl mOwn;
};

// --- TensorRT's side of the plugin library -----------------------------------------------------

class PrintingLogger final : public ILogger
{
public:
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::printf("  (plugin logged: %s)\n", message);
        }
    }
};

class Finder final : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override { return mLogger; }

private:
    ILogger* mLogger;
};

Dims dims3(int64_t a, int64_t b, int64_t c)
{
    Dims d{};
    d.nbDims = 3;
    d.d[0] = a;
    d.d[1] = b;
    d.d[2] = c;
    return d;
}

struct Case
{
    char const* name;
    int64_t batch;
    int64_t q_len;
    int64_t kv_len;
    int32_t heads;
    int64_t kv_max; // the profile's longest K/V: the workspace is sized for it, not for kv_len
};

// QualiCLIP's attention pool (one query over HW+1 keys, 32 heads of 64) at 224 px (7x7+1),
// 1024x768 (32x24+1) and 2048x1536 (64x48+1: split keys with the combine kernel), and BPCLIP's
// cross-attention chain (Nq = Nk = grid, 4 heads of 64) at 224 (7x7), 384 (12x12) and 640 (20x20).
constexpr Case kCases[] = {
    {"qualiclip-224", 2, 1, 50, 32, 50},
    {"qualiclip-1024x768", 2, 1, 769, 32, 3073},
    {"qualiclip-2048x1536", 2, 1, 3073, 32, 3073},
    {"bpclip-224", 3, 49, 49, 4, 400},
    {"bpclip-384", 2, 144, 144, 4, 400},
    {"bpclip-640", 2, 400, 400, 4, 400},
};
constexpr int32_t kHeadDim = 64;
constexpr float kScale = 0.125f; // 1/sqrt(64), as the exported graphs set it

// The float64 attention of fp16 inputs: O[b, i, h*D + d] = sum_j softmax_j(scale * q.k_j) v_j[d].
std::vector<double> reference(Case const& c, std::vector<__half> const& q, std::vector<__half> const& k,
    std::vector<__half> const& v)
{
    int64_t const width = int64_t{c.heads} * kHeadDim;
    std::vector<double> out(static_cast<size_t>(c.batch * c.q_len * width));
    std::vector<double> logits(static_cast<size_t>(c.kv_len));
    for (int64_t b = 0; b < c.batch; ++b)
        for (int64_t i = 0; i < c.q_len; ++i)
            for (int32_t h = 0; h < c.heads; ++h)
            {
                __half const* qi = &q[static_cast<size_t>((b * c.q_len + i) * width + h * kHeadDim)];
                double top = -INFINITY;
                for (int64_t j = 0; j < c.kv_len; ++j)
                {
                    __half const* kj = &k[static_cast<size_t>((b * c.kv_len + j) * width + h * kHeadDim)];
                    double dot = 0;
                    for (int32_t d = 0; d < kHeadDim; ++d)
                        dot += double(__half2float(qi[d])) * double(__half2float(kj[d]));
                    logits[j] = double(kScale) * dot;
                    top = std::max(top, logits[j]);
                }
                double total = 0;
                for (int64_t j = 0; j < c.kv_len; ++j)
                    total += (logits[j] = std::exp(logits[j] - top));
                double* oi = &out[static_cast<size_t>((b * c.q_len + i) * width + h * kHeadDim)];
                for (int64_t j = 0; j < c.kv_len; ++j)
                {
                    __half const* vj = &v[static_cast<size_t>((b * c.kv_len + j) * width + h * kHeadDim)];
                    for (int32_t d = 0; d < kHeadDim; ++d)
                        oi[d] += logits[j] / total * double(__half2float(vj[d]));
                }
            }
    return out;
}

std::vector<__half> randomHalves(size_t count, std::mt19937_64& rng)
{
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<__half> values(count);
    for (auto& value : values)
        value = __float2half(normal(rng));
    return values;
}

bool cudaOk(cudaError_t status, std::string const& what)
{
    return check(status == cudaSuccess, what + ": " + cudaGetErrorString(status));
}

struct DeviceBuffer
{
    void* ptr = nullptr;
    ~DeviceBuffer() { cudaFree(ptr); }
};

void writeFile(std::string const& path, void const* data, size_t bytes)
{
    std::ofstream file(path, std::ios::binary);
    file.write(static_cast<char const*>(data), static_cast<std::streamsize>(bytes));
    check(file.good(), "writing " + path);
}

IPluginV3* createPlugin(IPluginCreatorV3One* creator, PluginFieldCollection const* fields, TensorRTPhase phase)
{
    return creator->createPlugin("attention", fields, phase);
}

template <typename T>
T* capability(IPluginV3* plugin, PluginCapabilityType type)
{
    return plugin == nullptr ? nullptr : static_cast<T*>(plugin->getCapabilityInterface(type));
}

// The build phase, as TensorRT's builder drives it, on a profile 1..max; returns the workspace
// size it reported, or -1 after a failed check.
int64_t buildPhase(IPluginV3* plugin, Case const& c)
{
    std::string const where = std::string(c.name) + ": ";
    int const failuresBefore = gFailures;
    auto* build = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD);
    if (!check(build != nullptr && build->getNbOutputs() == 1, where + "a build capability with one output"))
        return -1;
    DataType const inputTypes[3] = {DataType::kHALF, DataType::kHALF, DataType::kHALF};
    DataType outputType = DataType::kINT8;
    check(build->getOutputDataTypes(&outputType, 1, inputTypes, 3) == 0 && outputType == DataType::kHALF,
        where + "getOutputDataTypes: fp16 out of fp16 in");

    int64_t const width = int64_t{c.heads} * kHeadDim;
    ExprBuilder exprs;
    DimsExprs inputs[3];
    IDimensionExpr const* batch = exprs.make(false, 0);
    IDimensionExpr const* queries = c.q_len == 1 ? exprs.make(true, 1) : exprs.make(false, 0);
    IDimensionExpr const* keys = exprs.make(false, 0);
    for (int32_t i = 0; i < 3; ++i)
    {
        inputs[i].nbDims = 3;
        inputs[i].d[0] = batch;
        inputs[i].d[1] = i == 0 ? queries : keys;
        inputs[i].d[2] = exprs.make(true, width);
    }
    DimsExprs output{};
    bool const shaped = build->getOutputShapes(inputs, 3, nullptr, 0, &output, 1, exprs) == 0;
    check(shaped && output.nbDims == 3 && output.d[0] == batch && output.d[1] == queries
            && output.d[2]->isConstant() && output.d[2]->getConstantValue() == width,
        where + "getOutputShapes: O has Q's shape");

    int64_t const q_max = c.q_len == 1 ? 1 : c.kv_max;
    DynamicPluginTensorDesc io[4]{};
    Dims const maxima[4] = {dims3(c.batch, q_max, width), dims3(c.batch, c.kv_max, width),
        dims3(c.batch, c.kv_max, width), dims3(c.batch, q_max, width)};
    for (int32_t i = 0; i < 4; ++i)
    {
        io[i].desc.type = DataType::kHALF;
        io[i].desc.format = TensorFormat::kLINEAR;
        io[i].desc.dims = dims3(-1, i == 0 || i == 3 ? (c.q_len == 1 ? 1 : -1) : -1, width);
        io[i].min = dims3(1, 1, width);
        io[i].opt = dims3(c.batch, i == 0 || i == 3 ? c.q_len : c.kv_len, width);
        io[i].max = maxima[i];
    }
    bool formats = true;
    for (int32_t pos = 0; pos < 4; ++pos)
        formats = formats && build->supportsFormatCombination(pos, io, 3, 1);
    check(formats, where + "supportsFormatCombination: fp16 linear at every position");
    check(build->configurePlugin(io, 3, io + 3, 1) == 0, where + "configurePlugin accepts the profile");
    size_t const workspace = build->getWorkspaceSize(io, 3, io + 3, 1);
    return gFailures == failuresBefore ? static_cast<int64_t>(workspace) : -1;
}

// One case: build phase, serialisation round trip, runtime phase, enqueue, clone, compare.
// Returns false when there is no CUDA device (the host-side calls ran; nothing on the device did).
bool runCase(IPluginCreatorV3One* creator, Case const& c, std::mt19937_64& rng, char const* dumpDir)
{
    std::string const where = std::string(c.name) + ": ";
    int32_t const heads = c.heads;
    float const scale = kScale;
    PluginField const fieldArray[2] = {PluginField("num_heads", &heads, PluginFieldType::kINT32, 1),
        PluginField("scale", &scale, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection const fields{2, fieldArray};
    std::unique_ptr<IPluginV3> built(createPlugin(creator, &fields, TensorRTPhase::kBUILD));
    if (!check(built != nullptr, where + "createPlugin (build phase)"))
        return true;
    int64_t const workspaceBytes = buildPhase(built.get(), c);
    if (workspaceBytes < 0)
        return true;

    // A plan keeps the fields getFieldsToSerialize returns; deserializing it calls createPlugin
    // with them in the runtime phase, then attachToContext once per execution context.
    auto* builtRuntime = capability<IPluginV3OneRuntime>(built.get(), PluginCapabilityType::kRUNTIME);
    PluginFieldCollection const* serialized = builtRuntime->getFieldsToSerialize();
    std::unique_ptr<IPluginV3> restored(createPlugin(creator, serialized, TensorRTPhase::kRUNTIME));
    if (!check(restored != nullptr, where + "createPlugin (runtime phase) from the serialized fields"))
        return true;
    auto* restoredRuntime = capability<IPluginV3OneRuntime>(restored.get(), PluginCapabilityType::kRUNTIME);
    std::unique_ptr<IPluginV3> attached(restoredRuntime->attachToContext(nullptr));
    auto* runtime = capability<IPluginV3OneRuntime>(attached.get(), PluginCapabilityType::kRUNTIME);
    if (!check(runtime != nullptr, where + "attachToContext gives a runtime plugin"))
        return true;

    int64_t const width = int64_t{c.heads} * kHeadDim;
    size_t const qCount = static_cast<size_t>(c.batch * c.q_len * width);
    size_t const kvCount = static_cast<size_t>(c.batch * c.kv_len * width);
    PluginTensorDesc desc[4]{};
    for (int32_t i = 0; i < 4; ++i)
    {
        desc[i].type = DataType::kHALF;
        desc[i].format = TensorFormat::kLINEAR;
        desc[i].dims = dims3(c.batch, i == 0 || i == 3 ? c.q_len : c.kv_len, width);
    }
    check(runtime->onShapeChange(desc, 3, desc + 3, 1) == 0, where + "onShapeChange accepts the shapes");

    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    {
        cudaGetLastError(); // clear it: nothing ran
        return false;
    }
    std::vector<__half> const q = randomHalves(qCount, rng);
    std::vector<__half> const k = randomHalves(kvCount, rng);
    std::vector<__half> const v = randomHalves(kvCount, rng);
    DeviceBuffer dq, dk, dv, dout, dworkspace;
    cudaStream_t stream = nullptr;
    bool ok = cudaOk(cudaMalloc(&dq.ptr, qCount * sizeof(__half)), where + "cudaMalloc Q")
        && cudaOk(cudaMalloc(&dk.ptr, kvCount * sizeof(__half)), where + "cudaMalloc K")
        && cudaOk(cudaMalloc(&dv.ptr, kvCount * sizeof(__half)), where + "cudaMalloc V")
        && cudaOk(cudaMalloc(&dout.ptr, qCount * sizeof(__half)), where + "cudaMalloc O")
        && (workspaceBytes == 0
            || cudaOk(cudaMalloc(&dworkspace.ptr, static_cast<size_t>(workspaceBytes)), where + "cudaMalloc workspace"))
        && cudaOk(cudaMemcpy(dq.ptr, q.data(), qCount * sizeof(__half), cudaMemcpyHostToDevice), where + "copy Q")
        && cudaOk(cudaMemcpy(dk.ptr, k.data(), kvCount * sizeof(__half), cudaMemcpyHostToDevice), where + "copy K")
        && cudaOk(cudaMemcpy(dv.ptr, v.data(), kvCount * sizeof(__half), cudaMemcpyHostToDevice), where + "copy V")
        && cudaOk(cudaStreamCreate(&stream), where + "cudaStreamCreate");
    if (!ok)
        return true;

    // Poison: 0xFFFF is an fp16 NaN, so an output element the kernels never write stays NaN, and
    // a kernel that reads workspace it did not write first produces NaN too.
    auto enqueue = [&](IPluginV3OneRuntime* plugin, std::vector<__half>& out, char const* label) {
        void const* inputs[3] = {dq.ptr, dk.ptr, dv.ptr};
        void* outputs[1] = {dout.ptr};
        out.assign(qCount, __float2half(0.0f));
        return cudaOk(cudaMemset(dout.ptr, 0xFF, qCount * sizeof(__half)), where + "poison O")
            && (workspaceBytes == 0
                || cudaOk(cudaMemset(dworkspace.ptr, 0xFF, static_cast<size_t>(workspaceBytes)), where + "poison workspace"))
            && check(plugin->enqueue(desc, desc + 3, inputs, outputs, dworkspace.ptr, stream) == 0,
                where + label + ": enqueue returned 0")
            && cudaOk(cudaGetLastError(), where + label + ": after enqueue")
            && cudaOk(cudaStreamSynchronize(stream), where + label + ": the kernels")
            && cudaOk(cudaMemcpy(out.data(), dout.ptr, qCount * sizeof(__half), cudaMemcpyDeviceToHost),
                where + "copy O back");
    };
    std::vector<__half> out, cloneOut;
    ok = enqueue(runtime, out, "attached plugin");
    std::unique_ptr<IPluginV3> cloned(attached->clone());
    attached.reset(); // the clone must stand alone
    auto* clonedRuntime = capability<IPluginV3OneRuntime>(cloned.get(), PluginCapabilityType::kRUNTIME);
    ok = check(clonedRuntime != nullptr, where + "clone() gives a runtime plugin")
        && check(clonedRuntime->onShapeChange(desc, 3, desc + 3, 1) == 0, where + "clone: onShapeChange") && ok
        && enqueue(clonedRuntime, cloneOut, "clone");
    cudaStreamDestroy(stream);
    if (!ok)
        return true;

    std::vector<double> const ref = reference(c, q, k, v);
    double maxAbs = 0, maxRef = 0;
    size_t nans = 0;
    for (size_t i = 0; i < qCount; ++i)
    {
        double const value = __half2float(out[i]);
        nans += std::isnan(value) ? 1 : 0;
        maxAbs = std::max(maxAbs, std::fabs(value - ref[i]));
        maxRef = std::max(maxRef, std::fabs(ref[i]));
    }
    double const relative = maxAbs / maxRef;
    bool const sameAsClone = std::memcmp(out.data(), cloneOut.data(), qCount * sizeof(__half)) == 0;
    std::printf("%-20s B=%lld Nq=%lld Nk=%lld %dx%d workspace %lld B: max abs err %.3e, rel %.3e (tolerance %.0e)%s\n",
        c.name, static_cast<long long>(c.batch), static_cast<long long>(c.q_len), static_cast<long long>(c.kv_len),
        c.heads, kHeadDim, static_cast<long long>(workspaceBytes), maxAbs, relative, kRelativeTolerance,
        sameAsClone ? ", clone bit-identical" : "");
    check(nans == 0, where + std::to_string(nans) + " output elements left unwritten (NaN)");
    check(relative <= kRelativeTolerance, where + "error beyond the fp16 tolerance");
    check(sameAsClone, where + "the clone's output differs from the attached plugin's");

    if (dumpDir != nullptr)
    {
        std::string const base = std::string(dumpDir) + "/" + c.name;
        writeFile(base + ".q.f16", q.data(), qCount * sizeof(__half));
        writeFile(base + ".k.f16", k.data(), kvCount * sizeof(__half));
        writeFile(base + ".v.f16", v.data(), kvCount * sizeof(__half));
        writeFile(base + ".o.f16", out.data(), qCount * sizeof(__half));
        std::ofstream list(std::string(dumpDir) + "/cases.txt", std::ios::app);
        list << c.name << ' ' << c.batch << ' ' << c.q_len << ' ' << c.kv_len << ' ' << c.heads << ' ' << kHeadDim
             << ' ' << kScale << '\n';
    }
    return true;
}

} // namespace

int main(int argc, char** argv)
{
    char const* library = nullptr;
    char const* dumpDir = nullptr;
    uint64_t seed = std::random_device{}();
    bool usage = false;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        if (arg == "--seed" && i + 1 < argc)
            seed = std::strtoull(argv[++i], nullptr, 10);
        else if (arg == "--dump" && i + 1 < argc)
            dumpDir = argv[++i];
        else if (library == nullptr && arg.rfind("--", 0) != 0)
            library = argv[i];
        else
            usage = true;
    }
    if (library == nullptr || usage)
    {
        std::printf("usage: plugin_enqueue_harness <libiqart_plugins.so> [--seed N] [--dump DIR]\n");
        return 2;
    }
    void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        std::printf("dlopen failed: %s\n", dlerror());
        return 2;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(handle, "setLoggerFinder"));
    if (!check(getCreators != nullptr && setLoggerFinder != nullptr, "getCreators and setLoggerFinder are exported"))
        return 1;
    PrintingLogger logger;
    Finder finder(&logger);
    setLoggerFinder(&finder);

    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    IPluginCreatorV3One* creator = nullptr;
    for (int32_t i = 0; i < count; ++i)
    {
        auto* candidate = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0
            && std::strcmp(candidate->getPluginName(), "FusedCrossAttention") == 0
            && std::strcmp(candidate->getPluginVersion(), "1") == 0
            && std::strcmp(candidate->getPluginNamespace(), "iqart") == 0)
            creator = candidate;
    }
    if (!check(creator != nullptr, "a V3One creator of iqart::FusedCrossAttention version 1"))
        return 1;

    std::printf("plugin enqueue harness: %s, seed %llu\n", library, static_cast<unsigned long long>(seed));
    std::mt19937_64 rng(seed);
    bool device = true;
    for (Case const& c : kCases)
        device = runCase(creator, c, rng, dumpDir) && device;
    if (gFailures != 0)
    {
        std::printf("%d check(s) failed\n", gFailures);
        return 1;
    }
    if (!device)
    {
        std::printf("%s: every host-side call passed for all %zu cases; the enqueues need a GPU\n", kNoDevice,
            sizeof(kCases) / sizeof(kCases[0]));
        return 3;
    }
    std::printf("plugin enqueue harness: all %zu cases within %.0e of float64, clones bit-identical\n",
        sizeof(kCases) / sizeof(kCases[0]), kRelativeTolerance);
    return 0;
}
