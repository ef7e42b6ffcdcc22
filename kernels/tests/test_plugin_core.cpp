// CPU tests of the plugin's plain C++ rules and of the online-softmax merge arithmetic that the
// CUDA kernels run (softmax_merge.h is compiled here as host code). Exits non-zero on failure.
#include "plugin_core.h"
#include "softmax_merge.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace iqart;

namespace
{

int gFailures = 0;

void check(bool condition, std::string const& what)
{
    if (!condition)
    {
        ++gFailures;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

void expectThrows(std::function<void()> const& body, std::string const& what)
{
    try
    {
        body();
    }
    catch (std::invalid_argument const&)
    {
        return;
    }
    check(false, what + " should throw std::invalid_argument");
}

using Dims = std::vector<int64_t>;

void testShapes()
{
    AttentionShape const s = attentionShape({2, 1, 2048}, {2, 769, 2048}, {2, 769, 2048}, 32);
    check(s.batch == 2 && s.q_len == 1 && s.kv_len == 769 && s.num_heads == 32 && s.head_dim == 64, "QualiCLIP shape");
    check(s.rows() == 64 && s.width() == 2048, "rows and width");
    check(outputShape({3, 49, 256}, {3, 144, 256}, {3, 144, 256}, 4) == Dims({3, 49, 256}), "O has Q's shape");
    check(attentionShape({1, 7, 256}, {1, 9, 256}, {1, 9, 256}, 8).head_dim == 32, "head size 32");
    check(attentionShape({1, 7, 512}, {1, 9, 512}, {1, 9, 512}, 4).head_dim == 128, "head size 128");
    check(attentionShape({0, 7, 256}, {0, 0, 256}, {0, 0, 256}, 4).rows() == 0, "empty batch is allowed");

    expectThrows([] { attentionShape({1, 2048}, {1, 5, 2048}, {1, 5, 2048}, 32); }, "2-D Q");
    expectThrows([] { attentionShape({1, 1, 2048}, {1, 5, 2048, 1}, {1, 5, 2048, 1}, 32); }, "4-D K");
    expectThrows([] { attentionShape({2, 1, 2048}, {1, 5, 2048}, {1, 5, 2048}, 32); }, "batch mismatch");
    expectThrows([] { attentionShape({1, 1, 2048}, {1, 5, 1024}, {1, 5, 1024}, 32); }, "width mismatch");
    expectThrows([] { attentionShape({1, 1, 2048}, {1, 5, 2048}, {1, 6, 2048}, 32); }, "K/V length mismatch");
    expectThrows([] { attentionShape({1, 1, 2048}, {1, 5, 2048}, {1, 5, 2048}, 30); }, "width not divisible");
    expectThrows([] { attentionShape({1, 1, 96}, {1, 5, 96}, {1, 5, 96}, 2); }, "head size 48");
    expectThrows([] { attentionShape({1, 1, 2048}, {1, 5, 2048}, {1, 5, 2048}, 0); }, "zero heads");
    expectThrows([] { attentionShape({1, 1, 2048}, {1, 0, 2048}, {1, 0, 2048}, 32); }, "no keys");
    expectThrows([] { attentionShape({1, -1, 2048}, {1, 5, 2048}, {1, 5, 2048}, 32); }, "negative dim");
}

void testFields()
{
    int32_t const heads = 32;
    float const scale = 0.125f;
    AttentionParams p = parseFields({{"num_heads", FieldType::kInt32, &heads, 1}, {"scale", FieldType::kFloat32, &scale, 1}});
    check(p.num_heads == 32 && p.scale == 0.125f, "parse num_heads and scale");
    check(resolveScale(p, 64) == 0.125f, "explicit scale is kept");

    p = parseFields({{"num_heads", FieldType::kInt32, &heads, 1}});
    check(p.scale == 0.0f && std::fabs(resolveScale(p, 64) - 0.125f) < 1e-7f, "missing scale means 1/sqrt(D)");
    check(std::fabs(resolveScale(p, 128) - 1.0f / std::sqrt(128.0f)) < 1e-7f, "default scale for D=128");

    int64_t const heads64 = 4;
    double const scale64 = 0.5;
    p = parseFields({{"scale", FieldType::kFloat64, &scale64, 1}, {"num_heads", FieldType::kInt64, &heads64, 1}});
    check(p.num_heads == 4 && p.scale == 0.5f, "int64/float64 fields are accepted");

    int32_t const pair[2] = {4, 4};
    int32_t const zero = 0;
    float const negative = -1.0f;
    float const nan = std::numeric_limits<float>::quiet_NaN();
    float const inf = std::numeric_limits<float>::infinity();
    expectThrows([] { parseFields({}); }, "missing num_heads");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, &zero, 1}}); }, "num_heads 0");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, pair, 2}}); }, "num_heads of length 2");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kFloat32, &scale, 1}}); }, "num_heads as float");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, nullptr, 1}}); }, "num_heads without data");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, &heads, 1}, {"num_heads", FieldType::kInt32, &heads, 1}}); },
        "duplicate num_heads");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, &heads, 1}, {"scale", FieldType::kFloat32, &negative, 1}}); },
        "negative scale");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, &heads, 1}, {"scale", FieldType::kFloat32, &nan, 1}}); },
        "NaN scale");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, &heads, 1}, {"scale", FieldType::kFloat32, &inf, 1}}); },
        "infinite scale");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, &heads, 1}, {"scale", FieldType::kInt32, &heads, 1}}); },
        "scale as int");
    expectThrows([&] { parseFields({{"num_heads", FieldType::kInt32, &heads, 1}, {"heads", FieldType::kInt32, &heads, 1}}); },
        "unknown field");
}

