// The training loop through st-host: LoRA training lowers the loss and writes files ComfyUI's and
// diffusers' Wan loaders accept (checked by the independent reader tests/sdk/read_safetensors.py),
// metrics.jsonl has one complete line per step, full fine-tunes write the diffusers layout,
// epochs and gradient accumulation count as SimpleTuner counts them, EMA, and bad configurations
// fail before training with the key named.
#include <gtest/gtest.h>

#include <set>

#include "../common/independent_safetensors.h"
#include "fixtures.h"
#include "st/safetensors.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

double mean_loss(const std::vector<nlohmann::json>& lines, size_t from, size_t to) {
    double s = 0;
    for (size_t i = from; i < to; ++i) s += lines[i]["loss"].get<double>();
    return s / static_cast<double>(to - from);
}

TEST(TrainerTest, LoraTrainingLowersTheLossAndWritesMetricsPerStep) {
    auto& env = TrainEnv::get();
    auto r = env.run(env.config("lora", {{"max_train_steps", 120},
                                         {"checkpoint_step_interval", 50},
                                         {"eval_steps_interval", 40},
                                         {"eval_timesteps", 8},
                                         {"num_eval_images", 3}}));
    ASSERT_EQ(r.code, 0) << r.log;
    std::vector<nlohmann::json> lines, evals;
    for (auto& l : st_test::read_jsonl(env.root / "lora" / "metrics.jsonl"))
        (l.contains("loss/val") ? evals : lines).push_back(l);
    // The evaluation loss (fixed samples, sigmas and noise) falls as the LoRA learns.
    ASSERT_EQ(evals.size(), 3u);
    EXPECT_EQ(evals[0]["step"], 40);
    EXPECT_EQ(evals[2]["step"], 120);
    EXPECT_EQ(evals[0]["loss/val/by_timestep"].size(), 8u);
    EXPECT_LT(evals[2]["loss/val"].get<double>(), evals[0]["loss/val"].get<double>());
    ASSERT_EQ(lines.size(), 120u);
    for (size_t i = 0; i < lines.size(); ++i) {
        const auto& l = lines[i];
        EXPECT_EQ(l["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
        for (const char* key : {"loss", "lr", "grad_norm", "timesteps", "epoch", "bucket", "samples", "time"})
            EXPECT_TRUE(l.contains(key)) << key << " missing in " << l.dump();
        EXPECT_EQ(l["timesteps"].size(), 2u);
        for (const char* part : {"data", "forward", "backward", "optimizer", "host", "total"})
            EXPECT_GE(l["time"][part].get<double>(), 0.0) << part;
        EXPECT_DOUBLE_EQ(l["lr"].get<double>(), 3e-3);
        EXPECT_EQ(l["loss_terms"]["flow_matching"].get<double>(), l["loss"].get<double>());
    }
    const double first = mean_loss(lines, 0, 20), last = mean_loss(lines, 100, 120);
    EXPECT_LT(last, 0.8 * first) << "loss did not fall: first 20 steps " << first << ", last 20 " << last;
    // 4 batches of 2 per epoch -> step 5 opens epoch 2.
    EXPECT_EQ(lines[4]["epoch"].get<int64_t>(), 2);
    EXPECT_NE(r.log.find("16 adapters on [to_q, to_k, to_v, to_out.0] (rank 4, alpha 4"), std::string::npos)
        << r.log;
    EXPECT_TRUE(fs::exists(env.root / "lora" / "checkpoint-50"));
    EXPECT_TRUE(fs::exists(env.root / "lora" / "checkpoint-100"));
    EXPECT_TRUE(fs::exists(env.root / "lora" / "checkpoint-120"));
}

TEST(TrainerTest, LoraFileUsesNativeWanNamesWithAlphaReadByAnIndependentReader) {
    auto& env = TrainEnv::get();
    auto r = env.run(
        env.config("native", {{"max_train_steps", 3}, {"lora_format", "diffusers"}, {"lora_alpha", 8}}));
    ASSERT_EQ(r.code, 0) << r.log;
    const auto summary =
        st_test::read_safetensors_independently(env.root / "native" / "pytorch_lora_weights.safetensors");
    std::set<std::string> names;
    for (const auto& [name, t] : summary["tensors"].items()) names.insert(name);
    // 2 blocks x (self_attn q,k,v,o + cross_attn q,k,v,o) x (lora_A, lora_B, alpha)
    EXPECT_EQ(names.size(), 48u);
    EXPECT_TRUE(names.count("diffusion_model.blocks.0.self_attn.q.lora_A.weight"));
    EXPECT_TRUE(names.count("diffusion_model.blocks.1.cross_attn.o.lora_B.weight"));
    const auto& alpha = summary["tensors"]["diffusion_model.blocks.0.self_attn.k.alpha"];
    EXPECT_EQ(alpha["dtype"], "F32");
    EXPECT_DOUBLE_EQ(alpha["values"][0].get<double>(), 8.0);
    const auto& a = summary["tensors"]["diffusion_model.blocks.0.self_attn.q.lora_A.weight"];
    EXPECT_EQ(a["shape"][0].get<int64_t>(), 4);
    // B starts at zero: after 3 updates it has moved.
    double moved = 0;
    for (const auto& v : summary["tensors"]["diffusion_model.blocks.0.self_attn.q.lora_B.weight"]["values"])
        moved += std::abs(v.get<double>());
    EXPECT_GT(moved, 0.0);
    // lora_format diffusers adds the transformer.* file with rank/alpha in the PEFT metadata.
    const auto diff = st_test::read_safetensors_independently(env.root / "native" /
                                                              "pytorch_lora_weights_diffusers.safetensors");
    EXPECT_TRUE(diff["tensors"].contains("transformer.blocks.0.attn1.to_q.lora_A.weight"));
    EXPECT_NE(diff["metadata"]["lora_adapter_metadata"].get<std::string>().find("transformer.lora_alpha"),
              std::string::npos);
    // The checkpoint holds the same LoRA plus the state to resume.
    const fs::path ck = env.root / "native" / "checkpoint-3";
    for (const char* f :
         {"pytorch_lora_weights.safetensors", "optimizer.safetensors", "random_states.safetensors",
          "training_state.json", "config.resolved.json", "checkpoint_manifest.json"})
        EXPECT_TRUE(fs::exists(ck / f)) << f;
    const auto state = nlohmann::json::parse(st_test::read_text(ck / "training_state.json"));
    EXPECT_EQ(state["global_step"], 3);
    EXPECT_EQ(state["components"]["optimizer"], "optim.adamw@1");
    EXPECT_EQ(state["components"]["lr_scheduler"], "lr.constant@1");
    EXPECT_EQ(state["components"]["model"], "model.wan@1");
}

TEST(TrainerTest, FullFineTuneWritesTheDiffusersTransformerFolder) {
    auto& env = TrainEnv::get();
    auto r = env.run(
        env.config("full", {{"model_type", "full"}, {"max_train_steps", 2}, {"learning_rate", 1e-3}}));
    ASSERT_EQ(r.code, 0) << r.log;
    const fs::path out = env.root / "full" / "transformer";
    ASSERT_TRUE(fs::exists(out / "config.json"));
    auto trained = st::sdk::open_tensor_source(out);
    auto base = st::sdk::open_tensor_source(env.root / "model" / "transformer");
    ASSERT_EQ(trained->infos().size(), base->infos().size());
    int changed = 0;
    for (const auto& info : base->infos()) {
        ASSERT_TRUE(trained->contains(info.name)) << info.name;
        if (!trained->load(info.name).equal(base->load(info.name))) ++changed;
    }
    EXPECT_GT(changed, static_cast<int>(base->infos().size()) / 2);
    EXPECT_NE(r.log.find("model_type full: every transformer weight trains"), std::string::npos);
}

TEST(TrainerTest, EpochsWithAccumulationStepAtTheEpochEnd) {
    // 4 batches per epoch with accumulation 3: steps of 3 + 1 batches -> 2 steps per epoch.
    auto& env = TrainEnv::get();
    auto r = env.run(env.config(
        "epochs", {{"max_train_steps", 0}, {"num_train_epochs", 2}, {"gradient_accumulation_steps", 3}}));
    ASSERT_EQ(r.code, 0) << r.log;
    const auto lines = st_test::read_jsonl(env.root / "epochs" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 4u);
    EXPECT_EQ(lines[0]["samples"], 6);
    EXPECT_EQ(lines[1]["samples"], 2);
    EXPECT_EQ(lines[2]["samples"], 6);
    EXPECT_EQ(lines[3]["samples"], 2);
    EXPECT_NE(r.log.find("num_train_epochs 2 x 2 steps (4 batches of 2, accumulation 3) = 4 steps"),
              std::string::npos)
        << r.log;
}

TEST(TrainerTest, StrictEpochLimitAndItsLegacyInverseIgnoreFinalEpochs) {
    // 4 batches of 2 per epoch = 4 steps; max_train_steps 10 with 2 epochs: strict stops at 8 steps,
    // ignore_final_epochs true (SimpleTuner's older name, inverted) trains all 10.
    auto& env = TrainEnv::get();
    auto strict = env.run(env.config("strict", {{"max_train_steps", 10},
                                                {"num_train_epochs", 2},
                                                {"strict_epoch_limit", true},
                                                {"checkpoint_step_interval", 100}}));
    ASSERT_EQ(strict.code, 0) << strict.log;
    EXPECT_EQ(st_test::read_jsonl(env.root / "strict" / "metrics.jsonl").size(), 8u);
    EXPECT_NE(strict.log.find("strict_epoch_limit: num_train_epochs 2 x 4 steps = 8 steps end the run before "
                              "max_train_steps 10"),
              std::string::npos)
        << strict.log;
    auto legacy = env.run(env.config("legacy", {{"max_train_steps", 10},
                                                {"num_train_epochs", 2},
                                                {"ignore_final_epochs", false},
                                                {"checkpoint_step_interval", 100}}));
    ASSERT_EQ(legacy.code, 0) << legacy.log;
    EXPECT_EQ(st_test::read_jsonl(env.root / "legacy" / "metrics.jsonl").size(), 8u) << "false = strict";
    auto loose = env.run(env.config("loose", {{"max_train_steps", 10},
                                              {"num_train_epochs", 2},
                                              {"ignore_final_epochs", true},
                                              {"checkpoint_step_interval", 100}}));
    ASSERT_EQ(loose.code, 0) << loose.log;
    EXPECT_EQ(st_test::read_jsonl(env.root / "loose" / "metrics.jsonl").size(), 10u);
}

TEST(TrainerTest, EmaWeightsFollowSimpleTunersDecayAndAreSaved) {
    auto& env = TrainEnv::get();
    auto r = env.run(env.config("ema", {{"max_train_steps", 4}, {"use_ema", true}}));
    ASSERT_EQ(r.code, 0) << r.log;
    auto live = st::sdk::SafetensorsFile::open(env.root / "ema" / "pytorch_lora_weights.safetensors");
    auto ema = st::sdk::SafetensorsFile::open(env.root / "ema" / "ema" / "pytorch_lora_weights.safetensors");
    const std::string b = "diffusion_model.blocks.0.self_attn.q.lora_B.weight";
    EXPECT_FALSE(live->load(b).equal(ema->load(b)));
    EXPECT_TRUE(fs::exists(env.root / "ema" / "checkpoint-4" / "ema" / "ema_state.safetensors"));
    // decay at step t = min((1 + (t-1)) / (10 + (t-1)), 0.995): 0 at step 1, so after one step the EMA
    // equals the weights.
    auto one = env.run(env.config("ema1", {{"max_train_steps", 1}, {"use_ema", true}}));
    ASSERT_EQ(one.code, 0) << one.log;
    auto l1 = st::sdk::SafetensorsFile::open(env.root / "ema1" / "pytorch_lora_weights.safetensors");
    auto e1 = st::sdk::SafetensorsFile::open(env.root / "ema1" / "ema" / "pytorch_lora_weights.safetensors");
    EXPECT_TRUE(l1->load(b).equal(e1->load(b)));
    // ema_device accelerator keeps the shadows on the training device (here the CPU, the only one):
    // the same EMA as the default cpu, and the log says where it lives.
    auto acc = env.run(
        env.config("ema_acc", {{"max_train_steps", 4}, {"use_ema", true}, {"ema_device", "accelerator"}}));
    ASSERT_EQ(acc.code, 0) << acc.log;
    EXPECT_NE(acc.log.find("in fp32 on cpu (ema_device accelerator)"), std::string::npos) << acc.log;
    auto ea =
        st::sdk::SafetensorsFile::open(env.root / "ema_acc" / "ema" / "pytorch_lora_weights.safetensors");
    EXPECT_TRUE(ea->load(b).equal(ema->load(b)));
}

TEST(TrainerTest, UnsupportedChoicesFailBeforeTrainingNamingTheKey) {
    auto& env = TrainEnv::get();
    auto lyco = env.run(env.config("bad1", {{"lora_type", "lycoris"}}));
    EXPECT_NE(lyco.code, 0);
    EXPECT_NE(lyco.log.find("lora_type"), std::string::npos) << lyco.log;
    EXPECT_NE(lyco.log.find("lora_type lycoris needs lycoris_config"), std::string::npos) << lyco.log;
    auto fp16 = env.run(env.config("bad2", {{"mixed_precision", "fp16"}}));
    EXPECT_NE(fp16.code, 0);
    EXPECT_NE(fp16.log.find("mixed_precision = fp16: not supported yet"), std::string::npos) << fp16.log;
    auto opt = env.run(env.config("bad3", {{"optimizer", "sgd"}}));
    EXPECT_NE(opt.code, 0);
    EXPECT_NE(opt.log.find("optimizer = 'sgd' is not provided by any loaded plugin; available:"),
              std::string::npos)
        << opt.log;
    EXPECT_FALSE(fs::exists(env.root / "bad3" / "metrics.jsonl"));
}

TEST(TrainerTest, TreadTrainingLowersTheLossAndSaysWhatItRoutes) {
    // The tiny model has 2 blocks: half of the video tokens skip block 1 (SimpleTuner's config form,
    // tread_config as a JSON string, TEXT_JSON), with LoRA dropout and segmented checkpointing on.
    auto& env = TrainEnv::get();
    auto r = env.run(env.config(
        "tread", {{"max_train_steps", 60},
                  {"lora_dropout", 0.1},
                  {"gradient_checkpointing_interval", 2},
                  {"tread_config",
                   R"({"routes": [{"selection_ratio": 0.5, "start_layer_idx": -1, "end_layer_idx": -1}]})"},
                  {"checkpoint_step_interval", 60}}));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("TREAD over 2 blocks: route 0: 50% of the video tokens skip blocks 1 .. 1 (random)"),
              std::string::npos)
        << r.log;
    EXPECT_NE(r.log.find("gradient_checkpointing every 2 block(s)"), std::string::npos) << r.log;
    const auto lines = st_test::read_jsonl(env.root / "tread" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 60u);
    const double first = mean_loss(lines, 0, 15), last = mean_loss(lines, 45, 60);
    EXPECT_LT(last, 0.9 * first) << "loss did not fall with TREAD: first 15 steps " << first << ", last 15 "
                                 << last;
}

TEST(TrainerTest, TreadConfigErrorsNameTheRouteBeforeAnyCaching) {
    auto& env = TrainEnv::get();
    auto range = env.run(env.config(
        "tread_bad1",
        {{"tread_config",
          {{"routes", {{{"selection_ratio", 0.5}, {"start_layer_idx", 0}, {"end_layer_idx", 4}}}}}}}));
    EXPECT_NE(range.code, 0);
    EXPECT_NE(range.log.find("tread_config route 0: end_layer_idx 4 is out of range for a model of 2 blocks"),
              std::string::npos)
        << range.log;
    auto ratio = env.run(env.config(
        "tread_bad2",
        {{"tread_config",
          {{"routes", {{{"selection_ratio", 1.5}, {"start_layer_idx", 0}, {"end_layer_idx", 1}}}}}}}));
    EXPECT_NE(ratio.code, 0);
    EXPECT_NE(ratio.log.find("tread_config route 0: selection_ratio 1.5 is outside [0, 1)"),
              std::string::npos)
        << ratio.log;
    EXPECT_EQ(ratio.log.find("caching"), std::string::npos) << "the form is checked with the configuration";
    auto text = env.run(env.config("tread_bad3", {{"tread_config", "{routes: 1}"}}));
    EXPECT_NE(text.code, 0);
    EXPECT_NE(text.log.find("tread_config = \"{routes: 1}\" (config file): expected valid JSON"),
              std::string::npos)
        << text.log;
    EXPECT_FALSE(fs::exists(env.root / "tread_bad1" / "metrics.jsonl"));
}

TEST(TrainerTest, ADatasetWithoutUsableSamplesStopsTheRunBeforeTheFirstStep) {
    auto& env = TrainEnv::get();
    fs::create_directories(env.root / "broken");
    st_test::write_text(env.root / "broken" / "empty.mp4", "");
    auto datasets = nlohmann::json::parse(st_test::read_text(env.root / "multidatabackend.json"));
    datasets.push_back({{"id", "broken"},
                        {"type", "local"},
                        {"dataset_type", "video"},
                        {"instance_data_dir", "broken"},
                        {"caption_strategy", "filename"},
                        {"resolution", 64},
                        {"resolution_type", "pixel"},
                        {"cache_dir_vae", "cache/vae-broken"},
                        {"video", {{"num_frames", 17}}}});
    st_test::write_text(env.root / "with_broken.json", datasets.dump(2));
    auto r = env.run(
        env.config("empty_dataset", {{"data_backend_config", (env.root / "with_broken.json").string()}}));
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.log.find("dataset 'broken' (video) yields no usable sample: 1 file(s) skipped; first:"),
              std::string::npos)
        << r.log;
    EXPECT_FALSE(fs::exists(env.root / "empty_dataset" / "metrics.jsonl"));
    // Every media dataset disabled: said as such (was: "no batch ... every aspect bucket has fewer
    // samples than train_batch_size").
    auto disabled = nlohmann::json::parse(st_test::read_text(env.root / "multidatabackend.json"));
    disabled[0]["disabled"] = true;
    st_test::write_text(env.root / "all_disabled.json", disabled.dump(2));
    r = env.run(
        env.config("all_disabled", {{"data_backend_config", (env.root / "all_disabled.json").string()}}));
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.log.find("no enabled video or image dataset yields a sample"), std::string::npos) << r.log;
}

