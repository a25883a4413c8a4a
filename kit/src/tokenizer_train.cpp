// train_tiny_tokenizer: a small unigram SentencePiece model trained in-process (libsentencepiece_train)
// so `make-model` can write a self-contained tokenizer without downloading google/umt5-xxl.
// Special ids follow UMT5's spiece.model: pad 0 '<pad>', eos 1 '</s>', unk 2 '<unk>', no bos.
#include <fstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "st/error.h"
#include "st/kit/sentencepiece.h"
#include "st/kit/tokenizer.h"
#include "st/log.h"

namespace st::kit {
namespace {

constexpr const char* kComponent = "model.wan.tokenizer";

// Built-in training text: prompt-like English with digits and punctuation, plus a few accented words
// so common Latin-1 letters get their own pieces.
const char* const kCorpus[] = {
    "A small red fox runs across a snowy field at sunrise.",
    "The camera slowly pans over a quiet harbor while boats drift on calm water.",
    "A young woman in a yellow raincoat walks her dog through a busy city street.",
    "Close-up of a cup of coffee on a wooden table, steam rising in the morning light.",
    "An astronaut floats inside a space station, looking out of the window at the Earth.",
    "Waves crash against black rocks under a dramatic cloudy sky, cinematic lighting.",
    "A cat sleeps on the windowsill as rain falls outside; the room is warm and dim.",
    "Two children build a sandcastle on the beach while seagulls fly overhead.",
    "Aerial view of a green forest with a winding river, shot from a drone at noon.",
    "A chef chops fresh vegetables in a bright kitchen, fast cuts, shallow depth of field.",
    "Neon lights reflect on the wet street at night as cars pass by in slow motion.",
    "An old man plays the violin in a park; autumn leaves fall around him.",
    "Time-lapse of clouds moving over snowy mountains, from dawn to dusk.",
    "A horse gallops along the shore, its mane blowing in the wind, golden hour.",
    "A robot arm assembles a small wooden toy on a white background, studio light.",
    "Fireworks explode above the city skyline and the crowd cheers below.",
    "A hummingbird hovers near a red flower, wings blurred, macro shot, 120 fps.",
    "A train crosses a stone bridge in the valley while smoke rises from the engine.",
    "Portrait of a smiling girl with freckles, soft focus, pastel colors.",
    "A street market in the evening: lanterns, spices, fruit and people talking.",
    "Snow falls on a quiet village; lights glow in the windows of the small houses.",
    "A surfer rides a huge wave, the camera follows from behind, 4K, 60 frames per second.",
    "A butterfly lands on a leaf covered with morning dew, extreme close-up.",
    "The old lighthouse stands on the cliff while a storm rolls in from the sea.",
    "A dancer spins on an empty stage under a single spotlight, black and white film.",
    "Hot air balloons rise over the desert at sunrise, wide shot, 16:9.",
    "A dog catches a frisbee in mid-air in a sunny park, slow motion.",
    "Rain drops hit the surface of a pond and small circles spread across the water.",
    "A bowl of ramen with an egg and green onions, steam, top-down view.",
    "A cyclist rides through a tunnel of trees in spring, pink petals in the air.",
    "Numbers and symbols: 0 1 2 3 4 5 6 7 8 9, 10%, 3.5, 480x832, 81 frames @16fps, #1, $20, (a) [b] {c}.",
    "Quotes and dashes: \"hello\", 'world', a - b, a/b, a+b=c, yes! really? ok...",
    "UPPER CASE and lower case and Mixed Case words: The Quick Brown Fox Jumps Over The Lazy Dog.",
    "the quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly.",
    "Caf\xc3\xa9, na\xc3\xafve, r\xc3\xa9sum\xc3\xa9, \xc3\xbc"
    "ber, Z\xc3\xbcrich, se\xc3\xb1or, gar\xc3\xa7on, \xc3\xa0 la carte.",
    "Slowly, quietly, gently, softly, brightly, darkly: the adverbs of a calm scene.",
    "Running, walking, jumping, flying, swimming, dancing, singing, talking, looking.",
    "Red, orange, yellow, green, blue, purple, pink, brown, black, white and gray.",
    "Morning, noon, evening, night; spring, summer, autumn, winter; today and tomorrow.",
    "A video of people, animals, cars, trees, houses, rivers, mountains and the sky.",
};

}  // namespace

const std::vector<std::string>& tiny_tokenizer_corpus() {
    static const std::vector<std::string> corpus(std::begin(kCorpus), std::end(kCorpus));
    return corpus;
}

std::filesystem::path train_tiny_tokenizer(const std::filesystem::path& out_dir, int vocab_size,
                                           uint32_t seed) {
    // Unigram needs the 3 specials + every character of the corpus; below ~100 pieces it fails.
    if (vocab_size < 100 || vocab_size > 4000)
        fail(kComponent, "train", "tiny tokenizer vocab_size must be in [100, 4000], got {}", vocab_size);
    const std::unordered_map<std::string, std::string> args = {
        {"model_type", "unigram"},
        {"vocab_size", std::to_string(vocab_size)},
        {"pad_id", "0"},
        {"eos_id", "1"},
        {"unk_id", "2"},
        {"bos_id", "-1"},
        {"character_coverage", "1.0"},
        {"num_threads", "1"},
        // The corpus is small: allow fewer pieces than asked instead of failing.
        {"hard_vocab_limit", "false"},
        {"minloglevel", "2"},
    };
    const std::filesystem::path model = out_dir / "spiece.model";
    try {
        train_sentencepiece(model, args, tiny_tokenizer_corpus(), seed, kComponent);
    } catch (const Error& e) {
        throw e.with_context(fmt::format("training a tiny tokenizer with vocab_size {}", vocab_size));
    }
    write_tokenizer_side_files(out_dir);
    st::log::info(kComponent, "trained tiny unigram tokenizer (vocab {}, seed {}, {} bytes) -> {}",
                  vocab_size, seed, std::filesystem::file_size(model), model.string());
    return model;
}

}  // namespace st::kit
