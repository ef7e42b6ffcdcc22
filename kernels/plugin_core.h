// Plain C++ rules shared by every host of the fused cross-attention kernel: shape checks, plugin
// fields and their byte form, and the launch plan. No CUDA or TensorRT here, so all of it is
// unit-tested on CPU-only machines (kernels/tests/test_plugin_core.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace iqart
{

// Kernel geometry. The CUDA kernels are written for exactly these numbers; the plan uses them to
// size grids and the workspace, so both sides read them from here.
constexpr int32_t kThreadsPerBlock = 128;
constexpr int64_t kMaxSplitKeysQueries = 4;  // Nq at or below this takes the split-keys path
constexpr int64_t kTiledQueriesPerBlock = 64; // BQ of the tiled path
constexpr int64_t kTiledKeysPerTile = 32;     // BK of the tiled path on fp32 cores (tensor cores: 64; D = 128: 32)
constexpr int64_t kKeyChunkGranule = 64;      // key chunks are multiples of this
constexpr int64_t kMinKeysPerSplitKeysChunk = 128;  // split-keys path: fewer keys are not worth a block
constexpr int64_t kMinKeysPerTiledChunk = 64;       // tiled path: one 64-key tile
// Split keys until the launch has about this many blocks: 4 per SM of a 132-SM H100/H200. A
// constant, not the GPU's SM count, so that a plan depends on the shape alone and a TensorRT build
// and its runtime agree.
constexpr int64_t kTargetBlocks = 528;
constexpr int64_t kMaxSplits = 65535;         // grid.y limit

bool isSupportedHeadDim(int64_t head_dim);

// One attention call: Q (B, Nq, H*D), K and V (B, Nk, H*D), all contiguous.
struct AttentionShape
{
    int64_t batch{};
    int64_t q_len{};
    int64_t kv_len{};
    int32_t num_heads{};
    int32_t head_dim{};

    int64_t width() const { return int64_t{num_heads} * head_dim; }
    int64_t rows() const { return batch * q_len * num_heads; } // output rows of head_dim values
};

// Validates the three input shapes against num_heads and returns the call's shape; throws
// std::invalid_argument with a message naming the offending tensor otherwise.
AttentionShape attentionShape(std::vector<int64_t> const& q, std::vector<int64_t> const& k,
    std::vector<int64_t> const& v, int64_t num_heads);

// O has Q's shape (after the same validation as attentionShape).
std::vector<int64_t> outputShape(std::vector<int64_t> const& q, std::vector<int64_t> const& k,
    std::vector<int64_t> const& v, int64_t num_heads);

// Plugin attributes. scale == 0 means "1/sqrt(head_dim)", resolved once the head size is known.
struct AttentionParams
{
    int32_t num_heads{};
    float scale{};
};

float resolveScale(AttentionParams const& params, int32_t head_dim);

// A plugin field as TensorRT hands it over, without TensorRT's types.
enum class FieldType : int32_t
{
    kInt32,
    kInt64,
    kFloat32,
    kFloat64,
    kOther
};

struct RawField
{
    std::string name;
    FieldType type{FieldType::kOther};
    void const* data{};
    int32_t length{};
};

// num_heads (int32, required, > 0) and scale (float32, optional, finite, >= 0; 0 = default).
// Unknown or malformed fields throw std::invalid_argument.
AttentionParams parseFields(std::vector<RawField> const& fields);
void validateParams(AttentionParams const& params);

// Stable little-endian byte form (magic, version, num_heads, scale) for hosts that persist the
// attributes as one blob; TensorRT itself stores them as named fields.
std::vector<uint8_t> serializeParams(AttentionParams const& params);
AttentionParams deserializeParams(uint8_t const* data, size_t size);

enum class AttentionPath : int32_t
{
    kSplitKeys, // few queries, many keys: blocks own ((batch, head), key chunk); flash-decoding style
    kTiled      // many queries: blocks own (batch, head, 64-query tile, key chunk); flash style
};

// Where the per-split partial results live inside the workspace (byte offsets).
struct WorkspaceLayout
{
    size_t max_offset{};
    size_t sum_offset{};
    size_t acc_offset{};
    size_t bytes{};
};

struct LaunchPlan
{
    AttentionPath path{};
    int64_t grid_x{};         // blocks per key chunk
    int32_t splits{};         // key chunks (grid.y); 1 means no workspace and no combine kernel
    int64_t keys_per_split{}; // keys per chunk; the last chunk may be shorter, none is empty
    WorkspaceLayout workspace{};
};

// Deterministic in the shape alone (not the GPU), so a TensorRT build and its runtime agree.
LaunchPlan planLaunch(AttentionShape const& shape);

// Workspace layout for `partial_rows` (row, split) pairs of head_dim values.
WorkspaceLayout workspaceLayout(int64_t partial_rows, int32_t head_dim);

// Bytes that cover planLaunch(s).workspace.bytes for every shape s no larger than max_shape in
// batch, q_len and kv_len (what TensorRT's getWorkspaceSize must report for a profile).
size_t workspaceUpperBound(AttentionShape const& max_shape);

} // namespace iqart
