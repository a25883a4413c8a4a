// base_model_precision and group offload to disk through st-host (#20): a LoRA run on int8-quanto base
// weights with the blocks offloaded to disk trains, removes its offload folder (and nothing else), and
// its LoRA loads on the unquantised model; no_change with offload gives the losses of copied fp32
// weights exactly; bad combinations are refused before any caching.
#include <gtest/gtest.h>

#include <algorithm>

#include "fixtures.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

std::vector<double> losses(const fs::path& metrics) {
    std::vector<double> out;
    for (const auto& l : st_test::read_jsonl(metrics))
        if (l.contains("loss")) out.push_back(l["loss"].get<double>());
    return out;
}

TEST(BaseWeightsRunTest, Int8WithDiskOffloadTrainsCleansUpAndItsLoraLoadsOnTheUnquantisedModel) {
    auto& env = TrainEnv::get();
    const fs::path offload = env.root / "offload_int8";
    fs::create_directories(offload);
    st_test::write_text(offload / "users_file.txt", "not st's");
    // A folder a killed st run left (its pid no longer runs) is st's and goes; a look-alike name that
    // is not st's pattern stays.
    fs::create_directories(offload / "st-offload-999999999-transformer");
    st_test::write_text(offload / "st-offload-999999999-transformer" / "group-0000.safetensors", "x");
    fs::create_directories(offload / "st-offload-notes");
    auto r = env.run(env.config("int8_offload", {{"base_model_precision", "int8-quanto"},
                                                 {"quantize_via", "cpu"},
                                                 {"enable_group_offload", true},
                                                 {"group_offload_to_disk_path", offload.string()},
                                                 {"group_offload_use_stream", true},
                                                 {"max_train_steps", 3},
                                                 {"lora_dropout", 0.0}}));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("Linear base weights (int8-quanto -> int8)"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("block offload to disk: 2 blocks in 2 groups of 1"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("peak RSS while training"), std::string::npos) << r.log;
    const auto l = losses(env.root / "int8_offload" / "metrics.jsonl");
    ASSERT_EQ(l.size(), 3u);
    for (double v : l) EXPECT_TRUE(std::isfinite(v));
    // st's folder is gone, the user's file stays.
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(offload)) left.push_back(e.path().filename().string());
    std::sort(left.begin(), left.end());
    EXPECT_EQ(left, (std::vector<std::string>{"st-offload-notes", "users_file.txt"}));
    EXPECT_NE(r.log.find("left by st process 999999999 that no longer runs"), std::string::npos) << r.log;
    // The LoRA (trained on int8 layers) loads on the unquantised model.
    const auto gen = st_test::shell(
        st_test::host_prefix() + "generate --plugin wan --model '" + (env.root / "model").string() +
        "' --prompt 'a test' --frames 5 --resolution 32x32 --steps 2 --lora '" +
        (env.root / "int8_offload" / "pytorch_lora_weights.safetensors").string() + "' --out '" +
        (env.root / "int8_gen.mp4").string() + "'");
    ASSERT_EQ(gen.code, 0) << gen.out;
    EXPECT_TRUE(fs::exists(env.root / "int8_gen.mp4"));
}

TEST(BaseWeightsRunTest, NoChangeWithOffloadGivesTheLossesOfCopiedFp32Weights) {
    auto& env = TrainEnv::get();
    const nlohmann::json common = {{"max_train_steps", 3}, {"lora_dropout", 0.0}};
    nlohmann::json a = common, b = common;
    a["base_model_precision"] = "fp32";
    b["base_model_precision"] = "no_change";
    b["enable_group_offload"] = true;
    b["group_offload_to_disk_path"] = (env.root / "offload_keep").string();
    b["group_offload_blocks_per_group"] = 2;
    auto ra = env.run(env.config("base_fp32", a));
    ASSERT_EQ(ra.code, 0) << ra.log;
    auto rb = env.run(env.config("base_keep_offload", b));
    ASSERT_EQ(rb.code, 0) << rb.log;
    EXPECT_NE(rb.log.find("2 blocks in 1 groups of 2"), std::string::npos) << rb.log;
    const auto la = losses(env.root / "base_fp32" / "metrics.jsonl");
    const auto lb = losses(env.root / "base_keep_offload" / "metrics.jsonl");
    ASSERT_EQ(la.size(), 3u);
    EXPECT_EQ(la, lb);  // the tiny model is fp32 on disk: the same numbers, bit for bit
}

TEST(BaseWeightsRunTest, BadCombinationsAreRefusedBeforeCaching) {
    auto& env = TrainEnv::get();
    struct Case {
        nlohmann::json settings;
        std::string says;
    };
    const std::vector<Case> cases = {
        {{{"base_model_precision", "fp8-quanto"}},
         "base_model_precision = \"fp8-quanto\" (config file): expected one of"},
        {{{"model_type", "full"}, {"base_model_precision", "int8-quanto"}},
         "stored base weights are for LoRA runs"},
        {{{"enable_group_offload", true}, {"group_offload_type", "leaf_level"}},
         "group_offload_type = leaf_level"},
        {{{"model_type", "full"}, {"enable_group_offload", true}},
         "enable_group_offload: st offloads frozen"},
    };
    for (const auto& c : cases) {
        auto r = env.run(env.config("refused", c.settings));
        EXPECT_NE(r.code, 0) << c.settings.dump();
        EXPECT_NE(r.log.find(c.says), std::string::npos) << c.settings.dump() << "\n" << r.log;
        EXPECT_EQ(r.log.find("caching"), std::string::npos) << r.log;
    }
}

}  // namespace