TEST(TrainerTest, ValidationSettingsTheModelCannotRenderFailBeforeCaching) {
    // Validation every 100 steps of a 2-step run renders only at the end: a setting the model cannot
    // render was found only after training (exit 1 after all the work); now at start, naming the key.
    auto& env = TrainEnv::get();
    const nlohmann::json validation = {{"validation_prompt", "a cat"},
                                       {"validation_step_interval", 100},
                                       {"validation_num_inference_steps", 1},
                                       {"max_train_steps", 2}};
    auto frames = validation;
    frames["validation_num_video_frames"] = 6;
    frames["validation_resolution"] = "32x32";
    auto r = env.run(env.config("bad_validation_frames", frames));
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.log.find("validation_num_video_frames = 6, validation_resolution = 32x32: model.wan@1 cannot "
                         "render it (a Wan video needs 4k+1 frames"),
              std::string::npos)
        << r.log;
    EXPECT_EQ(r.log.find("steps:"), std::string::npos) << "refused only after training: " << r.log;
    auto skip = validation;
    skip["validation_guidance"] = 5.0;
    skip["validation_guidance_skip_layers"] = {9};
    r = env.run(env.config("bad_validation_skip", skip));
    EXPECT_NE(r.code, 0);
    EXPECT_NE(
        r.log.find("validation_guidance_skip_layers = [9]: block 9 does not exist in model.wan@1 (blocks "
                   "0 .. 1)"),
        std::string::npos)
        << r.log;
    auto audio = validation;
    st_test::write_text(env.root / "voice.wav", "not read: refused before");
    audio["validation_audio"] = (env.root / "voice.wav").string();
    r = env.run(env.config("bad_validation_audio", audio));
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.log.find("voice.wav: model.wan@1 takes no audio"), std::string::npos) << r.log;
    EXPECT_EQ(r.log.find("steps:"), std::string::npos) << "refused only after training: " << r.log;
    EXPECT_FALSE(fs::exists(env.root / "bad_validation_frames" / "metrics.jsonl"));
    EXPECT_FALSE(fs::exists(env.root / "bad_validation_skip" / "metrics.jsonl"));
}

