// Gemma tokenizer and Sana Video prompt handling (plugins/sanavideo/core/gemma_tokenizer.h,
// gemma_prompts.h) with a tokenizer this test trains and a random tiny Gemma-2: Gemma's special ids,
// <bos> first, right padding, truncation, lower-casing + strip, the complex human instruction on
// prompts only with its max_length rule, and the select index (position 0 + the last 299).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/gemma2_weights.h"
#include "core/gemma_prompts.h"
#include "core/gemma_tokenizer.h"
#include "st/error.h"
#include "st/json_file.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace st::plugins::sanavideo;
using st::plugins::wan::test::error_text;

namespace {

const auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new st::plugins::wan::test::ScratchCleanup("gemma_prompts"));

fs::path scratch(const std::string& name) {
    return st::plugins::wan::test::scratch_dir("gemma_prompts", name);
}

const fs::path& tokenizer_dir() {
    static const fs::path dir = [] {
        const fs::path d = scratch("tokenizer");
        train_tiny_gemma_tokenizer(d, 512, 3);
        return d;
    }();
    return dir;
}

const GemmaTokenizer& tokenizer() {
    static const GemmaTokenizer tok = GemmaTokenizer::load(tokenizer_dir());
    return tok;
}

Gemma2Model& encoder() {
    static Gemma2Model model = [] {
        Gemma2Config config = Gemma2Config::tiny();
        config.vocab_size = tokenizer().vocab_size();
        config.sliding_window = 4096;  // as gemma-2-2b: no window inside 300-450 tokens
        const fs::path dir = scratch("encoder");
        write_random_gemma2(dir, config, 11);
        return load_gemma2(dir);
    }();
    return model;
}

std::vector<int64_t> row(const at::Tensor& t, int64_t i) {
    const at::Tensor r = t[i].to(at::kLong).contiguous();
    return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

std::vector<int64_t> with_bos(const std::vector<int>& raw) {
    std::vector<int64_t> ids{2};
    ids.insert(ids.end(), raw.begin(), raw.end());
    return ids;
}

// A prompt of well over 300 tokens.
std::string long_prompt() {
    std::string p;
    for (int i = 0; i < 80; ++i) p += "a red fox runs across the snowy field " + std::to_string(i) + ". ";
    return p;
}

}  // namespace

TEST(GemmaPromptsTest, TrainedTokenizerHasGemmaSpecialsAndSideFiles) {
    const GemmaTokenizer& tok = tokenizer();
    EXPECT_EQ(tok.pad_id(), 0);
    EXPECT_EQ(tok.eos_id(), 1);
    EXPECT_EQ(tok.bos_id(), 2);
    EXPECT_EQ(tok.unk_id(), 3);
    EXPECT_GE(tok.vocab_size(), 384);
    EXPECT_LE(tok.vocab_size(), 512);
    const auto config = st::sdk::read_json_file(tokenizer_dir() / "tokenizer_config.json", "test");
    EXPECT_EQ(config["tokenizer_class"], "GemmaTokenizer");
    EXPECT_EQ(config["add_bos_token"], true);
    EXPECT_EQ(config["add_eos_token"], false);
    EXPECT_TRUE(fs::exists(tokenizer_dir() / "special_tokens_map.json"));
    // No dummy prefix (Gemma): "cat" and " cat" differ; byte fallback: no <unk> for unseen characters.
    EXPECT_NE(tok.encode_raw("cat"), tok.encode_raw(" cat"));
    const std::vector<int> cjk = tok.encode_raw("\xe7\x8c\xab");
    EXPECT_EQ(std::count(cjk.begin(), cjk.end(), 3), 0);
    EXPECT_EQ(tok.decode(tok.encode_raw("a cat, sleeping.\nUser Prompt: x")),
              "a cat, sleeping.\nUser Prompt: x");
    // Deterministic for (vocab, seed).
    const fs::path again = scratch("again");
    train_tiny_gemma_tokenizer(again, 512, 3);
    EXPECT_EQ(GemmaTokenizer::load(again).encode_raw(long_prompt()), tok.encode_raw(long_prompt()));
    EXPECT_NE(error_text([] { train_tiny_gemma_tokenizer(scratch("small"), 100, 1); }).find("vocab_size"),
              std::string::npos);
    EXPECT_NE(error_text([] { GemmaTokenizer::load(scratch("empty")); }).find("tokenizer.model"),
              std::string::npos);
}

