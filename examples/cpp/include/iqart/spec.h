// An artifact's spec.json, as the C++ library needs it (the contract: docs/design.md, "The model artifact").
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace iqart
{

// Every failure of the library: the message says what went wrong and with which file or image.
class Error : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

// How images are sized before scoring: their own size, short side to N (aspect kept), or H x W.
struct ResizePolicy
{
    enum class Kind
    {
        Native,
        ShortSide,
        Fixed
    };
    Kind kind = Kind::Native;
    int short_side = 0; // Kind::ShortSide
    int height = 0;     // Kind::Fixed
    int width = 0;      // Kind::Fixed
};

struct Spec
{
    std::string directory; // the artifact directory spec.json was read from
    std::string name;      // e.g. "qualiclip-tiny"
    std::string task;      // "nr" or "fr"
    std::vector<std::string> input_names; // "image", and "reference" for full-reference models
    ResizePolicy resize;
    double score_min = 0.0;
    double score_max = 1.0;
    bool higher_better = true;
    std::map<std::string, std::string> sha256; // file name -> hex digest ("weights" too, when known)
    // The graphs' second output, attributes (N, K) float32: what column k holds is attribute_names[k]
    // (QualiCLIP: its 7 antonym pairs, whose mean is the score; BPCLIP: its 6 quality dimensions, then
    // its 40 adjective similarities), and attributes_meaning says how they are computed.
    std::vector<std::string> attribute_names;
    std::string attributes_meaning;

    bool full_reference() const { return task == "fr"; }
};

// The spec of the artifact in `artifact_dir`; Error naming spec.json when it is missing or malformed.
Spec read_spec(std::string const& artifact_dir);

// The lowercase hex sha256 of a file's bytes; Error when it cannot be read.
std::string sha256_file(std::string const& path);

} // namespace iqart
