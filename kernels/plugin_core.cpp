#include "plugin_core.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace iqart
{
namespace
{

int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

size_t alignUp(size_t bytes, size_t alignment)
{
    return (bytes + alignment - 1) / alignment * alignment;
}

std::string describe(std::vector<int64_t> const& dims)
{
    std::ostringstream out;
    out << '[';
    for (size_t i = 0; i < dims.size(); ++i)
    {
        out << (i ? ", " : "") << dims[i];
    }
    out << ']';
    return out.str();
}

void require(bool condition, std::string const& message)
{
    if (!condition)
    {
        throw std::invalid_argument("FusedCrossAttention: " + message);
    }
}

void checkRank3(std::vector<int64_t> const& dims, char const* name)
{
    require(dims.size() == 3, std::string(name) + " must be 3-D (B, N, H*D), got " + describe(dims));
    for (int64_t d : dims)
    {
        require(d >= 0, std::string(name) + " has a negative dimension: " + describe(dims));
    }
}

constexpr uint32_t kParamsMagic = 0x41585149; // "IQXA" read little-endian
constexpr uint32_t kParamsVersion = 1;
constexpr size_t kParamsBytes = 16;

void putU32(std::vector<uint8_t>& out, uint32_t value)
{
    for (int i = 0; i < 4; ++i)
    {
        out.push_back(static_cast<uint8_t>(value >> (8 * i)));
    }
}

uint32_t getU32(uint8_t const* data)
{
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i)
    {
        value |= static_cast<uint32_t>(data[i]) << (8 * i);
    }
    return value;
}

int64_t readInteger(RawField const& field)
{
    require(field.data != nullptr && field.length == 1, "field '" + field.name + "' must hold one integer");
    if (field.type == FieldType::kInt32)
    {
        return *static_cast<int32_t const*>(field.data);
    }
    require(field.type == FieldType::kInt64, "field '" + field.name + "' must be int32");
    return *static_cast<int64_t const*>(field.data);
}

double readFloat(RawField const& field)
{
    require(field.data != nullptr && field.length == 1, "field '" + field.name + "' must hold one float");
    if (field.type == FieldType::kFloat32)
    {
        return *static_cast<float const*>(field.data);
    }
    require(field.type == FieldType::kFloat64, "field '" + field.name + "' must be float32");
    return *static_cast<double const*>(field.data);
}

} // namespace

bool isSupportedHeadDim(int64_t head_dim)
{
    return head_dim == 32 || head_dim == 64 || head_dim == 128;
}

AttentionShape attentionShape(std::vector<int64_t> const& q, std::vector<int64_t> const& k,
    std::vector<int64_t> const& v, int64_t num_heads)
{
    checkRank3(q, "Q");
    checkRank3(k, "K");
    checkRank3(v, "V");
    require(k == v, "K " + describe(k) + " and V " + describe(v) + " must have the same shape");
    require(q[0] == k[0], "Q " + describe(q) + " and K " + describe(k) + " differ in batch size");
    require(q[2] == k[2], "Q " + describe(q) + " and K " + describe(k) + " differ in width H*D");
    require(num_heads > 0 && num_heads <= std::numeric_limits<int32_t>::max(),
        "num_heads must be a positive int32, got " + std::to_string(num_heads));
    require(q[2] % num_heads == 0,
        "width " + std::to_string(q[2]) + " is not divisible by num_heads=" + std::to_string(num_heads));
    int64_t const head_dim = q[2] / num_heads;
    require(isSupportedHeadDim(head_dim), "head size " + std::to_string(head_dim) + " is not one of 32, 64, 128");
    require(k[1] > 0 || q[0] * q[1] == 0, "K and V need at least one key");

    AttentionShape shape;
    shape.batch = q[0];
    shape.q_len = q[1];
    shape.kv_len = k[1];
    shape.num_heads = static_cast<int32_t>(num_heads);
    shape.head_dim = static_cast<int32_t>(head_dim);
    return shape;
}

std::vector<int64_t> outputShape(std::vector<int64_t> const& q, std::vector<int64_t> const& k,
    std::vector<int64_t> const& v, int64_t num_heads)
{
    attentionShape(q, k, v, num_heads);
    return q;
}

void validateParams(AttentionParams const& params)
{
    require(params.num_heads > 0, "num_heads must be positive, got " + std::to_string(params.num_heads));
    require(std::isfinite(params.scale) && params.scale >= 0.0f,
        "scale must be finite and >= 0 (0 = 1/sqrt(head size)), got " + std::to_string(params.scale));
}