TEST(TrainerTest, AnAudioDatasetOnAFamilyWithoutAudioFailsBeforeAnyCaching) {
    // The fixture clips have no audio stream: every sample used to be skipped for it and the run ended
    // on "yields no usable sample ... S2V needs audio" after discovery, not on the real problem.
    auto& env = TrainEnv::get();
    auto datasets = nlohmann::json::parse(st_test::read_text(env.root / "multidatabackend.json"));
    datasets[0]["audio"] = {{"auto_split", true}};
    datasets[0]["cache_dir_vae"] = "cache/vae-audio";
    st_test::write_text(env.root / "with_audio.json", datasets.dump(2));
    auto r = env.run(
        env.config("audio_on_wan", {{"data_backend_config", (env.root / "with_audio.json").string()}}));
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.log.find("dataset 'clips_audio' has audio, but the model takes no audio"), std::string::npos)
        << r.log;
    EXPECT_EQ(r.log.find("yields no usable sample"), std::string::npos) << r.log;
    EXPECT_FALSE(fs::exists(env.root / "cache" / "vae-audio")) << "nothing cached";
}

TEST(TrainerTest, AHubIdAsTheModelPathSaysStDoesNotDownload) {
    // pretrained_model_name_or_path said only "does not exist"; every model path key now gives the
    // same message (one function, st/model_path.h), the Wan plugin's keys included.
    auto& env = TrainEnv::get();
    const std::string id = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers";
    for (const char* key : {"pretrained_model_name_or_path", "pretrained_transformer_model_name_or_path",
                            "pretrained_vae_model_name_or_path", "pretrained_t5_model_name_or_path"}) {
        auto r = env.run(env.config(std::string("hub_") + key, {{key, id}}), "",
                         "HF_HUB_CACHE='" + (env.root / "no-hf-cache").string() + "' ");
        EXPECT_NE(r.code, 0) << key;
        EXPECT_NE(r.log.find(std::string(key) + " '" + id +
                             "' looks like a Hugging Face hub id, but st does not download models, and the "
                             "local Hugging Face cache"),
                  std::string::npos)
            << key << "\n"
            << r.log;
        EXPECT_NE(r.log.find("has no snapshot of it (models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers/snapshots/"),
                  std::string::npos)
            << r.log;
        EXPECT_NE(r.log.find("download it (e.g. `huggingface-cli download " + id + " --local-dir DIR`)"),
                  std::string::npos)
            << r.log;
    }
    const auto prepare =
        st_test::shell(st_test::host_prefix() + "prepare '" +
                       env.config("hub_prepare", {{"pretrained_model_name_or_path", id}}).string() + "'");
    EXPECT_NE(prepare.code, 0);
    EXPECT_NE(prepare.out.find("pretrained_model_name_or_path '" + id + "' looks like a Hugging Face hub id"),
              std::string::npos)
        << prepare.out;
}

