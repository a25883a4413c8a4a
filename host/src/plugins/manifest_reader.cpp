#include "plugins/manifest_reader.h"

#include <elf.h>
#include <fmt/core.h>

#include <cstring>
#include <fstream>

#include "st/plugin.h"

namespace st::host {
namespace {

/// Bounds-checked view of the whole file.
struct Bytes {
    std::vector<char> data;
    bool get(uint64_t off, uint64_t len, const char** out) const {
        if (off > data.size() || len > data.size() - off) return false;
        *out = data.data() + off;
        return true;
    }
    template <typename T>
    bool read(uint64_t off, T* out) const {
        const char* p;
        if (!get(off, sizeof(T), &p)) return false;
        std::memcpy(out, p, sizeof(T));
        return true;
    }
};

std::string bounded_string(const char* p, size_t cap) {
    size_t n = strnlen(p, cap);
    return std::string(p, n);
}

}  // namespace

ManifestRead read_manifest(const std::filesystem::path& path) {
    ManifestRead r;
    std::error_code ec;
    auto size = std::filesystem::file_size(path, ec);
    if (ec) {
        r.problem = fmt::format("cannot read file: {}", ec.message());
        return r;
    }
    if (size > (uint64_t(4) << 30)) {
        r.problem = "file is larger than 4 GiB";
        return r;
    }
    Bytes b;
    b.data.resize(size);
    std::ifstream in(path, std::ios::binary);
    if (!in.read(b.data.data(), static_cast<std::streamsize>(size))) {
        r.problem = "cannot read file";
        return r;
    }
    Elf64_Ehdr eh;
    if (!b.read(0, &eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        r.problem = "not a shared library (no ELF header)";
        return r;
    }
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB) {
        r.problem = "not a shared library for this machine (expected 64-bit little-endian ELF)";
        return r;
    }
    if (eh.e_type != ET_DYN) {
        r.problem = fmt::format("not a shared library (ELF type {} instead of ET_DYN)", eh.e_type);
        return r;
    }
    if (eh.e_machine != EM_X86_64 && eh.e_machine != EM_AARCH64) {
        r.problem = fmt::format("shared library for another machine (e_machine {})", eh.e_machine);
        return r;
    }
    r.is_shared_library = true;
    if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 || eh.e_shstrndx >= eh.e_shnum) {
        r.problem = "shared library without a usable section table";
        return r;
    }
    std::vector<Elf64_Shdr> sh(eh.e_shnum);
    for (size_t i = 0; i < sh.size(); ++i) {
        if (!b.read(eh.e_shoff + i * sizeof(Elf64_Shdr), &sh[i])) {
            r.problem = "truncated section table";
            return r;
        }
    }
    const Elf64_Shdr& strs = sh[eh.e_shstrndx];
    auto section_name = [&](const Elf64_Shdr& s) -> std::string {
        const char* p;
        if (s.sh_name >= strs.sh_size || !b.get(strs.sh_offset + s.sh_name, 1, &p)) return {};
        return bounded_string(p, strs.sh_size - s.sh_name);
    };

    // Entry symbol: look it up in .dynsym (what the dynamic loader would resolve).
    for (const auto& s : sh) {
        if (s.sh_type != SHT_DYNSYM || s.sh_entsize != sizeof(Elf64_Sym) || s.sh_link >= sh.size()) continue;
        const Elf64_Shdr& dynstr = sh[s.sh_link];
        for (uint64_t off = 0; off + sizeof(Elf64_Sym) <= s.sh_size; off += sizeof(Elf64_Sym)) {
            Elf64_Sym sym;
            if (!b.read(s.sh_offset + off, &sym)) break;
            if (sym.st_shndx == SHN_UNDEF || sym.st_name >= dynstr.sh_size) continue;
            const char* p;
            if (!b.get(dynstr.sh_offset + sym.st_name, 1, &p)) continue;
            if (bounded_string(p, dynstr.sh_size - sym.st_name) == ST_ENTRY_SYMBOL &&
                ELF64_ST_TYPE(sym.st_info) == STT_FUNC)
                r.has_entry = true;
        }
    }

    for (const auto& s : sh) {
        if (section_name(s) != ST_MANIFEST_SECTION) continue;
        if (s.sh_type == SHT_NOBITS) break;
        const char* p;
        if (s.sh_size < offsetof(st_plugin_manifest, fingerprint) || !b.get(s.sh_offset, s.sh_size, &p)) {
            r.problem = "manifest section is truncated";
            return r;
        }
        uint32_t head[4];
        std::memcpy(head, p, sizeof head);
        if (head[0] != ST_MANIFEST_MAGIC) {
            r.problem = "manifest section has a wrong magic number";
            return r;
        }
        // Fields up to the component list exist in every version of the layout; a plugin built
        // with a newer minor may have appended fields after them, which we ignore.
        if (head[1] < sizeof(st_plugin_manifest) || head[1] > s.sh_size) {
            r.problem =
                fmt::format("manifest struct size {} does not fit (host expects at least {}, section has {})",
                            head[1], sizeof(st_plugin_manifest), s.sh_size);
            return r;
        }
        st_plugin_manifest m;
        std::memcpy(&m, p, sizeof m);
        r.manifest.struct_size = m.struct_size;
        r.manifest.abi_major = m.abi_major;
        r.manifest.abi_minor = m.abi_minor;
        r.manifest.fingerprint = bounded_string(m.fingerprint, sizeof m.fingerprint);
        r.manifest.plugin_name = bounded_string(m.plugin_name, sizeof m.plugin_name);
        r.manifest.plugin_version = bounded_string(m.plugin_version, sizeof m.plugin_version);
        uint32_t n = std::min<uint32_t>(m.component_count, ST_MANIFEST_MAX_COMPONENTS);
        for (uint32_t i = 0; i < n; ++i)
            r.manifest.components.push_back(bounded_string(m.components[i], ST_MANIFEST_COMPONENT_LEN));
        if (m.component_count > ST_MANIFEST_MAX_COMPONENTS) {
            r.problem = fmt::format("manifest lists {} components, more than the maximum {}",
                                    m.component_count, ST_MANIFEST_MAX_COMPONENTS);
            return r;
        }
        r.has_manifest = true;
        return r;
    }
    r.problem = fmt::format("shared library without an st plugin manifest (section {} / symbol {} missing)",
                            ST_MANIFEST_SECTION, ST_MANIFEST_SYMBOL);
    return r;
}

}  // namespace st::host
