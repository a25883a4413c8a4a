// UMT5Tokenizer: exact ids for every case of the umt5 golden tokenizer_cases.json, Wan's prompt
// cleaning (Python html.unescape + whitespace rules), padding/cutting to 512, the golden encoder
// inputs, load errors, and the in-process tiny tokenizer trainer.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "st/error.h"
#include "st/kit/tokenizer.h"
#include "st/safetensors.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace st::kit;

namespace {

const fs::path kGolden = fs::path(ST_TEST_GOLDEN_DIR) / "umt5";

nlohmann::json golden_cases() {
    std::ifstream in(kGolden / "tokenizer_cases.json");
    return nlohmann::json::parse(in);
}

const UMT5Tokenizer& golden_tokenizer() {
    static const UMT5Tokenizer tok = UMT5Tokenizer::load(kGolden / "tokenizer");
    return tok;
}

fs::path temp_dir(const std::string& name) {
    return st::plugins::wan::test::scratch_dir("tok", name);
}
const auto* const kTempCleanup =
    ::testing::AddGlobalTestEnvironment(new st::plugins::wan::test::ScratchCleanup("tok"));

using st::plugins::wan::test::error_text;

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

TEST(UMT5TokenizerTest, SpecialIdsOfGoldenModel) {
    const auto& tok = golden_tokenizer();
    const auto cases = golden_cases();
    EXPECT_EQ(tok.pad_id(), cases["special_ids"]["pad"].get<int64_t>());
    EXPECT_EQ(tok.eos_id(), cases["special_ids"]["eos"].get<int64_t>());
    EXPECT_EQ(tok.unk_id(), cases["special_ids"]["unk"].get<int64_t>());
    EXPECT_EQ(tok.vocab_size(), cases["vocab_size"].get<int64_t>());
}

TEST(UMT5TokenizerTest, EveryGoldenCaseExact) {
    const auto& tok = golden_tokenizer();
    const auto cases = golden_cases();
    const auto max_length = cases["max_length"].get<int64_t>();
    ASSERT_EQ(cases["cases"].size(), 12u);
    for (const auto& c : cases["cases"]) {
        const auto text = c["text"].get<std::string>();
        SCOPED_TRACE("case: " + text.substr(0, 60));
        std::vector<int> spm_ids;
        for (const auto& v : c["spm_ids"]) spm_ids.push_back(v.get<int>());
        EXPECT_EQ(tok.encode_raw(text), spm_ids);
        EXPECT_EQ(tok.encode_pieces(text), c["spm_pieces"].get<std::vector<std::string>>());

        const std::string clean = prompt_clean(text);
        EXPECT_EQ(clean, c["clean_text"].get<std::string>());
        std::vector<int> clean_ids;
        for (const auto& v : c["clean_spm_ids"]) clean_ids.push_back(v.get<int>());
        EXPECT_EQ(tok.encode_raw(clean), clean_ids);

        const std::vector<int64_t> ids = tok.encode(text, max_length);
        ASSERT_EQ(static_cast<int64_t>(ids.size()), c["input_ids_len"].get<int64_t>());
        const auto head = c["input_ids_head"].get<std::vector<int64_t>>();
        const auto tail = c["input_ids_tail"].get<std::vector<int64_t>>();
        EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(head.size())),
                  head);
        EXPECT_EQ(std::vector<int64_t>(ids.end() - static_cast<std::ptrdiff_t>(tail.size()), ids.end()),
                  tail);
        EXPECT_EQ(ids.back(), tok.eos_id());
        EXPECT_EQ(c["truncated"].get<bool>(), clean_ids.size() > static_cast<size_t>(max_length - 1));
    }
}

TEST(UMT5TokenizerTest, BatchMatchesGoldenEncoderInputs) {
    // inputs.safetensors was made from cases 0 and 9 (the long, truncated prompt).
    const auto cases = golden_cases();
    const std::vector<std::string> prompts = {cases["cases"][0]["text"].get<std::string>(),
                                              cases["cases"][9]["text"].get<std::string>()};
    const TokenizedBatch batch = golden_tokenizer()(prompts, 512);
    const auto inputs = st::sdk::SafetensorsFile::open(kGolden / "inputs.safetensors");
    EXPECT_TRUE(at::equal(batch.input_ids, inputs->load("input_ids")));
    EXPECT_TRUE(at::equal(batch.attention_mask, inputs->load("attention_mask")));
    EXPECT_EQ(batch.seq_lens, (std::vector<int64_t>{35, 512}));
    // Padding is pad_id after eos; cutting keeps max_length - 1 tokens plus eos.
    EXPECT_EQ(batch.input_ids[0][34].item<int64_t>(), 1);
    EXPECT_EQ(batch.input_ids[0].narrow(0, 35, 477).abs().sum().item<int64_t>(), 0);
    const TokenizedBatch short_batch = golden_tokenizer()(prompts, 16);
    EXPECT_EQ(short_batch.input_ids.sizes(), (std::vector<int64_t>{2, 16}));
    EXPECT_EQ(short_batch.input_ids[0][15].item<int64_t>(), 1);
    EXPECT_EQ(short_batch.attention_mask.sum().item<int64_t>(), 32);
}