TEST(TrainerTest, AHubIdWithASnapshotInTheLocalHuggingFaceCacheUsesIt) {
    // SimpleTuner users' models sit in ~/.cache/huggingface/hub/models--Org--Name/snapshots/<rev>/.
    auto& env = TrainEnv::get();
    const fs::path cache = env.root / "hf-cache";
    const fs::path repo = cache / "models--Tiny-Org--tiny-wan";
    fs::create_directories(repo / "refs");
    fs::create_directories(repo / "snapshots" / "0000old");
    st_test::write_text(repo / "refs" / "main", "abc123\n");
    fs::create_directory_symlink(env.root / "model", repo / "snapshots" / "abc123");
    auto r = env.run(env.config("hub_cached", {{"pretrained_model_name_or_path", "Tiny-Org/tiny-wan"},
                                               {"pretrained_vae_model_name_or_path", "Tiny-Org/tiny-wan"},
                                               {"max_train_steps", 1}}),
                     "", "HF_HUB_CACHE='" + cache.string() + "' ");
    ASSERT_EQ(r.code, 0) << r.log;
    for (const char* key : {"pretrained_model_name_or_path", "pretrained_vae_model_name_or_path"})
        EXPECT_NE(r.log.find(std::string(key) +
                             " 'Tiny-Org/tiny-wan': using the local Hugging Face cache snapshot " +
                             (repo / "snapshots" / "abc123").string()),
                  std::string::npos)
            << key << "\n"
            << r.log;
}

