// The plan records of an artifact's plans/ directory (X.json beside each X.plan), as the Python
// plan cache writes them (iqart.engine.backends.plan_cache), and the rule that says which plan fits.
#pragma once

#include "iqart/spec.h"

#include <array>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace iqart
{

using Range = std::array<int, 3>; // min, opt, max

struct PlanRecord
{
    std::string record_path;
    std::string plan_path;
    std::string graph; // model.trt.onnx (plugin) or model.trt-native.onnx
    std::string graph_sha256;
    std::string gpu;      // the CUDA device name
    std::string sm;       // compute capability, "9.0"
    std::string tensorrt; // e.g. "11.1.0.106"
    std::string plugin;   // "none", or the key of the plugin build it was built with
    std::string library;  // "tensorrt" (TensorRT 11) or "tensorrt-rtx" (TensorRT for RTX, not run here)
    std::string plan_sha256;
    Range batch{};
    std::optional<Range> side; // image sides, for native-resolution models

    bool accepts_image(int height, int width) const;
    bool accepts_batch(int n) const { return batch[0] <= n && n <= batch[2]; }
};

// What a plan must have been built for to run here.
struct PlanEnvironment
{
    std::string gpu;
    std::string sm;
    std::string tensorrt;          // full version, "M.m.p.b"
    std::set<std::string> plugins; // keys of the plugin library loaded ("none" always included)
};

// Every readable record in `directory` (sorted); unreadable ones are returned in `unreadable` with the reason.
std::vector<PlanRecord> read_plan_records(std::string const& directory, std::vector<std::string>& unreadable);

// Why `record` cannot run here for `spec`'s graphs, or "" when it can.
std::string plan_mismatch(PlanRecord const& record, PlanEnvironment const& environment, Spec const& spec);

} // namespace iqart
