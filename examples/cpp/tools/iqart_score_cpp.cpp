// iqart_score_cpp: scores JPEG and PNG files with an exported artifact through iqart::Scorer.
//
//   iqart_score_cpp [options] ARTIFACT IMAGE...            IMAGE: files or folders (searched recursively)
//     --ref DIR             full-reference models: the reference of IMAGE is DIR/<its path under its folder>
//     --runtime NAME        openvino (default) or tensorrt
//     --plugin LIB          tensorrt: libiqart_plugins.so, for plans of the plugin graph
//     --batch N             images per inference call (default 8)
//     --threads N           openvino: inference threads (default: OpenVINO's)
//     --explain             also print each image's attributes, one "name=value" column each
//
// Prints "path<TAB>score" per image, in order (with --explain, then "<TAB>name=value" for every
// attribute, in spec.json's order); a file that cannot be scored is reported on stderr with its
// reason, the others are still scored, and the exit status is then 1.
#include "image_files.h"

#include "iqart/scorer.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace
{

namespace fs = std::filesystem;

constexpr std::size_t kImagesPerRound = 64; // files decoded and held at once

struct Job
{
    std::string path;
    std::string reference; // empty for no-reference models
};

bool is_image_name(fs::path const& path)
{
    std::string suffix = path.extension().string();
    std::transform(suffix.begin(), suffix.end(), suffix.begin(), [](unsigned char c) { return std::tolower(c); });
    return suffix == ".jpg" || suffix == ".jpeg" || suffix == ".png";
}

// (file, path relative to the argument's folder) for every image the argument names.
std::vector<std::pair<std::string, std::string>> expand(std::string const& argument)
{
    std::vector<std::pair<std::string, std::string>> found;
    fs::path const root(argument);
    if (!fs::is_directory(root))
    {
        found.emplace_back(argument, root.filename().string());
        return found;
    }
    for (auto const& entry : fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink))
        if (entry.is_regular_file() && is_image_name(entry.path()))
            found.emplace_back(entry.path().string(), fs::relative(entry.path(), root).string());
    std::sort(found.begin(), found.end());
    return found;
}

int usage(char const* program)
{
    std::cerr << "usage: " << program
              << " [--ref DIR] [--runtime openvino|tensorrt] [--plugin LIB] [--batch N] [--threads N] [--explain]"
                 " ARTIFACT IMAGE...\n";
    return 2;
}

// One output line: the path, the score, and with --explain each attribute as name=value.
void print_row(iqart::Scorer const& scorer, std::string const& path, iqart::Scored const& scored)
{
    std::printf("%s\t%.9g", path.c_str(), scored.score);
    std::vector<std::string> const& names = scorer.attribute_names();
    for (std::size_t k = 0; k < scored.attributes.size(); ++k)
        std::printf("\t%s=%.9g", names[k].c_str(), scored.attributes[k]);
    std::printf("\n");
}

// Scores (with `explain`, explains) the images; the attributes stay empty without it.
std::vector<iqart::Scored> score_views(iqart::Scorer& scorer, std::vector<iqart::ImageView> const& views,
    std::vector<iqart::ImageView> const& reference_views, bool explain)
{
    if (explain)
        return scorer.explain(views, reference_views);
    std::vector<float> const scores = scorer.score(views, reference_views);
    std::vector<iqart::Scored> out(scores.size());
    for (std::size_t i = 0; i < scores.size(); ++i)
        out[i].score = scores[i];
    return out;
}

// Scores one round of jobs; returns whether every file was scored.
bool score_round(iqart::Scorer& scorer, std::vector<Job> const& jobs, bool explain)
{
    bool all = true;
    std::vector<Job> kept;
    std::vector<iqart::Image> images, references;
    for (Job const& job : jobs)
    {
        try
        {
            iqart::Image image = iqart_example::read_image(job.path);
            iqart::Image reference = job.reference.empty() ? iqart::Image() : iqart_example::read_image(job.reference);
            images.push_back(std::move(image));
            references.push_back(std::move(reference));
            kept.push_back(job);
        }
        catch (std::exception const& e)
        {
            std::cerr << "error: " << e.what() << '\n';
            all = false;
        }
    }
    // Scored one by one only when the batch as a whole is refused, so one bad image names itself.
    std::vector<iqart::ImageView> views, reference_views;
    for (std::size_t i = 0; i < images.size(); ++i)
    {
        views.push_back(images[i].view());
        if (!kept[i].reference.empty())
            reference_views.push_back(references[i].view());
    }
    try
    {
        std::vector<iqart::Scored> const scored = score_views(scorer, views, reference_views, explain);
        for (std::size_t i = 0; i < scored.size(); ++i)
            print_row(scorer, kept[i].path, scored[i]);
        return all;
    }
    catch (iqart::Error const&)
    {
    }
    for (std::size_t i = 0; i < views.size(); ++i)
    {
        try
        {
            std::vector<iqart::ImageView> const one_reference
                = reference_views.empty() ? std::vector<iqart::ImageView>{} : std::vector{reference_views[i]};
            print_row(scorer, kept[i].path, score_views(scorer, {views[i]}, one_reference, explain).front());
        }
        catch (iqart::Error const& e)
        {
            std::cerr << "error: " << kept[i].path << ": " << e.what() << '\n';
            all = false;
        }
    }
    return all;
}

int run(int argc, char** argv)
{
    iqart::ScorerOptions options;
    iqart::Runtime runtime = iqart::Runtime::OpenVINO;
    std::string reference_dir;
    bool explain = false;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        bool const has_value = i + 1 < argc;
        if (arg == "--ref" && has_value)
            reference_dir = argv[++i];
        else if (arg == "--runtime" && has_value)
        {
            std::string const name = argv[++i];
            if (name != "openvino" && name != "tensorrt")
                return usage(argv[0]);
            runtime = name == "openvino" ? iqart::Runtime::OpenVINO : iqart::Runtime::TensorRT;
        }
        else if (arg == "--plugin" && has_value)
            options.plugin_library = argv[++i];
        else if (arg == "--batch" && has_value)
            options.max_batch = std::stoi(argv[++i]);
        else if (arg == "--threads" && has_value)
            options.threads = std::stoi(argv[++i]);
        else if (arg == "--explain")
            explain = true;
        else if (arg.rfind("--", 0) == 0)
            return usage(argv[0]);
        else
            positional.push_back(arg);
    }
    if (positional.size() < 2)
        return usage(argv[0]);

    iqart::Scorer scorer(positional[0], runtime, options);
    bool const fr = scorer.spec().full_reference();
    if (fr != !reference_dir.empty())
        throw iqart::Error(fr ? scorer.spec().name + " is a full-reference model: give --ref DIR"
                              : scorer.spec().name + " is a no-reference model: --ref does not apply");
    std::cerr << "iqart_score_cpp: " << scorer.describe() << '\n';

    std::vector<Job> jobs;
    for (std::size_t i = 1; i < positional.size(); ++i)
        for (auto const& [file, relative] : expand(positional[i]))
            jobs.push_back({file, fr ? (fs::path(reference_dir) / relative).string() : std::string()});
    bool all = true;
    for (std::size_t start = 0; start < jobs.size(); start += kImagesPerRound)
    {
        std::size_t const end = std::min(jobs.size(), start + kImagesPerRound);
        std::vector<Job> const round(jobs.begin() + start, jobs.begin() + end);
        all = score_round(scorer, round, explain) && all;
    }
    return all ? 0 : 1;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(argc, argv);
    }
    catch (std::exception const& e)
    {
        std::cerr << "error: " << e.what() << '\n';
        return 1;
    }
}
