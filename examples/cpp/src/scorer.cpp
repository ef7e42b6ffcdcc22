// iqart::Scorer: the checks, the resize policy and the batching, shared by every runtime.
#include "iqart/scorer.h"

#include "engine.h"
#include "files.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

namespace iqart
{

namespace
{

std::string dims(int width, int height)
{
    return std::to_string(width) + "x" + std::to_string(height);
}

std::size_t row_bytes(ImageView const& view)
{
    return view.stride != 0 ? view.stride : static_cast<std::size_t>(view.width) * 3;
}

void check_view(ImageView const& view, std::string const& what)
{
    if (view.data == nullptr)
        throw Error(what + ": no pixel data (null pointer)");
    if (view.width < kMinSide || view.height < kMinSide)
        throw Error(what + ": too small: " + dims(view.width, view.height) + "; each side must be at least "
            + std::to_string(kMinSide) + " pixels");
    if (row_bytes(view) < static_cast<std::size_t>(view.width) * 3)
        throw Error(what + ": row stride " + std::to_string(view.stride) + " is less than width * 3");
}

// The view's pixels at the policy's size, appended to `batch` as packed rows.
void append_resized(std::vector<uint8_t>& batch, ImageView const& view, Size const& size)
{
    std::size_t const packed = static_cast<std::size_t>(view.width) * 3;
    if (size.width == view.width && size.height == view.height)
    {
        for (int y = 0; y < view.height; ++y)
        {
            uint8_t const* row = view.data + static_cast<std::size_t>(y) * row_bytes(view);
            batch.insert(batch.end(), row, row + packed);
        }
        return;
    }
    std::vector<uint8_t> const resized
        = resize_bicubic(view.data, view.width, view.height, row_bytes(view), size.width, size.height);
    batch.insert(batch.end(), resized.begin(), resized.end());
}

} // namespace

Image::Image(int width_, int height_, std::vector<uint8_t> rgb_) : width(width_), height(height_), rgb(std::move(rgb_))
{
    if (width <= 0 || height <= 0)
        throw Error("image size " + dims(width, height) + " is not positive");
    std::size_t const expected = static_cast<std::size_t>(width) * height * 3;
    if (rgb.size() != expected)
        throw Error("a " + dims(width, height) + " RGB image holds " + std::to_string(expected) + " bytes, not "
            + std::to_string(rgb.size()));
}

void check_graph(Spec const& spec, std::string const& graph)
{
    std::string const path = join_path(spec.directory, graph);
    auto const recorded = spec.sha256.find(graph);
    if (recorded == spec.sha256.end())
        throw Error(join_path(spec.directory, "spec.json") + ": records no sha256 for " + graph);
    if (!is_regular_file(path))
        throw Error(path + ": missing from the artifact (export it again with `iqart export`)");
    if (sha256_file(path) != recorded->second)
        throw Error(path + ": does not match the sha256 in spec.json (truncated or damaged); export it again");
}

Scorer::Scorer(std::string const& artifact_dir, Runtime runtime, ScorerOptions const& options)
    : spec_(read_spec(artifact_dir)), options_(options)
{
    if (options_.max_batch < 1)
        throw Error("max_batch must be at least 1, not " + std::to_string(options_.max_batch));
    engine_ = runtime == Runtime::OpenVINO ? make_openvino_engine(spec_, options_)
                                           : make_tensorrt_engine(spec_, options_);
}

Scorer::~Scorer() = default;
Scorer::Scorer(Scorer&&) noexcept = default;
Scorer& Scorer::operator=(Scorer&&) noexcept = default;

std::string Scorer::describe() const
{
    return spec_.name + " on " + engine_->describe();
}

std::vector<float> Scorer::score(std::vector<ImageView> const& images, std::vector<ImageView> const& references)
{
    return run(images, references, nullptr);
}

std::vector<Scored> Scorer::explain(std::vector<ImageView> const& images, std::vector<ImageView> const& references)
{
    std::vector<float> attributes;
    std::vector<float> const scores = run(images, references, &attributes);
    std::size_t const k = spec_.attribute_names.size();
    std::vector<Scored> out(scores.size());
    for (std::size_t i = 0; i < scores.size(); ++i)
    {
        out[i].score = scores[i];
        out[i].attributes.assign(attributes.begin() + i * k, attributes.begin() + (i + 1) * k);
    }
    return out;
}

Scored Scorer::explain(ImageView const& image)
{
    return explain(std::vector<ImageView>{image}).front();
}

Scored Scorer::explain(ImageView const& image, ImageView const& reference)
{
    return explain(std::vector<ImageView>{image}, std::vector<ImageView>{reference}).front();
}

std::vector<float> Scorer::run(std::vector<ImageView> const& images, std::vector<ImageView> const& references,
    std::vector<float>* attributes)
{
    bool const fr = spec_.full_reference();
    if (fr && references.size() != images.size())
        throw Error(spec_.name + " is a full-reference model: it needs one reference per image ("
            + std::to_string(images.size()) + " images, " + std::to_string(references.size()) + " references)");
    if (!fr && !references.empty())
        throw Error(spec_.name + " is a no-reference model: references do not apply");

    // Check everything first, so a bad image costs no inference; then group by the size the policy gives.
    std::vector<std::pair<int, int>> order; // (height, width) in order of first appearance
    std::map<std::pair<int, int>, std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < images.size(); ++i)
    {
        std::string const what = "image " + std::to_string(i);
        check_view(images[i], what);
        if (fr)
        {
            check_view(references[i], "reference " + std::to_string(i));
            if (references[i].width != images[i].width || references[i].height != images[i].height)
                throw Error(what + ": image " + dims(images[i].width, images[i].height) + " and reference "
                    + dims(references[i].width, references[i].height) + " differ in size");
        }
        Size const size = resize_target(images[i].width, images[i].height, spec_.resize);
        std::pair<int, int> const key{size.height, size.width};
        if (groups.find(key) == groups.end())
            order.push_back(key);
        groups[key].push_back(i);
    }

