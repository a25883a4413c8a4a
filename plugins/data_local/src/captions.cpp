#include "captions.h"

#include <fstream>
#include <sstream>

#include "st/error.h"

namespace st::plugins::data_local {
namespace {

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::string apply_modifiers(std::string caption, const DatasetConfig& ds, size_t variant) {
    if (ds.instance_prompts.empty()) return caption;
    const std::string& prompt = ds.instance_prompts[variant % ds.instance_prompts.size()];
    if (ds.only_instance_prompt) return prompt;
    if (ds.prepend_instance_prompt) return caption.empty() ? prompt : prompt + " " + caption;
    return caption;
}

}  // namespace

bool is_text(const std::string& text) {
    size_t i = 0;
    while (i < text.size()) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return false;
            if (c == 0x7f) return false;
            ++i;
            continue;
        }
        int extra = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (extra < 0 || c == 0xC0 || c == 0xC1 || c > 0xF4) return false;
        if (i + static_cast<size_t>(extra) >= text.size()) return false;
        for (int k = 1; k <= extra; ++k)
            if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
        i += extra + 1;
    }
    return true;
}

std::string caption_from_filename(const std::filesystem::path& media) {
    std::string stem = media.stem().string();
    for (char& c : stem)
        if (c == '_') c = ' ';
    return trim(stem);
}

std::vector<std::string> captions_for(const std::filesystem::path& media, const DatasetConfig& ds) {
    std::vector<std::string> out;
    if (ds.caption_strategy == "instanceprompt") {
        for (size_t i = 0; i < ds.instance_prompts.size(); ++i) out.push_back(ds.instance_prompts[i]);
        return out;
    }
    if (ds.caption_strategy == "filename") {
        std::string c = caption_from_filename(media);
        out.push_back(apply_modifiers(c, ds, 0));
        return out;
    }
    // textfile: sibling <stem>.txt, one caption variant per non-empty line unless disable_multiline_split.
    std::filesystem::path txt = media;
    txt.replace_extension(".txt");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(txt, ec))
        throw Error("data.local", "captions",
                    fmt::format("caption file {} is missing (caption_strategy textfile)", txt.string()));
    std::ifstream in(txt, std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    if (!in.good() && !in.eof())
        throw Error("data.local", "captions", fmt::format("caption file {} cannot be read", txt.string()));
    std::string text = buf.str();
    if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF &&
        static_cast<unsigned char>(text[1]) == 0xBB && static_cast<unsigned char>(text[2]) == 0xBF)
        text = text.substr(3);  // UTF-8 byte order mark
    if (!is_text(text))
        throw Error("data.local", "captions",
                    fmt::format("caption file {} is not UTF-8 text (binary content)", txt.string()));
    if (ds.disable_multiline_split) {
        std::string joined;
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            line = trim(line);
            if (!line.empty()) joined += (joined.empty() ? "" : " ") + line;
        }
        if (!joined.empty()) out.push_back(apply_modifiers(joined, ds, 0));
    } else {
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            line = trim(line);
            if (!line.empty()) out.push_back(apply_modifiers(line, ds, out.size()));
        }
    }
    if (out.empty())
        throw Error("data.local", "captions", fmt::format("caption file {} is empty", txt.string()));
    return out;
}

}  // namespace st::plugins::data_local
