// One runtime's session over an artifact: runs packed uint8 NHWC batches through the graph and
// returns both its outputs. The Scorer does the rest (checks, resize, batching) once for every runtime.
#pragma once

#include "iqart/scorer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace iqart
{

// A batch's outputs: `n` scores and n x K attributes, row by row (K = spec.attribute_names.size()).
struct Outputs
{
    std::vector<float> scores;
    std::vector<float> attributes;
};

class Engine
{
public:
    virtual ~Engine() = default;
    // Runs `n` images of height x width (and their references for FR models; else nullptr). Both
    // outputs always: the graph computes the attributes on the way to the score, and a TensorRT plan
    // runs only with every output bound.
    virtual Outputs run(int n, int height, int width, uint8_t const* images, uint8_t const* references) = 0;
    virtual std::string describe() const = 0;
};

std::unique_ptr<Engine> make_openvino_engine(Spec const& spec, ScorerOptions const& options);
std::unique_ptr<Engine> make_tensorrt_engine(Spec const& spec, ScorerOptions const& options);

// Error unless `graph` (a file name in the artifact) exists and has the sha256 spec.json records.
void check_graph(Spec const& spec, std::string const& graph);

} // namespace iqart