TEST(GemmaPromptsTest, BosFirstRightPaddingAndTruncation) {
    const GemmaTokenizer& tok = tokenizer();
    EXPECT_EQ(tok.encode(""), std::vector<int64_t>{2});
    const auto batch = tok({"a cat", "a small red fox runs across a field", ""}, 12);
    ASSERT_EQ(batch.input_ids.sizes(), (at::IntArrayRef{3, 12}));
    const std::vector<int64_t> first = with_bos(tok.encode_raw("a cat"));
    ASSERT_LT(first.size(), 12u);
    std::vector<int64_t> expected = first;
    expected.resize(12, 0);
    EXPECT_EQ(row(batch.input_ids, 0), expected);
    std::vector<int64_t> mask(12, 0);
    std::fill(mask.begin(), mask.begin() + static_cast<std::ptrdiff_t>(first.size()), 1);
    EXPECT_EQ(row(batch.attention_mask, 0), mask);
    EXPECT_EQ(batch.seq_lens[0], static_cast<int64_t>(first.size()));
    // The empty prompt is <bos> alone.
    EXPECT_EQ(row(batch.input_ids, 2)[0], 2);
    EXPECT_EQ(batch.seq_lens[2], 1);
    // Truncation keeps <bos> + the first max_length - 1 text ids.
    const std::vector<int> raw = tok.encode_raw(long_prompt());
    const auto cut = tok({long_prompt()}, 20);
    std::vector<int64_t> want{2};
    want.insert(want.end(), raw.begin(), raw.begin() + 19);
    EXPECT_EQ(row(cut.input_ids, 0), want);
    EXPECT_EQ(cut.attention_mask.sum().item<int64_t>(), 20);
}

TEST(GemmaPromptsTest, PromptsAreLowerCasedAndStripped) {
    EXPECT_EQ(sana_preprocess_prompt("  A CAT Sleeps On The SOFA.\n\t"), "a cat sleeps on the sofa.");
    const auto a = tokenize_sana_prompts(tokenizer(), {"  A CAT Sleeps\n"}, 300, {});
    const auto b = tokenizer()({"a cat sleeps"}, 300);
    EXPECT_TRUE(at::equal(a.input_ids, b.input_ids));
    EXPECT_TRUE(at::equal(a.attention_mask, b.attention_mask));
}

TEST(GemmaPromptsTest, ComplexHumanInstructionOnlyOnPositivePrompts) {
    const auto& chi = sana_video_complex_human_instruction();
    ASSERT_EQ(chi.size(), 8u);
    EXPECT_EQ(chi.back(), "User Prompt: ");
    std::string joined;
    for (size_t i = 0; i < chi.size(); ++i) joined += (i ? "\n" : "") + chi[i];
    const int64_t n_chi = static_cast<int64_t>(tokenizer().encode(joined).size());  // with <bos>

    const auto positive = tokenize_sana_prompts(tokenizer(), {"A Cat"}, 300, chi);
    EXPECT_EQ(positive.input_ids.size(1), n_chi + 300 - 2);
    const std::vector<int64_t> ids = with_bos(tokenizer().encode_raw(joined + "a cat"));
    std::vector<int64_t> head = row(positive.input_ids, 0);
    head.resize(ids.size());
    EXPECT_EQ(head, ids);
    EXPECT_EQ(positive.seq_lens[0], static_cast<int64_t>(ids.size()));

    const auto negative = tokenize_sana_prompts(tokenizer(), {"A Cat"}, 300, {});
    EXPECT_EQ(negative.input_ids.size(1), 300);
    EXPECT_EQ(negative.seq_lens[0], static_cast<int64_t>(with_bos(tokenizer().encode_raw("a cat")).size()));
}