    std::size_t const k = spec_.attribute_names.size();
    std::vector<float> scores(images.size());
    if (attributes != nullptr)
        attributes->assign(images.size() * k, 0.0f);
    for (auto const& key : order)
    {
        std::vector<std::size_t> const& members = groups[key];
        Size const size{key.second, key.first};
        for (std::size_t start = 0; start < members.size(); start += static_cast<std::size_t>(options_.max_batch))
        {
            std::size_t const n = std::min(members.size() - start, static_cast<std::size_t>(options_.max_batch));
            std::vector<uint8_t> batch, reference_batch;
            batch.reserve(n * size.width * size.height * 3);
            for (std::size_t j = 0; j < n; ++j)
            {
                append_resized(batch, images[members[start + j]], size);
                if (fr)
                    append_resized(reference_batch, references[members[start + j]], size);
            }
            Outputs const got = engine_->run(static_cast<int>(n), size.height, size.width, batch.data(),
                fr ? reference_batch.data() : nullptr);
            if (got.scores.size() != n || got.attributes.size() != n * k)
                throw Error(engine_->describe() + ": returned " + std::to_string(got.scores.size()) + " scores and "
                    + std::to_string(got.attributes.size()) + " attribute values for " + std::to_string(n)
                    + " images of " + std::to_string(k) + " attributes");
            for (std::size_t j = 0; j < n; ++j)
            {
                std::size_t const index = members[start + j];
                scores[index] = got.scores[j];
                if (attributes != nullptr)
                    std::copy(got.attributes.begin() + j * k, got.attributes.begin() + (j + 1) * k,
                        attributes->begin() + index * k);
            }
        }
    }
    return scores;
}

float Scorer::score(ImageView const& image)
{
    return score(std::vector<ImageView>{image}).front();
}

float Scorer::score(ImageView const& image, ImageView const& reference)
{
    return score(std::vector<ImageView>{image}, std::vector<ImageView>{reference}).front();
}

#ifndef IQART_WITH_TENSORRT
std::unique_ptr<Engine> make_tensorrt_engine(Spec const& spec, ScorerOptions const&)
{
    throw Error(spec.directory + ": this build of iqart::scorer has no TensorRT runtime (configure it where "
        "TensorRT's headers and libnvinfer are found: -DTRT_ROOT=<TensorRT root>)");
}

bool has_tensorrt()
{
    return false;
}
#endif

} // namespace iqart