void testSerialization()
{
    AttentionParams const p{32, 0.125f};
    std::vector<uint8_t> const bytes = serializeParams(p);
    check(bytes.size() == 16, "16 bytes");
    check(bytes[0] == 'I' && bytes[1] == 'Q' && bytes[2] == 'X' && bytes[3] == 'A', "magic IQXA");
    check(bytes[8] == 32 && bytes[9] == 0, "num_heads little-endian");
    AttentionParams const back = deserializeParams(bytes.data(), bytes.size());
    check(back.num_heads == 32 && back.scale == 0.125f, "round trip");
    AttentionParams const defaults = deserializeParams(serializeParams({4, 0.0f}).data(), 16);
    check(defaults.num_heads == 4 && defaults.scale == 0.0f, "round trip of the default scale");

    expectThrows([&] { deserializeParams(bytes.data(), 15); }, "short blob");
    expectThrows([] { deserializeParams(nullptr, 16); }, "null blob");
    std::vector<uint8_t> bad = bytes;
    bad[0] ^= 1;
    expectThrows([&] { deserializeParams(bad.data(), bad.size()); }, "bad magic");
    bad = bytes;
    bad[4] = 2;
    expectThrows([&] { deserializeParams(bad.data(), bad.size()); }, "unknown version");
    bad = bytes;
    bad[8] = 0;
    expectThrows([&] { deserializeParams(bad.data(), bad.size()); }, "zero heads in blob");
    expectThrows([] { serializeParams({0, 1.0f}); }, "serialising invalid params");
}

AttentionShape shapeOf(int64_t b, int64_t nq, int64_t nk, int32_t h, int32_t d = 64)
{
    AttentionShape s;
    s.batch = b;
    s.q_len = nq;
    s.kv_len = nk;
    s.num_heads = h;
    s.head_dim = d;
    return s;
}

// Invariants every plan must satisfy; `where` names the shape in messages.
void checkPlan(AttentionShape const& s, std::string const& where)
{
    LaunchPlan const p = planLaunch(s);
    bool const split_keys = s.q_len <= kMaxSplitKeysQueries;
    check((p.path == AttentionPath::kSplitKeys) == split_keys, where + ": path");
    int64_t const q_tiles = (s.q_len + kTiledQueriesPerBlock - 1) / kTiledQueriesPerBlock;
    check(p.grid_x == (split_keys ? s.batch * s.num_heads : s.batch * s.num_heads * q_tiles), where + ": grid_x");
    check(p.splits == 1 || (p.splits - 1) * p.grid_x < kTargetBlocks, where + ": no more splits than the target needs");
    check(p.splits >= 1 && p.splits <= kMaxSplits, where + ": splits in range");
    check(p.keys_per_split >= 1, where + ": chunk not empty");
    check(int64_t{p.splits} * p.keys_per_split >= s.kv_len, where + ": chunks cover the keys");
    check(int64_t{p.splits - 1} * p.keys_per_split < s.kv_len, where + ": last chunk not empty");
    if (p.splits == 1)
    {
        check(p.workspace.bytes == 0, where + ": no workspace when unsplit");
    }
    else
    {
        check(p.keys_per_split % kKeyChunkGranule == 0, where + ": chunk is a multiple of the granule");
        size_t const partial_rows = static_cast<size_t>(s.rows() * p.splits);
        check(p.workspace.sum_offset >= partial_rows * 4 && p.workspace.acc_offset >= p.workspace.sum_offset + partial_rows * 4
                && p.workspace.bytes >= p.workspace.acc_offset + partial_rows * s.head_dim * 4,
            where + ": workspace sections do not overlap");
        check(p.workspace.sum_offset % 256 == 0 && p.workspace.acc_offset % 256 == 0, where + ": sections aligned");
    }
}

