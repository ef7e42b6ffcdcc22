// The OpenVINO runtime: model.onnx on the CPU in fp32, as the Python engine's openvino backend runs it.
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
    }

    std::vector<float> run(int n, int height, int width, uint8_t const* images, uint8_t const* references) override
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
            ov::Tensor const scores = request.get_tensor("score");
            if (scores.get_element_type() != ov::element::f32 || scores.get_size() != static_cast<std::size_t>(n))
                throw Error(path_ + ": the graph's score output is not float32 (N,)");
            float const* data = scores.data<float const>();
            return {data, data + n};
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
