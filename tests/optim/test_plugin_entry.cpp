// The optim plugin's entry point registers exactly the components of its manifest, with valid ids,
// options declared once, and factories that create working objects.
#include <gtest/gtest.h>

#include <set>

#include "optim_test_util.h"
#include "st/error.h"
#include "st/plugin.h"
#include "st/registrar.h"

extern "C" const st_plugin_manifest st_plugin_manifest_v1;
extern "C" void st_plugin_entry_v1(st::sdk::Registrar& registrar);

namespace st::plugins::optim::test {
namespace {

class RecordingRegistrar final : public sdk::Registrar {
  public:
    void add_model(sdk::ComponentInfo info, sdk::ModelFactory) override { unexpected(info); }
    void add_regularizer(sdk::ComponentInfo info, sdk::RegularizerFactory) override { unexpected(info); }
    void add_data_backend(sdk::ComponentInfo info, sdk::DataBackendFactory) override { unexpected(info); }
    void add_command(sdk::ComponentInfo info, sdk::CommandSpec) override { unexpected(info); }
    void add_forward_tool(sdk::ComponentInfo info, sdk::ForwardTool) override { unexpected(info); }
    void add_optimizer(sdk::ComponentInfo info, sdk::OptimizerFactory f) override {
        record(info, "optim");
        optimizers[info.id] = std::move(f);
    }
    void add_lr_scheduler(sdk::ComponentInfo info, sdk::LrSchedulerFactory f) override {
        record(info, "lr");
        schedulers[info.id] = std::move(f);
    }
    const std::string& plugin_name() const override { return name_; }

    std::vector<std::string> ids;
    std::set<std::string> option_names;
    std::map<std::string, sdk::OptimizerFactory> optimizers;
    std::map<std::string, sdk::LrSchedulerFactory> schedulers;

  private:
    void unexpected(const sdk::ComponentInfo& info) { ADD_FAILURE() << "unexpected component " << info.id; }
    void record(const sdk::ComponentInfo& info, const std::string& kind_expected) {
        std::string kind, name;
        int version = 0;
        EXPECT_TRUE(sdk::parse_component_id(info.id, &kind, &name, &version)) << info.id;
        EXPECT_EQ(kind, kind_expected) << info.id;
        EXPECT_EQ(version, 1) << info.id;
        EXPECT_FALSE(info.summary.empty()) << info.id;
        for (const auto& o : info.options) {
            EXPECT_TRUE(option_names.insert(o.name).second) << "option '" << o.name << "' declared twice";
        }
        ids.push_back(info.id);
    }
    std::string name_ = "optim";
};

TEST(PluginEntryTest, RegistersEveryManifestComponentOnce) {
    RecordingRegistrar reg;
    st_plugin_entry_v1(reg);
    std::set<std::string> manifest;
    for (uint32_t i = 0; i < st_plugin_manifest_v1.component_count; ++i) {
        manifest.insert(st_plugin_manifest_v1.components[i]);
    }
    EXPECT_EQ(std::string(st_plugin_manifest_v1.plugin_name), "optim");
    std::set<std::string> registered(reg.ids.begin(), reg.ids.end());
    EXPECT_EQ(registered.size(), reg.ids.size()) << "a component was registered twice";
    EXPECT_EQ(registered, manifest);
    // Canonical names plus SimpleTuner's paged bitsandbytes aliases, each a component of its own.
    EXPECT_EQ(reg.optimizers.size(), supported_optimizer_names().size());
    EXPECT_EQ(reg.schedulers.size(), lr_scheduler_names().size());
    for (const char* key : {"adam_beta1", "adam_beta2", "adam_epsilon", "adam_weight_decay",
                            "optimizer_config", "lr_warmup_steps", "lr_num_cycles", "lr_power", "lr_end"}) {
        EXPECT_TRUE(reg.option_names.count(key)) << key;
    }
    for (const char* host_key :
         {"learning_rate", "max_grad_norm", "grad_clip_method", "lr_scheduler", "optimizer"}) {
        EXPECT_FALSE(reg.option_names.count(host_key)) << host_key << " is a host key";
    }
}

TEST(PluginEntryTest, FactoriesCreateWorkingComponents) {
    RecordingRegistrar reg;
    st_plugin_entry_v1(reg);
    for (const auto& [id, factory] : reg.optimizers) {
        at::Tensor w =
            at::ones({8}, id == "optim.adamw_bf16@1" ? at::kBFloat16 : at::kFloat).set_requires_grad(true);
        sdk::OptimizerInit init;
        init.params = {{"w", w, 0}};
        init.groups = {{1e-1, 0.0}};  // large enough to move a bf16 weight of 1.0
        auto opt = factory(init);
        ASSERT_TRUE(opt) << id;
        w.mutable_grad() = at::ones_like(w);
        opt->step();
        EXPECT_LT(w.detach().to(at::kFloat).max().item<float>(), 1.0f) << id << " did not move the weight";
        // An alias component creates its target: the state names the canonical optimizer.
        const std::string name = id.substr(6, id.size() - 8);
        EXPECT_EQ(opt->state_dict().meta["optimizer"], optimizer_component_id(resolve_optimizer_name(name)))
            << id;
    }
    for (const auto& [id, factory] : reg.schedulers) {
        sdk::LrSchedulerInit init;
        init.warmup_steps = 10;
        init.total_steps = 100;
        auto s = factory(init);
        ASSERT_TRUE(s) << id;
        EXPECT_GT(s->lr(5, 1e-4), 0.0) << id;  // mid-warmup / mid-period: positive for all
    }
}

}  // namespace
}  // namespace st::plugins::optim::test
