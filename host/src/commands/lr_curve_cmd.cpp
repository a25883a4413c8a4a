// st-host lr-curve: prints the learning rate a scheduler gives at each step, so users can see the
// schedule their config produces before training (and plugin authors can check theirs).
#include <fmt/format.h>
#include <boost/program_options.hpp>

#include <cstdio>

#include "commands/commands.h"
#include "config/options_table.h"
#include "plugins/guard.h"
#include "st/error.h"

namespace st::host {
namespace po = boost::program_options;

int cmd_lr_curve(CommandContext& ctx, const std::vector<std::string>& args) {
    std::string name;
    double lr = 0;
    int64_t steps = 0, warmup = 0, every = 1;
    double cycles = 1.0, power = 1.0, lr_end = 0.0;
    po::options_description desc("lr-curve");
    desc.add_options()("scheduler", po::value(&name)->required())(
        "learning_rate", po::value(&lr)->required())("steps", po::value(&steps)->required())(
        "warmup", po::value(&warmup)->default_value(0))("cycles", po::value(&cycles)->default_value(1.0))(
        "power", po::value(&power)->default_value(1.0))("lr_end", po::value(&lr_end)->default_value(0.0))(
        "every", po::value(&every)->default_value(1));
    auto extra = parse_command_flags(desc, args, "lr-curve");
    if (steps <= 0 || every <= 0) fail("host.cli", "lr-curve", "--steps and --every must be positive");
    auto& reg = ctx.plugins();
    const ComponentEntry* e = reg.find_latest("lr", name);
    if (!e) {
        std::vector<std::string> known;
        for (const auto* c : reg.of_kind("lr")) known.push_back(c->name);
        fail("host.cli", "lr-curve", "no LR scheduler named '{}'; available: {}", name,
             known.empty() ? std::string("none (no plugin provides lr.* components)")
                           : fmt::format("{}", fmt::join(known, ", ")));
    }
    OptionTable table;
    for (auto& s : e->info.options) table.add(s);
    auto resolved = resolve_config(nlohmann::json::object(), parse_cli_overrides(extra), table);
    sdk::LrSchedulerInit init;
    init.warmup_steps = warmup;
    init.total_steps = steps;
    init.num_cycles = cycles;
    init.power = power;
    init.lr_end = lr_end;
    init.config = sdk::ConfigView(std::make_shared<const nlohmann::json>(resolved.values));
    auto sched = call_plugin(*e, "create", [&] { return e->lr_scheduler(init); });
    std::printf("# %s (plugin %s)\n# step lr\n", e->id.c_str(), e->plugin_name.c_str());
    for (int64_t s = 0; s < steps; s += every)
        std::printf("%lld %.9g\n", static_cast<long long>(s),
                    call_plugin(*e, "lr", [&] { return sched->lr(s, lr); }));
    return 0;
}

}  // namespace st::host
