// iqart::Scorer: the C++ twin of iqart.Scorer over an exported artifact directory.
//
//   iqart::Scorer scorer("artifacts/qualiclip", iqart::Runtime::OpenVINO);
//   std::vector<float> scores = scorer.score({iqart::ImageView{rgb, width, height}});
//   std::vector<iqart::Scored> why = scorer.explain(views); // each score with its attributes
//
// Images are uint8 RGB held by the caller, any size: the model's resize policy is applied here,
// exactly as the Python engine applies it, and same-sized images are scored together in batches.
#pragma once

#include "iqart/resize.h"
#include "iqart/spec.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace iqart
{

enum class Runtime
{
    OpenVINO, // the CPU, model.onnx in fp32
    TensorRT  // a CUDA GPU, a plan from the artifact's plans/ (built by `iqart build`)
};

// A view of interleaved 8-bit RGB pixels the caller owns: `height` rows of `stride` bytes
// (0: tightly packed, width * 3).
struct ImageView
{
    uint8_t const* data = nullptr;
    int width = 0;
    int height = 0;
    std::size_t stride = 0;
};

// An owned RGB image; the constructor checks that `rgb` holds width * height * 3 bytes.
struct Image
{
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;

    Image() = default;
    Image(int width, int height, std::vector<uint8_t> rgb);
    ImageView view() const { return ImageView{rgb.data(), width, height, static_cast<std::size_t>(width) * 3}; }
};

// One image's score and the attributes the same run of the graph gave: attributes[k] is
// Scorer::attribute_names()[k] (spec.json's outputs, "attributes").
struct Scored
{
    float score = 0.0f;
    std::vector<float> attributes;
};

constexpr int kMinSide = 32; // the ResNet's total stride: smaller images have no last-stage grid

struct ScorerOptions
{
    int max_batch = 8;          // images per inference call, at most
    int threads = 0;            // OpenVINO: inference threads (0: OpenVINO's default)
    int device = 0;             // TensorRT: CUDA device index
    std::string plugin_library; // TensorRT: libiqart_plugins.so for plugin plans (default: $IQART_PLUGIN_LIBRARY)
};

class Engine; // one runtime's session over the artifact (src/engine.h)

class Scorer
{
public:
    // Reads spec.json and checks the graph (or plan) against the sha256 it records; Error if not.
    explicit Scorer(std::string const& artifact_dir, Runtime runtime = Runtime::OpenVINO,
        ScorerOptions const& options = {});
    ~Scorer();
    Scorer(Scorer&&) noexcept;
    Scorer& operator=(Scorer&&) noexcept;

    // One score per image, in input order. Full-reference models need one reference per image,
    // of the image's size (compared before any resize); no-reference models take none.
    std::vector<float> score(std::vector<ImageView> const& images, std::vector<ImageView> const& references = {});
    float score(ImageView const& image);
    float score(ImageView const& image, ImageView const& reference);

    // Each image's score with its attributes, in input order; takes what score() takes. Scores are
    // the ones score() returns: both outputs come from one run of the graph.
    std::vector<Scored> explain(std::vector<ImageView> const& images, std::vector<ImageView> const& references = {});
    Scored explain(ImageView const& image);
    Scored explain(ImageView const& image, ImageView const& reference);

    // What explain() returns per image, in order (QualiCLIP: its 7 antonym pairs, named by the
    // positive prompt, whose mean is the score; BPCLIP: its 6 quality dimensions, then its 40
    // adjective similarities, "adj_..."). spec().attributes_meaning says how they are computed.
    std::vector<std::string> const& attribute_names() const { return spec_.attribute_names; }

    Spec const& spec() const { return spec_; }
    std::string describe() const; // the runtime and what it runs, for logs

private:
    // Scores, and when `attributes` is given, the attributes row by row (images x K), in input order.
    std::vector<float> run(std::vector<ImageView> const& images, std::vector<ImageView> const& references,
        std::vector<float>* attributes);

    Spec spec_;
    ScorerOptions options_;
    std::unique_ptr<Engine> engine_;
};

// Whether this build of the library includes the TensorRT runtime.
bool has_tensorrt();

} // namespace iqart
