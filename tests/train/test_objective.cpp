// Objective in process on a fake model (velocity = w * noisy): the loss is SimpleTuner's flow matching
// computed here independently from the same generator draws (noise first, then sigmas), the model gets
// every batch tensor but the latents, gradients reach the model, and the evaluation loss at a fixed
// sigma matches the formula.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "fake_parts.h"
#include "st/error.h"
#include "train/objective.h"

namespace {

using st::host::train::Objective;

st::sdk::Batch batch_of(int64_t b) {
    st::sdk::Batch batch;
    for (int64_t i = 0; i < b; ++i) {
        st::sdk::SampleRef s;
        s.dataset_id = "d";
        s.id = std::to_string(i);
        batch.samples.push_back(s);
    }
    batch.tensors["latents"] = at::arange(b * 8, at::kFloat).view({b, 2, 1, 2, 2}) / 10.0;
    batch.tensors["prompt_embeds"] = at::ones({b, 3, 4});
    batch.tensors["image_latents"] = at::ones({b, 2, 1, 2, 2});
    return batch;
}

}  // namespace

TEST(ObjectiveTest, TrainingLossIsFlowMatchingOnTheGeneratorsDraws) {
    st_test::FakeFamily* family = nullptr;
    auto model = st_test::fake_model(&family);
    st::sdk::FlowSigmaOptions sigmas;
    sigmas.shift = 3.0;
    Objective objective(*model, sigmas, at::kCPU);
    const auto batch = batch_of(3);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
    const auto r = objective.training_loss(batch, gen);

    // The same draws by hand: noise, then sigmas; noisy = (1 - s) x0 + s n; target = n - x0.
    at::Generator ref_gen = at::make_generator<at::CPUGeneratorImpl>(7);
    const at::Tensor x0 = batch.tensors.at("latents");
    const at::Tensor noise = at::randn(x0.sizes(), ref_gen, x0.options());
    const at::Tensor s = st::sdk::sample_flow_sigmas(3, sigmas, x0.sizes(), ref_gen);
    const at::Tensor sb = s.view({3, 1, 1, 1, 1});
    const at::Tensor noisy = (1 - sb) * x0 + sb * noise;
    const double expected = (0.5 * noisy - (noise - x0)).pow(2).mean().item<double>();
    EXPECT_NEAR(r.loss.item<double>(), expected, 1e-6);
    EXPECT_NEAR(r.terms.at("flow_matching").item<double>(), expected, 1e-6);
    EXPECT_TRUE(at::allclose(r.timesteps, s * 1000.0));
    EXPECT_TRUE(at::allclose(family->last_timesteps, s * 1000.0));
    EXPECT_EQ(family->seen, (std::vector<std::string>{"image_latents", "prompt_embeds"}));
    r.loss.backward();
    ASSERT_TRUE(family->trainable().parameters()[0].grad().defined());
    EXPECT_NE(family->trainable().parameters()[0].grad().item<double>(), 0.0);
}

TEST(ObjectiveTest, EvalLossAtAFixedSigmaAndTheMissingLatentsError) {
    st_test::FakeFamily* family = nullptr;
    auto model = st_test::fake_model(&family);
    Objective objective(*model, {}, at::kCPU);
    const auto batch = batch_of(2);
    const at::Tensor noise = at::ones({2, 2, 1, 2, 2});
    const at::Tensor x0 = batch.tensors.at("latents");
    const at::Tensor noisy = 0.75 * x0 + 0.25 * noise;
    EXPECT_NEAR(objective.eval_loss(batch, noise, 0.25),
                (0.5 * noisy - (noise - x0)).pow(2).mean().item<double>(), 1e-6);
    st::sdk::Batch empty = batch;
    empty.tensors.erase("latents");
    empty.samples[0].bucket = "640x352@17";
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
    try {
        objective.training_loss(empty, gen);
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("no 'latents' tensor (bucket 640x352@17)"), std::string::npos);
    }
}