TEST(GemmaPromptsTest, SelectIndexKeepsPositionZeroAndTheLast299) {
    const std::vector<int64_t> idx = sana_select_index(400, 300);
    ASSERT_EQ(idx.size(), 300u);
    EXPECT_EQ(idx[0], 0);
    EXPECT_EQ(idx[1], 101);
    EXPECT_EQ(idx.back(), 399);
    const std::vector<int64_t> same = sana_select_index(300, 300);
    for (int64_t i = 0; i < 300; ++i) EXPECT_EQ(same[static_cast<size_t>(i)], i);
    EXPECT_NE(error_text([] { sana_select_index(10, 300); }).find("300"), std::string::npos);
}

TEST(GemmaPromptsTest, EncodeKeepsPositionZeroAndTheLastPositions) {
    const std::vector<std::string> prompts = {"A cat sleeping", long_prompt()};
    const SanaPromptEmbeds out = encode_sana_prompts(tokenizer(), encoder(), prompts, /*with_chi=*/true);
    const int64_t hidden = encoder()->config().hidden_size;
    ASSERT_EQ(out.prompt_embeds.sizes(), (at::IntArrayRef{2, 300, hidden}));
    ASSERT_EQ(out.prompt_attention_mask.sizes(), (at::IntArrayRef{2, 300}));

    // The full-length run, selected by hand.
    const auto batch =
        tokenize_sana_prompts(tokenizer(), prompts, 300, sana_video_complex_human_instruction());
    const int64_t length = batch.input_ids.size(1);
    at::Tensor full;
    {
        at::NoGradGuard no_grad;
        full = encoder()->forward(batch.input_ids, batch.attention_mask);
    }
    EXPECT_TRUE(at::equal(out.prompt_embeds.select(1, 0), full.select(1, 0)));
    EXPECT_TRUE(at::equal(out.prompt_embeds.narrow(1, 1, 299), full.narrow(1, length - 299, 299)));
    EXPECT_TRUE(at::equal(out.prompt_attention_mask.select(1, 0), batch.attention_mask.select(1, 0)));
    EXPECT_TRUE(at::equal(out.prompt_attention_mask.narrow(1, 1, 299),
                          batch.attention_mask.narrow(1, length - 299, 299)));
    // Short prompt: <bos>, then the tail of the instruction and the prompt, then padding.
    const int64_t valid = batch.seq_lens[0];
    EXPECT_EQ(out.prompt_attention_mask[0].sum().item<int64_t>(), 1 + valid - (length - 299));
    // Long prompt: truncated to the full length, every kept position a token.
    EXPECT_EQ(batch.seq_lens[1], length);
    EXPECT_EQ(out.prompt_attention_mask[1].sum().item<int64_t>(), 300);
}

TEST(GemmaPromptsTest, NegativePromptsUseThePlain300Tokens) {
    const SanaPromptEmbeds out =
        encode_sana_prompts(tokenizer(), encoder(), {"", "Blurry, LOW quality"}, false);
    ASSERT_EQ(out.prompt_embeds.size(1), 300);
    const auto batch = tokenizer()({"", "blurry, low quality"}, 300);
    EXPECT_TRUE(at::equal(out.prompt_attention_mask, batch.attention_mask));
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(out.prompt_embeds, encoder()->forward(batch.input_ids, batch.attention_mask)));
    // The empty negative prompt: <bos> alone.
    EXPECT_EQ(out.prompt_attention_mask[0].sum().item<int64_t>(), 1);
    // max_sequence_length other than 300 keeps the rule.
    const SanaPromptEmbeds short_out = encode_sana_prompts(tokenizer(), encoder(), {"a cat"}, true, 16);
    EXPECT_EQ(short_out.prompt_embeds.size(1), 16);
}
