// CheckpointStore in process: st deletes, prunes, replaces and resumes only the checkpoint folders it
// wrote (st manifest, or its in-progress marker in a -tmp folder); SimpleTuner's checkpoint-<step>
// folders (with or without its list-shaped manifest) and anything else named checkpoint-* are listed
// as foreign and left untouched. Resume verifies every file's size and content checksum (XXH64); a
// manifest from before checksums is still read, by size.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <unistd.h>

#include "st/error.h"
#include "train/checkpoint_store.h"
#include "train/simpletuner_checkpoint.h"

namespace {

namespace fs = std::filesystem;
using st::host::train::CheckpointStore;

void write(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
}

fs::path scratch(const std::string& name) {
    const fs::path d =
        fs::temp_directory_path() / ("st_test_ckpt_store_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

// A SimpleTuner checkpoint as save_hooks.py + accelerate leave it: LoRA weights, accelerate state,
// training_state.json, a manifest whose "files" is a list, the .guard written last.
void simpletuner_checkpoint(const fs::path& dir) {
    write(dir / "pytorch_lora_weights.safetensors", "lora");
    write(dir / "optimizer.bin", "opt");
    write(dir / "random_states_0.pkl", "rng");
    write(dir / "training_state.json", R"({"global_step": 1000, "epoch_step": 3})");
    write(dir / "checkpoint_manifest.json", R"({"files": ["optimizer.bin", "training_state.json"]})");
    write(dir / ".guard", "complete");
}

void st_checkpoint(CheckpointStore& store, int64_t step) {
    store.write(step, [](const fs::path& d) { write(d / "weights.bin", "w"); });
}

TEST(CheckpointStoreTest, ForeignCheckpointsAreListedNeverPrunedNorCounted) {
    const fs::path root = scratch("prune");
    simpletuner_checkpoint(root / "checkpoint-1000");
    simpletuner_checkpoint(root / "checkpoint-5");
    write(root / "checkpoint-7" / "notes.txt", "someone's files");     // no manifest at all
    write(root / "checkpoint-900-tmp" / "optimizer.bin", "opt");       // SimpleTuner's tempdir
    write(root / "checkpoint-best" / "model.safetensors", "weights");  // not a step name
    CheckpointStore store(root);
    for (int64_t step : {2, 4, 6, 8}) {
        st_checkpoint(store, step);
        store.prune(2, step);
    }
    const auto complete = store.complete();
    ASSERT_EQ(complete.size(), 2u);
    EXPECT_EQ(complete[0].step, 6);
    EXPECT_EQ(complete[1].step, 8);
    EXPECT_EQ(store.latest()->step, 8);
    for (const char* kept :
         {"checkpoint-1000", "checkpoint-5", "checkpoint-7", "checkpoint-900-tmp", "checkpoint-best"})
        EXPECT_TRUE(fs::exists(root / kept)) << kept << " was deleted";
    EXPECT_TRUE(fs::exists(root / "checkpoint-1000" / ".guard"));
    const auto foreign = store.foreign();
    ASSERT_EQ(foreign.size(), 5u);
    std::map<std::string, std::string> writer;
    for (const auto& f : foreign) writer[f.dir.filename().string()] = f.writer;
    EXPECT_EQ(writer["checkpoint-1000"], "SimpleTuner");
    EXPECT_EQ(writer["checkpoint-900-tmp"], "SimpleTuner");
    EXPECT_EQ(writer["checkpoint-7"], "another program");
    EXPECT_TRUE(store.partial().empty());
    fs::remove_all(root);
}

TEST(CheckpointStoreTest, OnlyStsOwnLeftoversArePartialAndDeleted) {
    const fs::path root = scratch("partial");
    CheckpointStore store(root);
    st_checkpoint(store, 3);
    // A crash inside fill(): st's marker is in the -tmp folder.
    EXPECT_THROW(store.write(4,
                             [](const fs::path& d) {
                                 write(d / "half.bin", "h");
                                 throw std::runtime_error("disk full");
                             }),
                 st::Error);
    EXPECT_FALSE(fs::exists(root / "checkpoint-4-tmp"));
    // What a kill -9 leaves: the marker and some files; and an empty -tmp of a kill before the marker.
    write(root / "checkpoint-5-tmp" / ".st-checkpoint-in-progress", "st");
    write(root / "checkpoint-5-tmp" / "weights.bin", "w");
    fs::create_directories(root / "checkpoint-6-tmp");
    simpletuner_checkpoint(root / "checkpoint-7-tmp");
    // A kill between a prune's last two removals leaves an empty checkpoint-N (found by a flaky kill -9
    // test that counted it as a third checkpoint kept forever).
    fs::create_directories(root / "checkpoint-2");
    const auto partial = store.partial();
    ASSERT_EQ(partial.size(), 3u);
    EXPECT_EQ(partial[0].filename(), "checkpoint-2");
    EXPECT_EQ(partial[1].filename(), "checkpoint-5-tmp");
    EXPECT_EQ(partial[2].filename(), "checkpoint-6-tmp");
    store.prune(5, 3);
    EXPECT_FALSE(fs::exists(root / "checkpoint-2"));
    EXPECT_FALSE(fs::exists(root / "checkpoint-5-tmp"));
    EXPECT_FALSE(fs::exists(root / "checkpoint-6-tmp"));
    EXPECT_TRUE(fs::exists(root / "checkpoint-7-tmp" / ".guard"));
    EXPECT_TRUE(fs::exists(root / "checkpoint-3" / "checkpoint_manifest.json"));
    fs::remove_all(root);
}

TEST(CheckpointStoreTest, AForeignCheckpointOfTheSameStepIsNeverReplaced) {
    const fs::path root = scratch("collide");
    simpletuner_checkpoint(root / "checkpoint-10");
    CheckpointStore store(root);
    try {
        st_checkpoint(store, 10);
        FAIL() << "replaced a SimpleTuner checkpoint";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("written by SimpleTuner, not st"), std::string::npos)
            << e.what();
    }
    EXPECT_TRUE(fs::exists(root / "checkpoint-10" / "optimizer.bin"));
    EXPECT_FALSE(fs::exists(root / "checkpoint-10-tmp"));
    // st's own checkpoint of the same step is replaced (a stop right after resuming saves again).
    st_checkpoint(store, 11);
    store.write(11, [](const fs::path& d) { write(d / "weights.bin", "second"); });
    std::ifstream in(root / "checkpoint-11" / "weights.bin");
    std::string text;
    in >> text;
    EXPECT_EQ(text, "second");
    fs::remove_all(root);
}

TEST(CheckpointStoreTest, VerifyingAForeignCheckpointSaysWhoseItIs) {
    const fs::path root = scratch("verify");
    simpletuner_checkpoint(root / "checkpoint-1000");
    try {
        CheckpointStore::verify(root / "checkpoint-1000");
        FAIL() << "verified a SimpleTuner checkpoint";
    } catch (const st::Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("written by SimpleTuner, not st: it has no st manifest"), std::string::npos)
            << msg;
        EXPECT_EQ(msg.find("no 'files' object"), std::string::npos) << msg;
    }
    write(root / "checkpoint-3" / "x.bin", "x");
    try {
        CheckpointStore::verify(root / "checkpoint-3");
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("checkpoint_manifest.json is missing"), std::string::npos)
            << e.what();
    }
    fs::remove_all(root);
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

TEST(CheckpointStoreTest, AFileChangedAfterTheSaveIsFoundByItsChecksum) {
    const fs::path root = scratch("checksum");
    CheckpointStore store(root);
    store.write(4, [](const fs::path& d) {
        write(d / "optimizer.safetensors", std::string(64, 'o'));
        write(d / "ema" / "state.bin", "ema");
    });
    const fs::path dir = root / "checkpoint-4";
    const auto manifest = nlohmann::json::parse(std::ifstream(dir / "checkpoint_manifest.json"));
    EXPECT_EQ(manifest["xxh64"]["ema/state.bin"].get<std::string>().size(), 16u) << manifest.dump();
    EXPECT_EQ(error_of([&] { CheckpointStore::verify(dir); }), "");
    // Same size, other bytes (a NaN written over a value): sizes alone cannot tell.
    {
        std::fstream f(dir / "optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(20);
        f.write("\x00\x00\xc0\x7f", 4);
    }
    const std::string err = error_of([&] { CheckpointStore::verify(dir); });
    EXPECT_NE(err.find("checkpoint " + dir.string() + " is damaged: optimizer.safetensors has the checksum"),
              std::string::npos)
        << err;
    EXPECT_NE(err.find(manifest["xxh64"]["optimizer.safetensors"].get<std::string>()), std::string::npos)
        << err;
    fs::remove_all(root);
}

TEST(CheckpointStoreTest, AManifestFromBeforeChecksumsIsCheckedBySize) {
    const fs::path root = scratch("old_manifest");
    CheckpointStore store(root);
    st_checkpoint(store, 2);
    const fs::path dir = root / "checkpoint-2";
    auto manifest = nlohmann::json::parse(std::ifstream(dir / "checkpoint_manifest.json"));
    manifest.erase("xxh64");
    std::ofstream(dir / "checkpoint_manifest.json") << manifest.dump(2);
    EXPECT_EQ(error_of([&] { CheckpointStore::verify(dir); }), "");
    write(dir / "weights.bin", "ww");
    EXPECT_NE(error_of([&] {
                  CheckpointStore::verify(dir);
              }).find("weights.bin has 2 bytes but the manifest says 1"),
              std::string::npos);
    EXPECT_EQ(CheckpointStore::manifest_bytes(dir), 1u);
    // A manifest naming a file outside the checkpoint is refused before anything reads it.
    manifest["files"] = {{"../../etc/passwd", 1}};
    std::ofstream(dir / "checkpoint_manifest.json") << manifest.dump(2);
    EXPECT_NE(error_of([&] { CheckpointStore::verify(dir); }).find("is not a file inside the checkpoint"),
              std::string::npos);
    fs::remove_all(root);
}

// SimpleTuner's optimizer.bin (written here by torch.save, as accelerate does) mapped onto st's state:
// parameter i of the optimizer is st's parameter i of the module order; per-parameter step from the
// entry (AdamW), the group (torch-optimi) or the global step (Lion); floating state in the parameter's
// dtype; bitsandbytes' state1/absmax1 under st's 8-bit names; counts and shapes checked by index.
void torch_save(const fs::path& file, const std::string& python_dict) {
    const fs::path script = file.parent_path() / "write.py";
    write(script, "import torch\ntorch.save(" + python_dict + ", '" + file.string() + "')\n");
    ASSERT_EQ(std::system(("/usr/bin/python3 '" + script.string() + "'").c_str()), 0) << python_dict;
}

TEST(SimpleTunerCheckpointTest, OptimizerStateMapsByModuleOrderWithStepsDtypesAndNames) {
    using namespace st::host::train;
    const fs::path dir = scratch("simpletuner_optimizer") / "checkpoint-40";
    write(dir / "pytorch_lora_weights.safetensors", "lora");
    write(dir / "training_state.json", R"({"global_step": 40, "epoch_step": 7, "epoch": 3, "repeats": {}})");
    torch_save(dir / "optimizer.bin", R"({
      "state": {
        0: {"step": torch.tensor(40.0), "exp_avg": torch.arange(6.0).reshape(2, 3).bfloat16(),
            "exp_avg_sq": torch.full((2, 3), 0.25), "accumulated_decay": 0.125},
        2: {"state1": torch.arange(8, dtype=torch.uint8).reshape(2, 4), "absmax1": torch.tensor([3.0]),
            "qmap1": torch.linspace(-1, 1, 256), "step": 38},
        3: {"exp_avg": torch.ones(5), "kahan_comp": None}},
      "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1, 2]},
                       {"lr": 1e-4, "step": torch.tensor(39, dtype=torch.int32), "params": [3]}]})");
    const SimpleTunerCheckpoint ck = read_simpletuner_checkpoint(dir);
    EXPECT_EQ(ck.global_step, 40);
    EXPECT_EQ(ck.epoch, 3);
    EXPECT_EQ(ck.epoch_step, 7);
    ASSERT_EQ(ck.optimizer.params.size(), 4u);
    const std::vector<std::pair<std::string, at::Tensor>> order = {
        {"a.lora_A.weight", at::zeros({2, 3})},
        {"a.lora_B.weight", at::zeros({3, 2})},
        {"b.lora_A.weight", at::zeros({2, 4})},
        {"b.lora_B.weight", at::zeros({5}, at::kBFloat16)}};
    st::sdk::StateDict fresh;
    fresh.meta = {{"optimizer", "optim.adamw@1"}, {"groups", nlohmann::json::array({{{"lr", 1e-4}}})}};
    const st::sdk::StateDict got = translate_optimizer_state(ck.optimizer, fresh, order, 40);
    EXPECT_EQ(got.meta["optimizer"], "optim.adamw@1");
    const auto& params = got.meta["params"];
    ASSERT_EQ(params.size(), 3u) << params.dump() << ": the parameter that never stepped has no state";
    EXPECT_EQ(params["a.lora_A.weight"]["step"], 40);
    EXPECT_EQ(params["a.lora_A.weight"]["scalars"]["accumulated_decay"], 0.125);
    EXPECT_EQ(params["b.lora_A.weight"]["step"], 38);
    EXPECT_EQ(params["b.lora_B.weight"]["step"], 39) << "torch-optimi's group step";
    const at::Tensor m = got.tensors.at("a.lora_A.weight::exp_avg");
    EXPECT_EQ(m.scalar_type(), at::kFloat);
    EXPECT_TRUE(m.equal(at::arange(6.0).reshape({2, 3})));
    EXPECT_TRUE(got.tensors.at("a.lora_A.weight::exp_avg_sq").equal(at::full({2, 3}, 0.25)));
    const at::Tensor q = got.tensors.at("b.lora_A.weight::exp_avg.q");
    EXPECT_EQ(q.scalar_type(), at::kByte);
    EXPECT_TRUE(q.equal(at::arange(8, at::kByte)));
    EXPECT_TRUE(got.tensors.at("b.lora_A.weight::exp_avg.absmax").equal(at::tensor({3.0f})));
    EXPECT_EQ(got.tensors.count("b.lora_A.weight::qmap1"), 0u);
    EXPECT_EQ(got.tensors.at("b.lora_B.weight::exp_avg").scalar_type(), at::kBFloat16);
    EXPECT_EQ(got.tensors.count("b.lora_B.weight::kahan_comp"), 0u);
    EXPECT_EQ(got.tensors.size(), 5u);