TEST(TrainerTest, OutputDirThatCannotBeCreatedIsNamed) {
    auto& env = TrainEnv::get();
    st_test::write_text(env.root / "a_file", "x");
    auto r = env.run(env.config("unwritable", {{"output_dir", (env.root / "a_file" / "out").string()}}));
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.log.find("a_file/out"), std::string::npos) << r.log;
}

TEST(TrainerTest, NetworkReportersFallBackToTheLocalFileWithAMessage) {
    auto& env = TrainEnv::get();
    auto r = env.run(env.config("wandb", {{"max_train_steps", 1}, {"report_to", "wandb"}}));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("report_to = wandb needs a network service"), std::string::npos) << r.log;
    EXPECT_EQ(st_test::read_jsonl(env.root / "wandb" / "metrics.jsonl").size(), 1u);
}

TEST(TrainerTest, CaptionDropoutTrainsOnTheEmptyCaption) {
    auto& env = TrainEnv::get();
    auto r = env.run(env.config("dropout", {{"max_train_steps", 4}, {"caption_dropout_probability", 1.0}}));
    ASSERT_EQ(r.code, 0) << r.log;
    for (const auto& l : st_test::read_jsonl(env.root / "dropout" / "metrics.jsonl"))
        EXPECT_EQ(l["captions_dropped"], l["samples"]) << l.dump();
    auto r2 = env.run(env.config("nodropout", {{"max_train_steps", 4}}));
    ASSERT_EQ(r2.code, 0) << r2.log;
    for (const auto& l : st_test::read_jsonl(env.root / "nodropout" / "metrics.jsonl"))
        EXPECT_EQ(l["captions_dropped"], 0) << l.dump();
}

}  // namespace

