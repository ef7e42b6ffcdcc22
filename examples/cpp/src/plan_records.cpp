#include "plan_records.h"

#include "files.h"
#include "json.h"

#include <stdexcept>

namespace iqart
{

namespace
{

std::string field(json::Value const& record, char const* key)
{
    json::Value const* value = record.find(key);
    if (value == nullptr || value->type != json::Value::Type::String)
        throw std::runtime_error(std::string("no string field \"") + key + "\"");
    return value->string;
}

Range range(json::Value const& value, char const* what)
{
    if (value.type != json::Value::Type::Array || value.array.size() != 3)
        throw std::runtime_error(std::string(what) + " is not [min, opt, max]");
    Range out{};
    for (int i = 0; i < 3; ++i)
    {
        if (value.array[i].type != json::Value::Type::Number || !value.array[i].integral)
            throw std::runtime_error(std::string(what) + " holds a non-integer");
        out[i] = static_cast<int>(value.array[i].number);
    }
    return out;
}

PlanRecord parse_record(std::string const& path)
{
    json::Value const root = json::parse(read_text_file(path));
    PlanRecord record;
    record.record_path = path;
    record.plan_path = path.substr(0, path.size() - 5) + ".plan";
    record.graph = field(root, "graph");
    record.graph_sha256 = field(root, "graph_sha256");
    record.gpu = field(root, "gpu");
    record.sm = field(root, "sm");
    record.tensorrt = field(root, "tensorrt");
    record.plugin = field(root, "plugin");
    record.library = field(root, "library");
    field(root, "settings"); // present in every record of this format (the build settings' digest)
    record.plan_sha256 = field(root, "plan_sha256");
    json::Value const* profile = root.find("profile");
    if (profile == nullptr || profile->type != json::Value::Type::Object || profile->find("batch") == nullptr)
        throw std::runtime_error("no profile");
    record.batch = range(*profile->find("batch"), "profile.batch");
    json::Value const* side = profile->find("side");
    if (side != nullptr && side->type != json::Value::Type::Null)
        record.side = range(*side, "profile.side");
    return record;
}

// "11.1.0" matches "11.1.0.106": Python records the bindings' version, which may omit the build.
bool same_version(std::string const& recorded, std::string const& here)
{
    return recorded == here || (here.compare(0, recorded.size(), recorded) == 0 && here[recorded.size()] == '.');
}

} // namespace

bool PlanRecord::accepts_image(int height, int width) const
{
    return !side || ((*side)[0] <= height && height <= (*side)[2] && (*side)[0] <= width && width <= (*side)[2]);
}

std::vector<PlanRecord> read_plan_records(std::string const& directory, std::vector<std::string>& unreadable)
{
    std::vector<PlanRecord> records;
    for (std::string const& path : files_with_suffix(directory, ".json"))
    {
        try
        {
            records.push_back(parse_record(path));
        }
        catch (std::exception const& e)
        {
            unreadable.push_back(path + ": unreadable plan record (" + e.what() + ")");
        }
    }
    return records;
}

std::string plan_mismatch(PlanRecord const& record, PlanEnvironment const& environment, Spec const& spec)
{
    auto const recorded = spec.sha256.find(record.graph);
    if (recorded == spec.sha256.end())
        return "built from " + record.graph + ", which spec.json does not record";
    if (record.graph_sha256 != recorded->second)
        return "built from another " + record.graph + " (" + record.graph_sha256.substr(0, 12) + ", spec.json records "
            + recorded->second.substr(0, 12) + ")";
    if (record.library != "tensorrt")
        return "built with " + record.library + ", this runtime runs TensorRT (tensorrt) plans";
    if (record.gpu != environment.gpu || record.sm != environment.sm)
        return "built for " + record.gpu + " (sm " + record.sm + "), this GPU is " + environment.gpu + " (sm "
            + environment.sm + ")";
    if (!same_version(record.tensorrt, environment.tensorrt))
        return "built with TensorRT " + record.tensorrt + ", this is TensorRT " + environment.tensorrt;
    if (environment.plugins.count(record.plugin) == 0)
        return "built with plugin build " + record.plugin + ", which is not the plugin library loaded (set "
            "ScorerOptions::plugin_library or IQART_PLUGIN_LIBRARY to that build)";
    if (!is_regular_file(record.plan_path))
        return "its .plan file is missing";
    return "";
}

} // namespace iqart
