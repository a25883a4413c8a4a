// Every network model.sanavideo@1 loads, checked through `st-host forward` against the goldens of its
// upstream code: the transformer (diffusers SanaVideoTransformer3DModel, tests/golden/sanavideo) and the
// Gemma-2 text encoder (transformers Gemma2Model, tests/golden/hf_gemma2), input and output tensor
// names as the goldens have them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "../common/golden_tolerance.h"
#include "../common/host_process.h"

namespace {

namespace fs = std::filesystem;
using st::test::allclose_manifest;
using st::test::golden;
using st::test::load_tensor;

fs::path scratch() {
    const fs::path p = fs::path(ST_TEST_BINARY_DIR) / "tmp-sana-forward" / std::to_string(::getpid());
    fs::create_directories(p);
    return p;
}

TEST(SanaForwardCli, TransformerComponentMatchesDiffusers) {
    const fs::path out = scratch() / "transformer.safetensors";
    const auto r = st_test::shell(st_test::host_prefix() + "forward --plugin sanavideo --model '" +
                                  golden("sanavideo").string() + "' --component transformer --inputs '" +
                                  golden("sanavideo/inputs.safetensors").string() + "' --output '" +
                                  out.string() + "' --pretrained_transformer_subfolder none");
    ASSERT_EQ(r.code, 0) << r.out;
    for (const char* name : {"out", "out_without_mask", "out_per_token_timestep"})
        EXPECT_TRUE(allclose_manifest(load_tensor(out, name),
                                      load_tensor(golden("sanavideo/outputs.safetensors"), name)))
            << name;
    fs::remove_all(out.parent_path());
}

TEST(SanaForwardCli, TextEncoderComponentMatchesTransformersGemma2) {
    // A pipeline folder whose text_encoder/ is the golden Gemma-2.
    const fs::path model = scratch() / "model";
    fs::create_directories(model / "text_encoder");
    for (const char* f : {"config.json", "model.safetensors"})
        fs::copy_file(golden(std::string("hf_gemma2/") + f), model / "text_encoder" / f);
    const fs::path out = model.parent_path() / "gemma.safetensors";
    const auto r =
        st_test::shell(st_test::host_prefix() + "forward --plugin sanavideo --model '" + model.string() +
                       "' --component text_encoder --inputs '" +
                       golden("hf_gemma2/inputs.safetensors").string() + "' --output '" + out.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    const fs::path ref = golden("hf_gemma2/outputs.safetensors");
    const st::test::Tolerance tol{1e-4, 1e-4, 1.0};  // case.json: |d| <= 1e-4 + 1e-4 |ref|
    for (const char* name : {"last_hidden_state", "hidden_states_0", "hidden_states_1", "hidden_states_2",
                             "hidden_states_3", "hidden_states_4"})
        EXPECT_TRUE(allclose_manifest(load_tensor(out, name), load_tensor(ref, name), tol)) << name;
    fs::remove_all(model.parent_path());
}

TEST(SanaForwardCli, UnknownComponentIsNamed) {
    const auto r = st_test::shell(st_test::host_prefix() + "forward --plugin sanavideo --model '" +
                                  golden("sanavideo").string() + "' --component image_encoder --inputs '" +
                                  golden("sanavideo/inputs.safetensors").string() + "' --output /dev/null");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.out.find("transformer, text_encoder, vae_encode, vae_decode"), std::string::npos) << r.out;
}

}  // namespace
