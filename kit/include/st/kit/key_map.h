// Checkpoint key names in two layouts, as one table: the diffusers names (our module names) and a
// family's original names (Wan-Video / ComfyUI files). Tensors are `<module>.weight|bias` unless
// listed as whole tensors (modulation tables, ...); modules inside indexed containers ("blocks.N.")
// are listed once without the index. A table may fall back to another one for the names it shares
// (Wan S2V falls back to the Wan DiT's table). The same table maps LoRA target modules.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace st::kit {

enum class KeyLayout { diffusers, original };
const char* key_layout_name(KeyLayout layout);

/// One name in both layouts.
struct KeyPair {
    std::string original;
    std::string diffusers;
};

class KeyMapTable {
  public:
    /// Module pairs outside any indexed container.
    KeyMapTable& modules(std::vector<KeyPair> pairs);
    /// Whole-tensor pairs outside any indexed container.
    KeyMapTable& tensors(std::vector<KeyPair> pairs);
    /// Module pairs inside `<head><N>.` (head e.g. "blocks."): "blocks.3." + original <-> diffusers.
    KeyMapTable& indexed_modules(std::string head, std::vector<KeyPair> pairs);
    /// Whole-tensor pairs inside `<head><N>.`.
    KeyMapTable& indexed_tensors(std::string head, std::vector<KeyPair> pairs);
    /// Names this table does not know are looked up in `other` (which must outlive this table).
    KeyMapTable& fallback(const KeyMapTable* other);

    /// A tensor name (prefix stripped) in the other layout; nullopt when it is no tensor of the
    /// model. `to_diffusers`: original -> diffusers, else diffusers -> original.
    std::optional<std::string> tensor(const std::string& name, bool to_diffusers) const;
    /// A module path (no `.weight` / `.bias`) in the other layout; nullopt when unknown.
    std::optional<std::string> module(const std::string& path, bool to_diffusers) const;

  private:
    struct Indexed {
        std::string head;
        std::vector<KeyPair> pairs;
    };
    std::optional<std::string> own_module(const std::string& path, bool to_diffusers) const;
    std::optional<std::string> own_tensor(const std::string& name, bool to_diffusers) const;

    std::vector<KeyPair> modules_, tensors_;
    std::vector<Indexed> indexed_modules_, indexed_tensors_;
    const KeyMapTable* fallback_ = nullptr;
};

/// "<head><digits>." at the start of `name`: true with (prefix "<head><digits>.", rest).
bool split_indexed(const std::string& name, const std::string& head, std::string* prefix, std::string* rest);

}  // namespace st::kit