void testPlans()
{
    LaunchPlan p = planLaunch(shapeOf(1, 1, 11700, 32));
    check(p.path == AttentionPath::kSplitKeys && p.grid_x == 32 && p.splits > 8, "QualiCLIP big image is split");
    p = planLaunch(shapeOf(1, 1, 50, 32));
    check(p.splits == 1 && p.workspace.bytes == 0, "QualiCLIP 224px is not split");
    p = planLaunch(shapeOf(32, 1, 11700, 32));
    check(p.splits == 1, "batch 32 fills the GPU unsplit");
    p = planLaunch(shapeOf(2, 3, 5000, 8));
    check(p.path == AttentionPath::kSplitKeys && p.grid_x == 16, "Nq = 3 shares one block per head");
    p = planLaunch(shapeOf(1, 49, 49, 4));
    check(p.path == AttentionPath::kTiled && p.grid_x == 4 && p.splits == 1, "BPCLIP 7x7: one key tile");
    p = planLaunch(shapeOf(1, 400, 400, 4));
    check(p.path == AttentionPath::kTiled && p.grid_x == 4 * 7 && p.splits == 7 && p.keys_per_split == 64,
        "BPCLIP 20x20 at batch 1: keys split into 64-key chunks (fewer than 256 keys no longer block a split)");
    p = planLaunch(shapeOf(2, 400, 400, 4));
    check(p.path == AttentionPath::kTiled && p.grid_x == 2 * 4 * 7, "BPCLIP 20x20 tiles");
    p = planLaunch(shapeOf(32, 400, 400, 4));
    check(p.splits == 1, "BPCLIP 20x20 at batch 32 fills the GPU unsplit");
    check(planLaunch(shapeOf(0, 1, 50, 32)).workspace.bytes == 0, "empty batch");
    expectThrows([] { planLaunch(shapeOf(1, 1, 10, 32, 48)); }, "plan rejects head size 48");
    // 2^27 x 4 queries x 4 heads: 2^29 blocks fit grid.x, 2^31 combine rows do not.
    expectThrows([] { planLaunch(shapeOf(int64_t{1} << 27, 4, 64, 4)); }, "plan rejects more combine rows than grid.x");

    std::vector<int64_t> const batches = {1, 2, 3, 8};
    std::vector<int64_t> const queries = {1, 2, 4, 5, 63, 64, 65, 400};
    std::vector<int64_t> const keys = {1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4097, 11700, 12345, 70000};
    std::vector<int32_t> const heads = {1, 4, 32};
    for (int64_t b : batches)
        for (int64_t nq : queries)
            for (int64_t nk : keys)
                for (int32_t h : heads)
                {
                    AttentionShape const s = shapeOf(b, nq, nk, h);
                    checkPlan(s, "B=" + std::to_string(b) + " Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk)
                            + " H=" + std::to_string(h));
                }

    // The bound reported for a profile's max shape covers every smaller shape.
    for (int32_t h : heads)
        for (int64_t max_nk : {64, 300, 5000, 12000})
            for (int64_t max_b : {1, 2, 8})
                for (int64_t max_nq : {1, 3, 100})
                {
                    size_t const bound = workspaceUpperBound(shapeOf(max_b, max_nq, max_nk, h));
                    for (int64_t b = 1; b <= max_b; ++b)
                        for (int64_t nq = 1; nq <= max_nq; nq += (nq < 8 ? 1 : 13))
                            for (int64_t nk = 1; nk <= max_nk; nk += (nk < 300 ? 7 : 97))
                            {
                                if (planLaunch(shapeOf(b, nq, nk, h)).workspace.bytes > bound)
                                {
                                    check(false,
                                        "bound of max B=" + std::to_string(max_b) + " Nq=" + std::to_string(max_nq)
                                            + " Nk=" + std::to_string(max_nk) + " misses B=" + std::to_string(b)
                                            + " Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk));
                                    return;
                                }
                            }
                }
}

// Exact softmax-weighted sum of values (one output column) in double.
double referenceRow(std::vector<float> const& scores_log2, std::vector<float> const& values)
{
    double max = -INFINITY;
    for (float s : scores_log2)
        max = std::fmax(max, s);
    double sum = 0.0;
    double acc = 0.0;
    for (size_t i = 0; i < scores_log2.size(); ++i)
    {
        double const w = std::exp2(scores_log2[i] - max);
        sum += w;
        acc += w * values[i];
    }
    return acc / sum;
}

// Emulates the kernels on one output value: each chunk of keys is consumed in blocks of `step`
// scores with the padding masked to -inf (OnlineSoftmax), chunks are merged like the combine
// kernel (mergeStats / mergeAccumulators), then normalised.
float emulateRow(std::vector<float> const& scores, std::vector<float> const& values, int64_t chunk, int64_t step,
    int extra_empty_partials)
{
    std::vector<float> maxes;
    std::vector<float> sums;
    std::vector<float> accs;
    for (size_t begin = 0; begin < scores.size(); begin += chunk)
    {
        size_t const end = std::min(scores.size(), static_cast<size_t>(begin + chunk));
        OnlineSoftmax stats = OnlineSoftmax::empty();
        float acc = 0.0f;
        for (size_t base = begin; base < end; base += step)
        {
            float block_max = -INFINITY;
            for (size_t i = base; i < base + step; ++i)
                block_max = std::fmax(block_max, i < end ? scores[i] : -INFINITY);
            acc *= stats.rebase(block_max);
            for (size_t i = base; i < base + step; ++i)
                acc += stats.accept(i < end ? scores[i] : -INFINITY) * (i < end ? values[i] : 0.0f);
        }
        maxes.push_back(stats.max);
        sums.push_back(stats.sum);
        accs.push_back(acc);
    }
    for (int i = 0; i < extra_empty_partials; ++i)
    {
        OnlineSoftmax const empty = OnlineSoftmax::empty();
        maxes.insert(maxes.begin(), empty.max);
        sums.insert(sums.begin(), empty.sum);
        accs.insert(accs.begin(), 0.0f);
    }
    int const n = static_cast<int>(maxes.size());
    OnlineSoftmax const merged = mergeStats(n, maxes.data(), sums.data());
    return normalise(mergeAccumulators(n, maxes.data(), merged.max, accs.data(), 1), merged.sum);
}

void testMergeArithmetic()
{
    check(softmaxWeight(-INFINITY, -INFINITY) == 0.0f, "exp2(-inf - -inf) is guarded");
    OnlineSoftmax s = OnlineSoftmax::empty();
    check(s.rebase(-INFINITY) == 0.0f && s.sum == 0.0f && s.max == -INFINITY, "rebasing an empty row on -inf");
    check(s.accept(-INFINITY) == 0.0f && s.sum == 0.0f, "masked score weighs 0");
    OnlineSoftmax const none = mergeStats(0, nullptr, nullptr);
    check(none.sum == 0.0f && normalise(0.0f, none.sum) == 0.0f, "no partials gives 0, not NaN");

    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    double worst = 0.0;
    for (int64_t nk : {1, 3, 50, 769, 4097, 11700})
    {
        for (float spread : {1.0f, 10.0f, 200.0f}) // 200: exp2 of raw scores would overflow fp32
        {
            std::vector<float> scores(nk);
            std::vector<float> values(nk);
            for (int64_t i = 0; i < nk; ++i)
            {
                scores[i] = spread * normal(rng) + 30.0f;
                values[i] = normal(rng);
            }
            double const ref = referenceRow(scores, values);
            AttentionShape const shape = shapeOf(1, 1, nk, 32);
            int64_t const plan_chunk = planLaunch(shape).keys_per_split;
            for (int64_t chunk : {plan_chunk, int64_t{64}, int64_t{1}, nk})
                for (int64_t step : {int64_t{1}, int64_t{32}, int64_t{64}})
                    for (int empty : {0, 2})
                    {
                        float const got = emulateRow(scores, values, chunk, step, empty);
                        check(std::isfinite(got), "emulated output is finite");
                        double const err = std::fabs(got - ref) / std::fmax(1.0, std::fabs(ref));
                        worst = std::fmax(worst, err);
                    }
        }
    }
    check(worst < 2e-5, "emulated split/merge matches the exact softmax (worst rel err " + std::to_string(worst) + ")");
}

} // namespace

int main()
{
    testShapes();
    testFields();
    testSerialization();
    testPlans();
    testMergeArithmetic();
    if (gFailures != 0)
    {
        std::printf("%d check(s) failed\n", gFailures);
        return 1;
    }
    std::printf("plugin core: all checks passed\n");
    return 0;
}
