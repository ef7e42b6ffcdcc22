// One runtime's session over an artifact: scores packed uint8 NHWC batches. The Scorer does the
// rest (checks, resize, batching) once for every runtime.
#pragma once

#include "iqart/scorer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace iqart
{

class Engine
{
public:
    virtual ~Engine() = default;
    // Scores `n` images of height x width (and their references for FR models; else nullptr).
    virtual std::vector<float> run(int n, int height, int width, uint8_t const* images, uint8_t const* references) = 0;
    virtual std::string describe() const = 0;
};

std::unique_ptr<Engine> make_openvino_engine(Spec const& spec, ScorerOptions const& options);
std::unique_ptr<Engine> make_tensorrt_engine(Spec const& spec, ScorerOptions const& options);

// Error unless `graph` (a file name in the artifact) exists and has the sha256 spec.json records.
void check_graph(Spec const& spec, std::string const& graph);

} // namespace iqart