float resolveScale(AttentionParams const& params, int32_t head_dim)
{
    return params.scale > 0.0f ? params.scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

AttentionParams parseFields(std::vector<RawField> const& fields)
{
    AttentionParams params;
    bool seen_heads = false;
    bool seen_scale = false;
    for (RawField const& field : fields)
    {
        if (field.name == "num_heads")
        {
            require(!seen_heads, "field 'num_heads' given twice");
            int64_t const heads = readInteger(field);
            require(heads > 0 && heads <= std::numeric_limits<int32_t>::max(),
                "num_heads must be a positive int32, got " + std::to_string(heads));
            params.num_heads = static_cast<int32_t>(heads);
            seen_heads = true;
        }
        else if (field.name == "scale")
        {
            require(!seen_scale, "field 'scale' given twice");
            params.scale = static_cast<float>(readFloat(field));
            seen_scale = true;
        }
        else
        {
            require(false, "unknown field '" + field.name + "' (expected num_heads, scale)");
        }
    }
    require(seen_heads, "required field 'num_heads' is missing");
    validateParams(params);
    return params;
}

std::vector<uint8_t> serializeParams(AttentionParams const& params)
{
    validateParams(params);
    uint32_t scale_bits = 0;
    std::memcpy(&scale_bits, &params.scale, sizeof(scale_bits));
    std::vector<uint8_t> out;
    out.reserve(kParamsBytes);
    putU32(out, kParamsMagic);
    putU32(out, kParamsVersion);
    putU32(out, static_cast<uint32_t>(params.num_heads));
    putU32(out, scale_bits);
    return out;
}

AttentionParams deserializeParams(uint8_t const* data, size_t size)
{
    require(data != nullptr && size == kParamsBytes,
        "serialized attributes must be " + std::to_string(kParamsBytes) + " bytes, got " + std::to_string(size));
    require(getU32(data) == kParamsMagic, "serialized attributes have a wrong magic number");
    require(getU32(data + 4) == kParamsVersion,
        "serialized attributes have unsupported version " + std::to_string(getU32(data + 4)));
    AttentionParams params;
    params.num_heads = static_cast<int32_t>(getU32(data + 8));
    uint32_t const scale_bits = getU32(data + 12);
    std::memcpy(&params.scale, &scale_bits, sizeof(scale_bits));
    validateParams(params);
    return params;
}

WorkspaceLayout workspaceLayout(int64_t partial_rows, int32_t head_dim)
{
    constexpr size_t kAlign = 256;
    size_t const rows = static_cast<size_t>(partial_rows);
    WorkspaceLayout layout;
    layout.max_offset = 0;
    layout.sum_offset = alignUp(rows * sizeof(float), kAlign);
    layout.acc_offset = layout.sum_offset + alignUp(rows * sizeof(float), kAlign);
    layout.bytes = layout.acc_offset + alignUp(rows * static_cast<size_t>(head_dim) * sizeof(float), kAlign);
    return layout;
}

LaunchPlan planLaunch(AttentionShape const& shape)
{
    require(isSupportedHeadDim(shape.head_dim) && shape.num_heads > 0, "unsupported heads/head size in launch plan");
    LaunchPlan plan;
    plan.path = shape.q_len <= kMaxSplitKeysQueries ? AttentionPath::kSplitKeys : AttentionPath::kTiled;
    bool const split_keys = plan.path == AttentionPath::kSplitKeys;
    int64_t const heads = shape.batch * shape.num_heads;
    plan.grid_x = split_keys ? heads : heads * ceilDiv(shape.q_len, kTiledQueriesPerBlock);
    require(plan.grid_x <= std::numeric_limits<int32_t>::max(),
        "too many rows for one launch: " + std::to_string(plan.grid_x) + " blocks");
    // The combine kernel runs one block per output row (grid.x), under the same limit.
    require(shape.rows() <= std::numeric_limits<int32_t>::max(),
        "too many output rows for one combine launch: " + std::to_string(shape.rows()));
    plan.splits = 1;
    plan.keys_per_split = shape.kv_len;
    if (shape.rows() == 0 || shape.kv_len == 0)
    {
        return plan;
    }

    // Split the keys until the launch reaches the target block count, but keep every chunk worth
    // a block.
    int64_t const min_keys = split_keys ? kMinKeysPerSplitKeysChunk : kMinKeysPerTiledChunk;
    int64_t splits = std::min(ceilDiv(kTargetBlocks, plan.grid_x), ceilDiv(shape.kv_len, min_keys));
    splits = std::clamp<int64_t>(splits, 1, kMaxSplits);
    // Round chunks up to the granule; recounting then leaves no empty chunk.
    int64_t const chunk = ceilDiv(ceilDiv(shape.kv_len, splits), kKeyChunkGranule) * kKeyChunkGranule;
    plan.splits = static_cast<int32_t>(ceilDiv(shape.kv_len, chunk));
    plan.keys_per_split = plan.splits == 1 ? shape.kv_len : chunk;
    if (plan.splits > 1)
    {
        plan.workspace = workspaceLayout(shape.rows() * plan.splits, shape.head_dim);
    }
    return plan;
}

size_t workspaceUpperBound(AttentionShape const& max_shape)
{
    // planLaunch picks splits <= ceil(T / blocks) with blocks >= rows / 64 (a block covers at most
    // 64 query rows of one head), so rows x splits <= 64 T + rows; and splits <= ceil(Nk / 64).
    // Both bounds are non-decreasing in rows and Nk, so the max shape's covers every smaller one.
    int64_t const rows = max_shape.rows();
    if (rows == 0 || max_shape.kv_len == 0)
    {
        return 0;
    }
    int64_t const min_keys = std::min(kMinKeysPerSplitKeysChunk, kMinKeysPerTiledChunk);
    int64_t const partial_rows = std::min(
        kTiledQueriesPerBlock * kTargetBlocks + rows, rows * ceilDiv(max_shape.kv_len, min_keys));
    return workspaceLayout(partial_rows, max_shape.head_dim).bytes;
}

} // namespace iqart
