// TensorRT IPluginV3 wrapper of the fused cross-attention kernel: plugin "FusedCrossAttention",
// namespace "iqart", version "1", fields num_heads (int32) and scale (float32, 0 or absent means
// 1/sqrt(head size)). Inputs Q, K, V and output O share one type (fp16 or fp32) and linear
// format; O has Q's shape. Shape rules, fields and the launch plan live in plugin_core.h; this
// file only adapts them to TensorRT. Loaded with IPluginRegistry::loadLibrary (getCreators).
#include "NvInferRuntime.h"

#include "fused_cross_attention.h"
#include "plugin_core.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace iqart
{
namespace
{

constexpr char kPluginName[] = "FusedCrossAttention";
constexpr char kPluginVersion[] = "1";
constexpr char kPluginNamespace[] = "iqart";
constexpr int32_t kNbInputs = 3;

// TensorRT's logger, handed over through setLoggerFinder; stderr until then.
std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder = nullptr;

void logError(char const* where, char const* message) noexcept
{
    try
    {
        // Core messages already start with the plugin name; keep it once.
        std::string const prefix = std::string(kPluginName) + ": ";
        std::string const detail = message;
        std::string const text = std::string(kPluginName) + "::" + where + ": "
            + (detail.rfind(prefix, 0) == 0 ? detail.substr(prefix.size()) : detail);
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        ILogger* const logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(ILogger::Severity::kERROR, text.c_str());
        }
        else
        {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    }
    catch (...)
    {
        std::fprintf(stderr, "%s: %s\n", kPluginName, message);
    }
}

std::vector<int64_t> toVector(Dims const& dims)
{
    return dims.nbDims > 0 ? std::vector<int64_t>(dims.d, dims.d + dims.nbDims) : std::vector<int64_t>{};
}

AttentionShape shapeOf(PluginTensorDesc const* inputs, int32_t num_heads)
{
    return attentionShape(toVector(inputs[0].dims), toVector(inputs[1].dims), toVector(inputs[2].dims), num_heads);
}

// Checks what is known before shapes are: rank 3 and a width that num_heads splits into a
// supported head size. Throws std::invalid_argument like the core.
void checkWidth(int64_t width, int32_t num_heads)
{
    std::vector<int64_t> const probe{1, 1, width};
    attentionShape(probe, probe, probe, num_heads);
}

FieldType fieldTypeOf(PluginFieldType type)
{
    switch (type)
    {
    case PluginFieldType::kINT32: return FieldType::kInt32;
    case PluginFieldType::kINT64: return FieldType::kInt64;
    case PluginFieldType::kFLOAT32: return FieldType::kFloat32;
    case PluginFieldType::kFLOAT64: return FieldType::kFloat64;
    default: return FieldType::kOther;
    }
}

class FusedCrossAttentionPlugin final : public IPluginV3,
                                        public IPluginV3OneCore,
                                        public IPluginV3OneBuild,
                                        public IPluginV3OneRuntime
{
public:
    explicit FusedCrossAttentionPlugin(AttentionParams const& params)
        : mParams(params)
    {
    }

    FusedCrossAttentionPlugin(FusedCrossAttentionPlugin const& other)
        : mParams(other.mParams)
    {
    }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override
    {
        try
        {
            return new FusedCrossAttentionPlugin(*this);
        }
        catch (std::exception const& e)
        {
            logError("clone", e.what());
        }
        return nullptr;
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs)
        {
            return false;
        }
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        if (pos == 0)
        {
            return desc.type == DataType::kHALF || desc.type == DataType::kFLOAT;
        }
        return desc.type == inOut[0].desc.type;
    }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        bool const supported = inputTypes[0] == DataType::kHALF || inputTypes[0] == DataType::kFLOAT;
        if (nbInputs != kNbInputs || nbOutputs != 1 || !supported || inputTypes[1] != inputTypes[0]
            || inputTypes[2] != inputTypes[0])
        {
            logError("getOutputDataTypes", "expects Q, K, V of one type, fp16 or fp32");
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
        int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept override
    {
        try
        {
            if (nbInputs != kNbInputs || nbOutputs != 1)
            {
                throw std::invalid_argument("expects 3 inputs (Q, K, V) and 1 output");
            }
            for (int32_t i = 0; i < kNbInputs; ++i)
            {
                if (inputs[i].nbDims != 3)
                {
                    throw std::invalid_argument("Q, K and V must be 3-D (B, N, H*D)");
                }
            }
            IDimensionExpr const* width = inputs[0].d[2];
            if (width->isConstant())
            {
                checkWidth(width->getConstantValue(), mParams.num_heads);
                for (int32_t i = 1; i < kNbInputs; ++i)
                {
                    IDimensionExpr const* other = inputs[i].d[2];
                    if (other->isConstant() && other->getConstantValue() != width->getConstantValue())
                    {
                        throw std::invalid_argument("Q, K and V must have the same width H*D");
                    }
                }
            }
            outputs[0] = inputs[0];
            return 0;
        }
        catch (std::exception const& e)
        {
            logError("getOutputShapes", e.what());
        }
        return -1;
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/,
        int32_t nbOutputs) noexcept override
    {
        try
        {
            if (nbInputs != kNbInputs || nbOutputs != 1)
            {
                throw std::invalid_argument("expects 3 inputs (Q, K, V) and 1 output");
            }
            for (int32_t i = 0; i < kNbInputs; ++i)
            {
                if (in[i].max.nbDims != 3)
                {
                    throw std::invalid_argument("Q, K and V must be 3-D (B, N, H*D)");
                }
                checkWidth(in[i].max.d[2], mParams.num_heads);
            }
            return 0;
        }
        catch (std::exception const& e)
        {
            logError("configurePlugin", e.what());
        }
        return -1;
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override
    {
        try
        {
            if (nbInputs != kNbInputs)
            {
                throw std::invalid_argument("expects 3 inputs (Q, K, V)");
            }
            Dims const& q = inputs[0].max;
            Dims const& k = inputs[1].max;
            Dims const& v = inputs[2].max;
            if (q.nbDims != 3 || k.nbDims != 3 || v.nbDims != 3)
            {
                throw std::invalid_argument("Q, K and V must be 3-D (B, N, H*D)");
            }
            checkWidth(q.d[2], mParams.num_heads);
            // The profile's largest dimensions bound every runtime shape (workspaceUpperBound),
            // even if the profile lets Q, K and V range differently.
            AttentionShape largest;
            largest.batch = std::max({q.d[0], k.d[0], v.d[0]});
            largest.q_len = q.d[1];
            largest.kv_len = std::max(k.d[1], v.d[1]);
            largest.num_heads = mParams.num_heads;
            largest.head_dim = static_cast<int32_t>(q.d[2] / mParams.num_heads);
            return workspaceUpperBound(largest);
        }
        catch (std::exception const& e)
        {
            logError("getWorkspaceSize", e.what());
        }
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/,
        int32_t nbOutputs) noexcept override
    {
        try
        {
            if (nbInputs != kNbInputs || nbOutputs != 1)
            {
                throw std::invalid_argument("expects 3 inputs (Q, K, V) and 1 output");
            }
            planLaunch(shapeOf(in, mParams.num_heads));
            return 0;
        }
        catch (std::exception const& e)
        {
            logError("onShapeChange", e.what());
        }
        return -1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        try
        {
            AttentionShape const shape = shapeOf(inputDesc, mParams.num_heads);
            ElementType const type = inputDesc[0].type == DataType::kHALF ? ElementType::kFloat16 : ElementType::kFloat32;
            cudaError_t const status = launchFusedCrossAttention(type, inputs[0], inputs[1], inputs[2], outputs[0], shape,
                resolveScale(mParams, shape.head_dim), workspace, fusedCrossAttentionWorkspaceSize(shape), stream);
            if (status == cudaSuccess)
            {
                return 0;
            }
            logError("enqueue", cudaGetErrorString(status));
        }
        catch (std::exception const& e)
        {
            logError("enqueue", e.what());
        }
        return -1;
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        // Rebuilt on each call: the fields point into this object, which may be a fresh clone.
        mSerialFields[0] = PluginField("num_heads", &mParams.num_heads, PluginFieldType::kINT32, 1);
        mSerialFields[1] = PluginField("scale", &mParams.scale, PluginFieldType::kFLOAT32, 1);
        mSerialCollection.nbFields = 2;
        mSerialCollection.fields = mSerialFields;
        return &mSerialCollection;
    }

private:
    AttentionParams mParams;
    PluginField mSerialFields[2];
    PluginFieldCollection mSerialCollection;
};

class FusedCrossAttentionCreator final : public IPluginCreatorV3One
{
public:
    FusedCrossAttentionCreator()
    {
        mFieldNames[0] = PluginField("num_heads", nullptr, PluginFieldType::kINT32, 1);
        mFieldNames[1] = PluginField("scale", nullptr, PluginFieldType::kFLOAT32, 1);
        mFieldCollection.nbFields = 2;
        mFieldCollection.fields = mFieldNames;
    }

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }

    // The same fields arrive from a network definition (build) and from a plan (runtime).
    IPluginV3* createPlugin(char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            std::vector<RawField> fields;
            for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
            {
                PluginField const& field = fc->fields[i];
                fields.push_back({field.name != nullptr ? field.name : "", fieldTypeOf(field.type), field.data, field.length});
            }
            return new FusedCrossAttentionPlugin(parseFields(fields));
        }
        catch (std::exception const& e)
        {
            logError("createPlugin", e.what());
        }
        return nullptr;
    }

private:
    PluginField mFieldNames[2];
    PluginFieldCollection mFieldCollection;
};

} // namespace
} // namespace iqart

// The library is built with hidden visibility; these two entry points are its whole interface.
#define IQART_PLUGIN_EXPORT __attribute__((visibility("default")))

extern "C" IQART_PLUGIN_EXPORT IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static iqart::FusedCrossAttentionCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

extern "C" IQART_PLUGIN_EXPORT void setLoggerFinder(ILoggerFinder* finder)
{
    std::lock_guard<std::mutex> lock(iqart::gLoggerMutex);
    iqart::gLoggerFinder = finder;
}