TEST(UMT5TokenizerTest, HtmlUnescapeMatchesPython) {
    // Expected values printed by Python 3.11 html.unescape.
    EXPECT_EQ(html_unescape("&amp;amp;"), "&amp;");
    EXPECT_EQ(html_unescape("&#x41;&#65&#X41;"), "AAA");
    EXPECT_EQ(html_unescape("&#128;"), "\xe2\x82\xac");
    EXPECT_EQ(html_unescape("&#0;"), "\xef\xbf\xbd");
    EXPECT_EQ(html_unescape("&#xD800;"), "\xef\xbf\xbd");
    EXPECT_EQ(html_unescape("&#99999999999;"), "\xef\xbf\xbd");
    EXPECT_EQ(html_unescape("a&#1;b"), "ab");
    EXPECT_EQ(html_unescape("&notit;"), "\xc2\xacit;");
    EXPECT_EQ(html_unescape("&ampx"), "&x");
    EXPECT_EQ(html_unescape("&unknown;"), "&unknown;");
    EXPECT_EQ(html_unescape("&#x;"), "&#x;");
    EXPECT_EQ(html_unescape("&"), "&");
    EXPECT_EQ(html_unescape("&&amp;"), "&&");
    EXPECT_EQ(html_unescape("&lt;&gt;&quot;&#39;"), "<>\"'");
    EXPECT_EQ(html_unescape("&Eacute;t&eacute;"), "\xc3\x89t\xc3\xa9");
    EXPECT_EQ(html_unescape("&nbspx"), "\xc2\xa0x");
    EXPECT_EQ(html_unescape("&caf\xc3\xa9;"), "&caf\xc3\xa9;");
    EXPECT_EQ(html_unescape("&#x1F98A;"), "\xf0\x9f\xa6\x8a");
}

TEST(UMT5TokenizerTest, WhitespaceCleanUsesPythonSpaces) {
    EXPECT_EQ(whitespace_clean("  a \t\n b  "), "a b");
    // U+3000 ideographic space, U+00A0 no-break space, U+2009 thin space, U+0085 next line.
    EXPECT_EQ(whitespace_clean("a\xe3\x80\x80"
                               "b\xc2\xa0 c\xe2\x80\x89"
                               "d\xc2\x85"),
              "a b c d");
    // Not whitespace for Python: U+200B zero-width space stays.
    EXPECT_EQ(whitespace_clean("a\xe2\x80\x8b"
                               "b"),
              "a\xe2\x80\x8b"
              "b");
    EXPECT_EQ(prompt_clean("  Tom &amp;amp; Jerry&nbsp;  "), "Tom & Jerry");
    EXPECT_EQ(prompt_clean(""), "");
}

TEST(UMT5TokenizerTest, LoadErrorsNameTheExpectedFile) {
    const fs::path dir = temp_dir("errors");
    const std::string empty = [&] {
        try {
            UMT5Tokenizer::load(dir);
        } catch (const st::Error& e) {
            return std::string(e.what());
        }
        return std::string("<no error>");
    }();
    EXPECT_NE(empty.find("spiece.model"), std::string::npos) << empty;
    EXPECT_NE(empty.find(dir.string()), std::string::npos) << empty;

    std::ofstream(dir / "tokenizer.json") << "{}";
    const std::string json_only = error_text([&] { UMT5Tokenizer::load(dir); });
    EXPECT_NE(json_only.find("tokenizer.json"), std::string::npos) << json_only;
    EXPECT_NE(error_text([&] { UMT5Tokenizer::load(dir / "tokenizer.json"); }).find("spiece.model"),
              std::string::npos);

    std::ofstream(dir / "spiece.model") << "this is not a protobuf";
    EXPECT_NE(error_text([&] { UMT5Tokenizer::load(dir); }).find("not a SentencePiece model"),
              std::string::npos);
    EXPECT_NE(error_text([&] { UMT5Tokenizer::load(dir / "absent"); }).find("does not exist"),
              std::string::npos);
}

TEST(UMT5TokenizerTest, TrainTinyTokenizerRoundTripsAndIsDeterministic) {
    const fs::path a = temp_dir("train_a"), b = temp_dir("train_b");
    const fs::path model_a = train_tiny_tokenizer(a, 200, 1);
    const fs::path model_b = train_tiny_tokenizer(b, 200, 1);
    EXPECT_EQ(read_bytes(model_a), read_bytes(model_b));
    EXPECT_TRUE(fs::exists(a / "tokenizer_config.json"));
    EXPECT_TRUE(fs::exists(a / "special_tokens_map.json"));

    const UMT5Tokenizer tok = UMT5Tokenizer::load(a);
    EXPECT_EQ(tok.pad_id(), 0);
    EXPECT_EQ(tok.eos_id(), 1);
    EXPECT_EQ(tok.unk_id(), 2);
    EXPECT_GT(tok.vocab_size(), 100);
    EXPECT_LE(tok.vocab_size(), 200);
    for (const std::string text :
         {"A small red fox runs across a snowy field at sunrise.",
          "The camera pans slowly over the quiet city at night, 24 fps.", "Caf\xc3\xa9 in Z\xc3\xbcrich"}) {
        const std::vector<int> ids = tok.encode_raw(text);
        EXPECT_FALSE(ids.empty());
        for (int id : ids) EXPECT_NE(id, tok.unk_id()) << text;
        EXPECT_EQ(tok.decode(ids), text);
    }
    const std::vector<int64_t> ids = tok.encode("a fox", 8);
    EXPECT_EQ(ids.back(), 1);
    EXPECT_NE(error_text([&] { train_tiny_tokenizer(a, 10, 1); }).find("vocab_size"), std::string::npos);
}

TEST(UMT5TokenizerTest, WriteTokenizerFolderCopiesAModel) {
    const fs::path out = temp_dir("copy");
    const fs::path model = write_tokenizer_folder(kGolden / "tokenizer", out);
    EXPECT_EQ(read_bytes(model), read_bytes(kGolden / "tokenizer" / "spiece.model"));
    const UMT5Tokenizer tok = UMT5Tokenizer::load(out);
    EXPECT_EQ(tok.encode_raw("a red fox"), golden_tokenizer().encode_raw("a red fox"));
}
