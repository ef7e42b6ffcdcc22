// Loads libiqart_plugins.so the way TensorRT does (dlopen, setLoggerFinder, getCreators) and
// drives the plugin's host-side methods: fields, formats, types, workspace, shape checks,
// serialisation and cloning. Needs TensorRT headers only: no GPU, no TensorRT runtime.
// Usage: test_plugin_host <path to libiqart_plugins.so>; exits non-zero on failure.
#include "NvInferRuntime.h"
#include "plugin_core.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

int gFailures = 0;

void check(bool condition, char const* what)
{
    if (!condition)
    {
        ++gFailures;
        std::printf("FAIL: %s\n", what);
    }
}

class CountingLogger : public ILogger
{
public:
    int errors = 0;
    void log(Severity severity, char const* message) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            ++errors;
            std::printf("  (plugin logged: %s)\n", message);
        }
    }
};

class Finder : public ILoggerFinder
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

DynamicPluginTensorDesc dynamicDesc(DataType type, Dims max)
{
    DynamicPluginTensorDesc desc{};
    desc.desc.type = type;
    desc.desc.format = TensorFormat::kLINEAR;
    desc.desc.dims = max;
    desc.min = max;
    desc.opt = max;
    desc.max = max;
    return desc;
}

IPluginV3* create(IPluginCreatorV3One* creator, std::vector<PluginField> const& fields, TensorRTPhase phase)
{
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    return creator->createPlugin("attention", &fc, phase);
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::printf("usage: %s <libiqart_plugins.so>\n", argv[0]);
        return 2;
    }
    void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr)
    {
        std::printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto get_creators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
    auto set_logger_finder = reinterpret_cast<SetLoggerFinder>(dlsym(library, "setLoggerFinder"));
    check(get_creators != nullptr && set_logger_finder != nullptr, "getCreators and setLoggerFinder are exported");
    if (get_creators == nullptr || set_logger_finder == nullptr)
        return 1;
    CountingLogger logger;
    Finder finder(&logger);
    set_logger_finder(&finder);

    int32_t count = 0;
    IPluginCreatorInterface* const* creators = get_creators(count);
    check(count == 1, "one creator");
    check(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is V3One");
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    check(std::strcmp(creator->getPluginName(), "FusedCrossAttention") == 0, "creator name");
    check(std::strcmp(creator->getPluginVersion(), "1") == 0, "creator version");
    check(std::strcmp(creator->getPluginNamespace(), "iqart") == 0, "creator namespace");
    PluginFieldCollection const* names = creator->getFieldNames();
    check(names->nbFields == 2 && std::strcmp(names->fields[0].name, "num_heads") == 0
            && names->fields[0].type == PluginFieldType::kINT32 && std::strcmp(names->fields[1].name, "scale") == 0
            && names->fields[1].type == PluginFieldType::kFLOAT32,
        "field names and types");

    int32_t const heads = 32;
    float const scale = 0.125f;
    int const errors_before = logger.errors;
    check(create(creator, {{"scale", &scale, PluginFieldType::kFLOAT32, 1}}, TensorRTPhase::kBUILD) == nullptr,
        "missing num_heads is refused");
    check(logger.errors > errors_before, "refusal is reported through the logger finder");

    std::unique_ptr<IPluginV3> plugin(create(creator,
        {{"num_heads", &heads, PluginFieldType::kINT32, 1}, {"scale", &scale, PluginFieldType::kFLOAT32, 1}},
        TensorRTPhase::kBUILD));
    check(plugin != nullptr, "createPlugin (build phase)");
    if (!plugin)
        return 1;
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(core && build && runtime, "core, build and runtime capabilities");
    check(std::strcmp(core->getPluginName(), "FusedCrossAttention") == 0
            && std::strcmp(core->getPluginNamespace(), "iqart") == 0,
        "plugin name and namespace");
    check(build->getNbOutputs() == 1, "one output");

    Dims const q = dims3(4, 1, 2048);
    Dims const kv = dims3(4, 12000, 2048);
    DynamicPluginTensorDesc io[4] = {dynamicDesc(DataType::kHALF, q), dynamicDesc(DataType::kHALF, kv),
        dynamicDesc(DataType::kHALF, kv), dynamicDesc(DataType::kHALF, q)};
    bool all_half = true;
    for (int32_t pos = 0; pos < 4; ++pos)
        all_half = all_half && build->supportsFormatCombination(pos, io, 3, 1);
    check(all_half, "fp16 linear is supported");
    io[1].desc.type = DataType::kFLOAT;
    check(!build->supportsFormatCombination(1, io, 3, 1), "mixed types are refused");
    io[1].desc.type = DataType::kHALF;
    io[0].desc.type = DataType::kINT8;
    check(!build->supportsFormatCombination(0, io, 3, 1), "int8 is refused");
    io[0].desc.type = DataType::kFLOAT;
    io[0].desc.format = TensorFormat::kCHW32;
    check(!build->supportsFormatCombination(0, io, 3, 1), "non-linear formats are refused");
    io[0].desc.format = TensorFormat::kLINEAR;
    check(build->supportsFormatCombination(0, io, 3, 1), "fp32 linear is supported");
    io[0].desc.type = DataType::kHALF;

    DataType out_type = DataType::kINT8;
    DataType const halves[3] = {DataType::kHALF, DataType::kHALF, DataType::kHALF};
    check(build->getOutputDataTypes(&out_type, 1, halves, 3) == 0 && out_type == DataType::kHALF, "output type = input type");
    DataType const mixed[3] = {DataType::kHALF, DataType::kFLOAT, DataType::kHALF};
    check(build->getOutputDataTypes(&out_type, 1, mixed, 3) != 0, "mixed input types are refused");

    iqart::AttentionShape largest;
    largest.batch = 4;
    largest.q_len = 1;
    largest.kv_len = 12000;
    largest.num_heads = 32;
    largest.head_dim = 64;
    size_t const workspace = build->getWorkspaceSize(io, 3, io + 3, 1);
    check(workspace == iqart::workspaceUpperBound(largest) && workspace > 0, "workspace is the profile bound");

    check(build->configurePlugin(io, 3, io + 3, 1) == 0, "configurePlugin accepts the profile");
    DynamicPluginTensorDesc bad[4] = {io[0], dynamicDesc(DataType::kHALF, dims3(4, 10, 2047)), io[2], io[3]};
    check(build->configurePlugin(bad, 3, bad + 3, 1) != 0, "configurePlugin refuses a width of 2047");

    PluginTensorDesc shapes[4] = {io[0].desc, io[1].desc, io[2].desc, io[3].desc};
    shapes[1].dims = dims3(4, 769, 2048);
    shapes[2].dims = dims3(4, 769, 2048);
    check(runtime->onShapeChange(shapes, 3, shapes + 3, 1) == 0, "onShapeChange accepts matching shapes");
    shapes[2].dims = dims3(4, 770, 2048);
    check(runtime->onShapeChange(shapes, 3, shapes + 3, 1) != 0, "onShapeChange refuses K/V length mismatch");

    PluginFieldCollection const* serial = runtime->getFieldsToSerialize();
    check(serial->nbFields == 2 && *static_cast<int32_t const*>(serial->fields[0].data) == 32
            && *static_cast<float const*>(serial->fields[1].data) == 0.125f,
        "fields to serialize");
    std::unique_ptr<IPluginV3> restored(
        create(creator, std::vector<PluginField>(serial->fields, serial->fields + serial->nbFields), TensorRTPhase::kRUNTIME));
    check(restored != nullptr, "createPlugin (runtime phase) from serialized fields");

    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    plugin.reset(); // the clone must not point into the original
    auto* cloned_runtime = static_cast<IPluginV3OneRuntime*>(cloned->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* cloned_serial = cloned_runtime->getFieldsToSerialize();
    check(*static_cast<int32_t const*>(cloned_serial->fields[0].data) == 32, "clone keeps num_heads");
    std::unique_ptr<IPluginV3> attached(cloned_runtime->attachToContext(nullptr));
    check(attached != nullptr, "attachToContext returns a copy");

    if (gFailures != 0)
    {
        std::printf("%d check(s) failed\n", gFailures);
        return 1;
    }
    std::printf("plugin host: all checks passed\n");
    return 0;
}
