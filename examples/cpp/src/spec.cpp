// spec.json -> iqart::Spec, refusing what the engine could not score correctly.
#include "iqart/spec.h"

#include "files.h"
#include "json.h"


namespace iqart
{

namespace
{

constexpr int kSpecVersion = 2; // iqart.export.artifact.SPEC_VERSION

class SpecReader
{
public:
    explicit SpecReader(std::string path) : path_(std::move(path)) {}

    [[noreturn]] void fail(std::string const& what) const { throw Error(path_ + ": " + what); }

    json::Value const& member(json::Value const& object, std::string const& key, json::Value::Type type,
        char const* type_name) const
    {
        json::Value const* value = object.find(key);
        if (value == nullptr)
            fail("no \"" + key + "\" field");
        if (value->type != type)
            fail("\"" + key + "\" is not " + type_name);
        return *value;
    }

    std::string text(json::Value const& object, std::string const& key) const
    {
        return member(object, key, json::Value::Type::String, "a string").string;
    }

    int positiveInteger(json::Value const& value, std::string const& what) const
    {
        if (value.type != json::Value::Type::Number || !value.integral || value.number < 1 || value.number > 1e6)
            fail(what + " is not a positive integer");
        return static_cast<int>(value.number);
    }

    ResizePolicy resize(json::Value const& root) const
    {
        json::Value const& policy = member(root, "resize", json::Value::Type::Object, "an object");
        if (policy.object.size() != 1)
            fail("\"resize\" must hold exactly one of native, short_side, fixed");
        auto const& [kind, value] = policy.object.front();
        ResizePolicy out;
        if (kind == "native")
            out.kind = ResizePolicy::Kind::Native;
        else if (kind == "short_side")
        {
            out.kind = ResizePolicy::Kind::ShortSide;
            out.short_side = positiveInteger(value, "resize.short_side");
        }
        else if (kind == "fixed")
        {
            if (value.type != json::Value::Type::Array || value.array.size() != 2)
                fail("resize.fixed is not [H, W]");
            out.kind = ResizePolicy::Kind::Fixed;
            out.height = positiveInteger(value.array[0], "resize.fixed[0]");
            out.width = positiveInteger(value.array[1], "resize.fixed[1]");
        }
        else
            fail("unknown resize policy \"" + kind + "\"");
        return out;
    }

    // The outputs the engines read: score (N,) and attributes (N, K) with K names.
    void read_outputs(json::Value const& root, Spec& spec) const
    {
        json::Value const* score = nullptr;
        json::Value const* attributes = nullptr;
        for (json::Value const& output : member(root, "outputs", json::Value::Type::Array, "an array").array)
        {
            if (output.type != json::Value::Type::Object)
                fail("an entry of \"outputs\" is not an object");
            std::string const name = text(output, "name");
            if (text(output, "dtype") != "float32")
                fail("output " + name + " is not float32");
            if (name == "score")
                score = &output;
            else if (name == "attributes")
                attributes = &output;
        }
        if (score == nullptr)
            fail("no \"score\" output");
        if (attributes == nullptr)
            fail("no \"attributes\" output: the graphs must have it (export the artifact again with this iqart "
                 "version)");
        for (json::Value const& name : member(*attributes, "names", json::Value::Type::Array, "an array").array)
        {
            if (name.type != json::Value::Type::String || name.string.empty())
                fail("an attribute name is not a non-empty string");
            spec.attribute_names.push_back(name.string);
        }
        if (spec.attribute_names.empty())
            fail("the attributes output names no attributes");
        json::Value const& shape = member(*attributes, "shape", json::Value::Type::Array, "an array");
        if (shape.array.size() != 2
            || positiveInteger(shape.array[1], "attributes.shape[1]")
                != static_cast<int>(spec.attribute_names.size()))
            fail("the attributes output's shape is not [N, " + std::to_string(spec.attribute_names.size())
                + "] (one column per name)");
        spec.attributes_meaning = text(*attributes, "meaning");
    }

    Spec read(std::string const& directory) const
    {
        json::Value root;
        try
        {
            root = json::parse(read_text_file(path_));
        }
        catch (Error const&)
        {
            throw;
        }
        catch (std::exception const& e)
        {
            fail(std::string("not valid JSON: ") + e.what());
        }
        if (root.type != json::Value::Type::Object)
            fail("not a JSON object");
        json::Value const& version = member(root, "spec_version", json::Value::Type::Number, "a number");
        if (version.number != kSpecVersion)
            fail("spec_version " + std::to_string(static_cast<long long>(version.number)) + ", this library reads "
                + std::to_string(kSpecVersion) + " (export the artifact again with this iqart version)");
        Spec spec;
        spec.directory = directory;
        spec.name = text(root, "name");
        spec.task = text(root, "task");
        if (spec.task != "nr" && spec.task != "fr")
            fail("task \"" + spec.task + "\" is neither nr nor fr");
        for (json::Value const& input : member(root, "inputs", json::Value::Type::Array, "an array").array)
        {
            if (input.type != json::Value::Type::Object)
                fail("an entry of \"inputs\" is not an object");
            if (text(input, "dtype") != "uint8")
                fail("input " + text(input, "name") + " is not uint8");
            spec.input_names.push_back(text(input, "name"));
        }
        std::vector<std::string> expected{"image"};
        if (spec.full_reference())
            expected.push_back("reference");
        if (spec.input_names != expected)
            fail(std::string("inputs must be ") + (spec.full_reference() ? "image, reference" : "image")
                + " for a " + spec.task + " model");
        read_outputs(root, spec);
        spec.resize = resize(root);
        json::Value const& range = member(root, "score_range", json::Value::Type::Array, "an array");
        if (range.array.size() != 2 || range.array[0].type != json::Value::Type::Number
            || range.array[1].type != json::Value::Type::Number)
            fail("\"score_range\" is not [low, high]");
        spec.score_min = range.array[0].number;
        spec.score_max = range.array[1].number;
        spec.higher_better = member(root, "higher_better", json::Value::Type::Bool, "true or false").boolean;
        for (auto const& [file, digest] : member(root, "sha256", json::Value::Type::Object, "an object").object)
            if (digest.type == json::Value::Type::String) // "weights" is null for models exported without a weight file
                spec.sha256[file] = digest.string;
        return spec;
    }

private:
    std::string path_;
};

} // namespace

Spec read_spec(std::string const& artifact_dir)
{
    std::string const path = join_path(artifact_dir, "spec.json");
    if (!is_regular_file(path))
        throw Error(artifact_dir + ": not an iqart artifact (no spec.json)");
    return SpecReader(path).read(artifact_dir);
}

} // namespace iqart