namespace {

TEST(TrainerTest, Bf16WithTheDefaultOptimizerAndCustomTargets) {
    auto& env = TrainEnv::get();
    // SimpleTuner's defaults: mixed_precision bf16 and optimizer adamw_bf16 (bf16 adapters).
    nlohmann::json c = {{"max_train_steps", 3},
                        {"mixed_precision", "bf16"},
                        {"optimizer", "adamw_bf16"},
                        {"lora_target_modules", {"to_q"}}};
    auto r = env.run(env.config("bf16", c));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("optim.adamw_bf16@1"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("4 adapters on [to_q]"), std::string::npos) << r.log;
    auto lora = st::sdk::SafetensorsFile::open(env.root / "bf16" / "pytorch_lora_weights.safetensors");
    EXPECT_EQ(lora->infos().size(), 12u);  // 2 blocks x (self q, cross q) x (A, B, alpha)
    EXPECT_EQ(lora->info("diffusion_model.blocks.0.self_attn.q.lora_A.weight").dtype, "BF16");
    for (const auto& l : st_test::read_jsonl(env.root / "bf16" / "metrics.jsonl"))
        EXPECT_TRUE(std::isfinite(l["loss"].get<double>()));
    // SimpleTuner's JSON-list-as-a-string form of peft_lora_target_modules selects the same modules.
    c["lora_target_modules"] = nullptr;
    c["peft_lora_target_modules"] = "[\"to_q\"]";
    auto r2 = env.run(env.config("bf16_peft", c));
    ASSERT_EQ(r2.code, 0) << r2.log;
    EXPECT_NE(r2.log.find("4 adapters on [to_q]"), std::string::npos) << r2.log;
}

}  // namespace