    // Another module order or another LoRA shape: named by index, with the way out.
    auto swapped = order;
    std::swap(swapped[0], swapped[1]);
    const std::string shape = error_of([&] { translate_optimizer_state(ck.optimizer, fresh, swapped, 40); });
    EXPECT_NE(shape.find("optimizer.bin's parameter #0 has 'exp_avg' of shape [2, 3] but st's parameter #0 "
                         "(a.lora_B.weight) is [3, 2]"),
              std::string::npos)
        << shape;
    EXPECT_NE(shape.find("init_lora " + (dir / "pytorch_lora_weights.safetensors").string()),
              std::string::npos)
        << shape;
    const std::string count = error_of([&] {
        translate_optimizer_state(ck.optimizer, fresh, {order.begin(), order.begin() + 3}, 40);
    });
    EXPECT_NE(count.find("optimizer.bin holds 4 parameters but st trains 3"), std::string::npos) << count;
    fs::remove_all(dir.parent_path());
}

TEST(SimpleTunerCheckpointTest, WhatCannotBeReadIsNamedWithTheWayOut) {
    using namespace st::host::train;
    const fs::path dir = scratch("simpletuner_bad") / "checkpoint-1000";
    simpletuner_checkpoint(dir);
    const std::string junk = error_of([&] { read_simpletuner_checkpoint(dir); });
    EXPECT_NE(junk.find("checkpoint-1000 (written by SimpleTuner): optimizer.bin: '" +
                        (dir / "optimizer.bin").string() + "' is not a zip-format torch.save() file"),
              std::string::npos)
        << junk;
    EXPECT_NE(junk.find("set init_lora " + (dir / "pytorch_lora_weights.safetensors").string() +
                        " and resume_from_checkpoint none"),
              std::string::npos)
        << junk;
    torch_save(dir / "optimizer.bin", "[1, 2]");
    EXPECT_NE(
        error_of([&] { read_simpletuner_checkpoint(dir); }).find("does not hold an optimizer state dict"),
        std::string::npos);
    write(dir / "training_state.json", R"({"global_step": -3})");
    EXPECT_NE(error_of([&] {
                  read_simpletuner_checkpoint(dir);
              }).find("training_state.json: 'global_step' is -3, expected a non-negative integer"),
              std::string::npos);
    fs::remove(dir / "pytorch_lora_weights.safetensors");
    write(dir / "training_state.json", R"({"global_step": 3})");
    const std::string full = error_of([&] { read_simpletuner_checkpoint(dir); });
    EXPECT_NE(full.find("it has no pytorch_lora_weights.safetensors"), std::string::npos) << full;
    EXPECT_NE(full.find("holds no pytorch_lora_weights.safetensors st could start from"), std::string::npos)
        << full;
    fs::remove_all(dir.parent_path());
}

}  // namespace
