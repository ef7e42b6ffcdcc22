// The OpenVINO runtime: model.onnx on the CPU in fp32, as the Python engine's openvino backend runs it.
// Its outputs are read by name (score, attributes), not by position.
//
// Precision is set explicitly: OpenVINO's own CPU default is bf16 wherever the CPU has it, which
// would change scores. Each input shape is compiled once (OpenVINO is fastest on static shapes)
// and the most recent few are kept.
#include "engine.h"

#include "files.h"

#include <openvino/openvino.hpp>

#include <deque>
#include <map>
#include <tuple>

namespace iqart
{

namespace
{

constexpr std::size_t kCompiledShapesKept = 16; // native-resolution inputs bring many shapes; each holds buffers
char const* const kGraph = "model.onnx";

class OpenVinoEngine : public Engine
{
public:
    OpenVinoEngine(Spec const& spec, ScorerOptions const& options) : spec_(spec), threads_(options.threads)
    {
        check_graph(spec, kGraph);
        path_ = join_path(spec.directory, kGraph);
        try
        {
            model_ = core_.read_model(path_);
        }
        catch (std::exception const& e)
        {
            throw Error(path_ + ": OpenVINO cannot read it: " + e.what());
        }
        std::vector<std::string> names;
        for (auto const& input : model_->inputs())
            names.push_back(input.get_any_name());
        if (names != spec.input_names)
            throw Error(path_ + ": its inputs do not match spec.json's");
        for (char const* output : {"score", "attributes"})
            if (!has_output(output))
                throw Error(path_ + ": the graph has no \"" + output + "\" output (export the artifact again)");
    }

    Outputs run(int n, int height, int width, uint8_t const* images, uint8_t const* references) override
    {
        try
        {
            ov::Shape const shape{static_cast<std::size_t>(n), static_cast<std::size_t>(height),
                static_cast<std::size_t>(width), 3};
            ov::InferRequest request = compiled_for(shape).create_infer_request();
            // The caller's bytes are read in place: OpenVINO does not write to its inputs.
            request.set_tensor("image", ov::Tensor(ov::element::u8, shape, const_cast<uint8_t*>(images)));
            if (references != nullptr)
                request.set_tensor("reference", ov::Tensor(ov::element::u8, shape, const_cast<uint8_t*>(references)));
            request.infer();
            std::size_t const k = spec_.attribute_names.size();
            return {output(request, "score", n, 1, "(N,)"),
                output(request, "attributes", n, k, "(N, " + std::to_string(k) + ")")};
        }
        catch (Error const&)
        {
            throw;
        }
        catch (std::exception const& e)
        {
            throw Error(path_ + ": OpenVINO failed on a batch of " + std::to_string(n) + " images of "
                + std::to_string(width) + "x" + std::to_string(height) + ": " + e.what());
        }
    }

    std::string describe() const override { return "OpenVINO " + std::string(ov::get_openvino_version().buildNumber)
        + " on the CPU, fp32, " + path_; }

private:
    bool has_output(std::string const& name) const
    {
        for (auto const& output : model_->outputs())
            if (output.get_names().count(name) != 0)
                return true;
        return false;
    }

    // The output `name` of a finished request, `n` rows of `columns` float32 values.
    std::vector<float> output(ov::InferRequest& request, std::string const& name, int n, std::size_t columns,
        std::string const& shape) const
    {
        ov::Tensor const tensor = request.get_tensor(name);
        std::size_t const expected = static_cast<std::size_t>(n) * columns;
        if (tensor.get_element_type() != ov::element::f32 || tensor.get_size() != expected)
            throw Error(path_ + ": the graph's " + name + " output is not float32 " + shape);
        float const* data = tensor.data<float const>();
        return {data, data + expected};
    }

    ov::CompiledModel& compiled_for(ov::Shape const& shape)
    {
        auto const found = compiled_.find(shape);
        if (found != compiled_.end())
            return found->second;
        std::shared_ptr<ov::Model> model = model_->clone();
        std::map<std::string, ov::PartialShape> shapes;
        for (std::string const& name : spec_.input_names)
            shapes[name] = ov::PartialShape(shape);
        model->reshape(shapes);
        ov::AnyMap config{ov::hint::inference_precision(ov::element::f32),
            ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::num_streams(1)};
        if (threads_ > 0)
            config.emplace(ov::inference_num_threads(threads_));
        ov::CompiledModel compiled = core_.compile_model(model, "CPU", config);
        if (order_.size() == kCompiledShapesKept)
        {
            compiled_.erase(order_.front());
            order_.pop_front();
        }
        order_.push_back(shape);
        return compiled_.emplace(shape, std::move(compiled)).first->second;
    }

    Spec spec_;
    int threads_;
    std::string path_;
    ov::Core core_;
    std::shared_ptr<ov::Model> model_;
    std::map<ov::Shape, ov::CompiledModel> compiled_;
    std::deque<ov::Shape> order_;
};

} // namespace

std::unique_ptr<Engine> make_openvino_engine(Spec const& spec, ScorerOptions const& options)
{
    return std::make_unique<OpenVinoEngine>(spec, options);
}

} // namespace iqart