namespace {

fs::path i2v_model(const TrainEnv& env) {
    const fs::path model = env.root / "model_i2v";
    if (!fs::exists(model / "model_index.json")) {
        const auto made = st_test::shell(st_test::host_prefix() +
                                         "make-model --plugin wan --preset tiny-i2v --seed 4 --out '" +
                                         model.string() + "'");
        if (made.code != 0) throw std::runtime_error("make-model tiny-i2v failed: " + made.out);
    }
    return model;
}

TEST(TrainerTest, ImageToVideoTrainsOnCachedFirstFrameConditioningAndValidates) {
    // Wan 2.2 I2V layout (make-model tiny-i2v): the data backend caches the first-frame conditioning
    // latents next to the latents (encode_video), predict concatenates them, and validation takes
    // the first frame of a training video as its image (no validation_image set).
    auto& env = TrainEnv::get();
    const fs::path model = i2v_model(env);
    const fs::path datasets = env.write_datasets("i2v.json", (env.root / "cache-i2v").string());
    auto r = env.run(env.config("i2v", {{"pretrained_model_name_or_path", model.string()},
                                        {"data_backend_config", datasets.string()},
                                        {"max_train_steps", 4},
                                        {"compress_disk_cache", false},
                                        {"validation_step_interval", 4},
                                        {"validation_prompt", "a test pattern"},
                                        {"validation_num_video_frames", 5},
                                        {"validation_resolution", "32x32"},
                                        {"validation_num_inference_steps", 2},
                                        {"validation_guidance", 1.0}}));
    ASSERT_EQ(r.code, 0) << r.log;
    size_t steps = 0;
    for (const auto& l : st_test::read_jsonl(env.root / "i2v" / "metrics.jsonl"))
        if (l.contains("timesteps")) ++steps;
    EXPECT_EQ(steps, 4u);
    // The cache holds both tensors for every sample.
    size_t with_conditioning = 0;
    for (const auto& e : fs::recursive_directory_iterator(env.root / "cache-i2v" / "vae")) {
        if (e.path().extension() != ".safetensors") continue;
        const std::string bytes = st_test::read_text(e.path());
        if (bytes.find("conditioning_latents") != std::string::npos) ++with_conditioning;
    }
    EXPECT_EQ(with_conditioning, 8u);
    EXPECT_NE(r.log.find("validation reference sample"), std::string::npos) << r.log;
    EXPECT_TRUE(fs::exists(env.root / "i2v" / "validation" / "step_4_validation.mp4")) << r.log;
}

TEST(TrainerTest, ImageToVideoTrainsWithCrepa) {
    // CREPA on the I2V model (its tap holds the video tokens of the channel-concatenated input).
    auto& env = TrainEnv::get();
    const fs::path model = i2v_model(env);
    const fs::path datasets = env.write_datasets("i2v_crepa.json", (env.root / "cache-i2v-crepa").string());
    auto r = env.run(env.config(
        "i2v_crepa", {{"pretrained_model_name_or_path", model.string()},
                      {"data_backend_config", datasets.string()},
                      {"max_train_steps", 2},
                      {"crepa_enabled", true},
                      {"crepa_block_index", 1},
                      {"crepa_encoder", (fs::path(ST_TEST_GOLDEN_DIR) / "dinov2" / "vits_style").string()},
                      {"crepa_encoder_image_size", 8}}));
    ASSERT_EQ(r.code, 0) << r.log;
    const auto lines = st_test::read_jsonl(env.root / "i2v_crepa" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 2u);
    for (const auto& l : lines) EXPECT_TRUE(l["loss_terms"].contains("crepa_loss")) << l.dump();
}

TEST(TrainerTest, EvalDatasetsAreHeldOutLoggedPerDatasetAndFeedValidationByEvalDatasetId) {
    // A `dataset_type: eval` dataset: the evaluation loss runs on it (loss/val and loss/val/held) and
    // eval_dataset_id makes its first clip the I2V validation image, with validation_using_datasets
    // taking precedence over validation_image.
    auto& env = TrainEnv::get();
    const fs::path model = i2v_model(env);
    const fs::path held = env.root / "held_data";
    fs::create_directories(held);
    for (const char* name : {"h0", "h1"}) {
        const fs::path clip = held / (std::string(name) + ".mp4");
        const auto made = st_test::shell(
            "ffmpeg -nostdin -v error -y -f lavfi -i testsrc=size=128x96:rate=16 "
            "-t 1.2 -pix_fmt yuv420p -vf hflip '" +
            clip.string() + "'");
        ASSERT_EQ(made.code, 0) << made.out;
        st_test::write_text(fs::path(clip).replace_extension(".txt"), "a mirrored test pattern");
    }
    nlohmann::json datasets =
        nlohmann::json::parse(st_test::read_text(env.write_datasets("eval.json", "cache-eval")));
    datasets.push_back({{"id", "held"},
                        {"type", "local"},
                        {"dataset_type", "eval"},
                        {"instance_data_dir", held.string()},
                        {"caption_strategy", "textfile"},
                        {"resolution", 64},
                        {"resolution_type", "pixel"},
                        {"crop", true},
                        {"crop_aspect", "square"},
                        {"cache_dir_vae", (env.root / "cache-eval" / "held").string()},
                        {"video", {{"num_frames", 17}, {"min_frames", 17}}}});
    st_test::write_text(env.root / "eval.json", datasets.dump(2));
    auto r = env.run(env.config("eval", {{"pretrained_model_name_or_path", model.string()},
                                         {"data_backend_config", (env.root / "eval.json").string()},
                                         {"max_train_steps", 4},
                                         {"eval_steps_interval", 2},
                                         {"eval_timesteps", 3},
                                         {"num_eval_images", 4},
                                         {"validation_step_interval", 4},
                                         {"validation_prompt", "a test pattern"},
                                         {"validation_num_video_frames", 5},
                                         {"validation_resolution", "32x32"},
                                         {"validation_num_inference_steps", 2},
                                         {"validation_guidance", 1.0},
                                         {"validation_image", (env.root / "data" / "clip0.mp4").string()},
                                         {"validation_using_datasets", true},
                                         {"eval_dataset_id", "held"}}));
    ASSERT_EQ(r.code, 0) << r.log;
    std::vector<nlohmann::json> evals;
    for (const auto& l : st_test::read_jsonl(env.root / "eval" / "metrics.jsonl"))
        if (l.contains("loss/val")) evals.push_back(l);
    ASSERT_EQ(evals.size(), 2u);
    for (const auto& e : evals) {
        ASSERT_TRUE(e.contains("loss/val/held")) << e.dump();
        EXPECT_DOUBLE_EQ(e["loss/val/held"].get<double>(), e["loss/val"].get<double>());  // one eval dataset
        EXPECT_FALSE(e.contains("loss/val/clips")) << e.dump();
    }
    EXPECT_NE(r.log.find("on 2 held-out (dataset_type eval) sample(s)"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("held/h0.mp4"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("validation reference sample 'held/h0.mp4'"), std::string::npos) << r.log;
    EXPECT_TRUE(fs::exists(env.root / "eval" / "validation" / "step_4_validation.mp4")) << r.log;

    // eval_dataset_id naming a dataset without samples fails before training, naming the key.
    auto bad = env.run(env.config("eval_bad", {{"pretrained_model_name_or_path", model.string()},
                                               {"data_backend_config", (env.root / "eval.json").string()},
                                               {"max_train_steps", 1},
                                               {"validation_step_interval", 1},
                                               {"validation_prompt", "a test pattern"},
                                               {"validation_num_video_frames", 5},
                                               {"validation_resolution", "32x32"},
                                               {"validation_num_inference_steps", 1},
                                               {"eval_dataset_id", "nope"}}));
    EXPECT_NE(bad.code, 0);
    EXPECT_NE(bad.log.find("eval_dataset_id 'nope'"), std::string::npos) << bad.log;
}

TEST(TrainerTest, Wan21ImageToVideoTrainsWithCachedClipImageEmbeds) {
    // make-model tiny-i2v21: the CLIP image embeddings of each clip's first frame are cached with its
    // latents and conditioning latents; validation encodes its image the same way. tiny-flf2v21 (Wan 2.1
    // FLF2V) caches the first and the last frame's embeddings (2 x 17 tokens) and validates with the one
    // image as both frames.
    auto& env = TrainEnv::get();
    struct Case {
        const char* name;
        const char* preset;
        const char* flavour;
        int64_t image_tokens;
    };
    for (const Case& c : {Case{"i2v21", "tiny-i2v21", "i2v-14b-2.1", 17},
                          Case{"flf2v21", "tiny-flf2v21", "flf2v-14b-2.1", 34}}) {
        SCOPED_TRACE(c.name);
        const fs::path model = env.root / (std::string("model_") + c.name);
        const auto made = st_test::shell(st_test::host_prefix() + "make-model --plugin wan --preset " +
                                         c.preset + " --seed 4 --out '" + model.string() + "'");
        ASSERT_EQ(made.code, 0) << made.out;
        const fs::path cache = env.root / (std::string("cache-") + c.name);
        const fs::path datasets = env.write_datasets(std::string(c.name) + ".json", cache.string());
        auto r = env.run(env.config(c.name, {{"pretrained_model_name_or_path", model.string()},
                                             {"model_flavour", c.flavour},
                                             {"data_backend_config", datasets.string()},
                                             {"max_train_steps", 3},
                                             {"compress_disk_cache", false},
                                             {"validation_step_interval", 3},
                                             {"validation_prompt", "a test pattern"},
                                             {"validation_image", (env.root / "data" / "clip1.mp4").string()},
                                             {"validation_num_video_frames", 5},
                                             {"validation_resolution", "32x32"},
                                             {"validation_num_inference_steps", 2},
                                             {"validation_guidance", 1.0}}));
        ASSERT_EQ(r.code, 0) << r.log;
        size_t with_embeds = 0;
        for (const auto& e : fs::recursive_directory_iterator(cache / "vae")) {
            if (e.path().extension() != ".safetensors") continue;
            auto file = st::sdk::SafetensorsFile::open(e.path());
            if (!file->contains("image_embeds") || !file->contains("conditioning_latents")) continue;
            ++with_embeds;
            const auto& shape = file->info("image_embeds").shape;  // per sample: [tokens, D]
            EXPECT_EQ(shape.at(shape.size() - 2), c.image_tokens) << e.path();
        }
        EXPECT_EQ(with_embeds, 8u);
        EXPECT_TRUE(fs::exists(env.root / c.name / "validation" / "step_3_validation.mp4")) << r.log;
    }
}

}  // namespace
