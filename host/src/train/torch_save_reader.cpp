// A small unpickler for torch.save() files (train/torch_save_reader.h). Opcodes from Python's
// Lib/pickle.py; tensors as torch/serialization.py's persistent_id and torch/_utils.py's
// _rebuild_tensor_v2 describe them.
#include "train/torch_save_reader.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <map>
#include <vector>

#include "st/error.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {

// A global named by GLOBAL ("module.name") stays on the stack as a string with this prefix until REDUCE
// calls it or a persistent id names its storage type (no string of a state dict starts with \x01).
constexpr const char* kGlobal = "\x01global:";

class Unpickler {
  public:
    Unpickler(const char* data, size_t size, caffe2::serialize::PyTorchStreamReader& zip, std::string file,
              std::string component)
        : p_(data), end_(data + size), zip_(zip), file_(std::move(file)), component_(std::move(component)) {}

    c10::IValue run() {
        while (true) {
            const uint8_t op = byte();
            switch (op) {
                case 0x80:  // PROTO
                    byte();
                    break;
                case 0x95:  // FRAME
                    bytes(8);
                    break;
                case '.':  // STOP
                    return pop();
                case '}':  // EMPTY_DICT
                    push(dict());
                    break;
                case ']':  // EMPTY_LIST
                    push(list());
                    break;
                case ')':  // EMPTY_TUPLE
                    push(tuple({}));
                    break;
                case '(':  // MARK
                    marks_.push_back(stack_.size());
                    break;
                case 'N':  // NONE
                    push(c10::IValue());
                    break;
                case 0x88:  // NEWTRUE
                    push(true);
                    break;
                case 0x89:  // NEWFALSE
                    push(false);
                    break;
                case 'K':  // BININT1
                    push(static_cast<int64_t>(byte()));
                    break;
                case 'M':  // BININT2
                    push(static_cast<int64_t>(le<uint16_t>()));
                    break;
                case 'J':  // BININT
                    push(static_cast<int64_t>(le<int32_t>()));
                    break;
                case 0x8a:  // LONG1
                    push(long1());
                    break;
                case 'G':  // BINFLOAT
                    push(be_double());
                    break;
                case 'X':  // BINUNICODE
                    push(text(le<uint32_t>()));
                    break;
                case 0x8c:  // SHORT_BINUNICODE
                    push(text(byte()));
                    break;
                case 0x8d:  // BINUNICODE8
                    push(text(static_cast<size_t>(le<uint64_t>())));
                    break;
                case 'U':  // SHORT_BINSTRING
                    push(text(byte()));
                    break;
                case 'T':  // BINSTRING
                    push(text(le<uint32_t>()));
                    break;
                case 'q':  // BINPUT
                    memo_[byte()] = top();
                    break;
                case 'r':  // LONG_BINPUT
                    memo_[le<uint32_t>()] = top();
                    break;
                case 0x94:  // MEMOIZE
                    memo_[memo_.size()] = top();
                    break;
                case 'h':  // BINGET
                    push(memo(byte()));
                    break;
                case 'j':  // LONG_BINGET
                    push(memo(le<uint32_t>()));
                    break;
                case 't':  // TUPLE
                    push(tuple(pop_mark()));
                    break;
                case 0x85:  // TUPLE1
                    push(tuple(pop_n(1)));
                    break;
                case 0x86:  // TUPLE2
                    push(tuple(pop_n(2)));
                    break;
                case 0x87:  // TUPLE3
                    push(tuple(pop_n(3)));
                    break;
                case 'a':  // APPEND
                    append(pop_n(1));
                    break;
                case 'e':  // APPENDS
                    append(pop_mark());
                    break;
                case 's':  // SETITEM
                    setitems(pop_n(2));
                    break;
                case 'u':  // SETITEMS
                    setitems(pop_mark());
                    break;
                case 'c':  // GLOBAL
                    global();
                    break;
                case 'Q':  // BINPERSID
                    push(persistent(pop()));
                    break;
                case 'R':  // REDUCE
                    reduce();
                    break;
                default:
                    bad(fmt::format(
                        "pickle opcode 0x{:02x} at byte {} is not one torch.save writes for a state "
                        "dict",
                        op, static_cast<size_t>(p_ - begin_ - 1)));
            }
        }
    }

    void set_begin(const char* b) { begin_ = b; }

  private:
    [[noreturn]] void bad(const std::string& what) const {
        fail(component_, "load", "'{}': {}", file_, what);
    }
    uint8_t byte() {
        if (p_ >= end_) bad("the pickle ends early");
        return static_cast<uint8_t>(*p_++);
    }
    const char* bytes(size_t n) {
        if (static_cast<size_t>(end_ - p_) < n) bad("the pickle ends early");
        const char* at = p_;
        p_ += n;
        return at;
    }
    template <typename T>
    T le() {
        T v;
        std::memcpy(&v, bytes(sizeof v), sizeof v);  // x86 and ARM are little-endian
        return v;
    }
    double be_double() {
        const char* b = bytes(8);
        char r[8];
        for (int i = 0; i < 8; ++i) r[i] = b[7 - i];
        double v;
        std::memcpy(&v, r, 8);
        return v;
    }
    int64_t long1() {
        const uint8_t n = byte();
        if (n > 8) bad("an integer wider than 64 bits");
        const char* b = bytes(n);
        uint64_t v = 0;
        for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[i]);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
        return static_cast<int64_t>(v);
    }
    std::string text(size_t n) { return std::string(bytes(n), n); }
    std::string line() {
        const char* s = p_;
        while (p_ < end_ && *p_ != '\n') ++p_;
        if (p_ >= end_) bad("the pickle ends early");
        return std::string(s, p_++);
    }
    static c10::IValue dict() { return c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()); }
    static c10::IValue list() { return c10::impl::GenericList(c10::AnyType::get()); }
    static c10::IValue tuple(std::vector<c10::IValue> items) {
        return c10::ivalue::Tuple::create(std::move(items));
    }

    void push(c10::IValue v) { stack_.push_back(std::move(v)); }
    const c10::IValue& top() {
        if (stack_.empty()) bad("the pickle's stack is empty");
        return stack_.back();
    }
    c10::IValue pop() {
        c10::IValue v = top();
        stack_.pop_back();
        return v;
    }
    std::vector<c10::IValue> pop_n(size_t n) {
        if (stack_.size() < n + (marks_.empty() ? 0 : marks_.back())) bad("the pickle's stack is too short");
        std::vector<c10::IValue> out(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        return out;
    }
    std::vector<c10::IValue> pop_mark() {
        if (marks_.empty()) bad("a MARK is missing");
        const size_t at = marks_.back();
        marks_.pop_back();
        std::vector<c10::IValue> out(stack_.begin() + static_cast<std::ptrdiff_t>(at), stack_.end());
        stack_.resize(at);
        return out;
    }
    c10::IValue memo(size_t i) {
        const auto it = memo_.find(i);
        if (it == memo_.end()) bad(fmt::format("memo entry {} is read before it is written", i));
        return it->second;
    }
    void append(const std::vector<c10::IValue>& items) {
        if (!top().isList()) bad("APPEND onto something that is not a list");
        auto l = top().toList();
        for (const auto& v : items) l.push_back(v);
    }
    void setitems(const std::vector<c10::IValue>& kv) {
        if (!top().isGenericDict() || kv.size() % 2 != 0) bad("SETITEM onto something that is not a dict");
        auto d = top().toGenericDict();
        for (size_t i = 0; i + 1 < kv.size(); i += 2) d.insert_or_assign(kv[i], kv[i + 1]);
    }
    void global() {
        // Two lines, module then name, read in that order (the operands of + are unsequenced).
        const std::string module = line();
        const std::string name = line();
        push(std::string(kGlobal) + module + "." + name);
    }

    // ('storage', <torch.XStorage>, key, location, numel) -> the storage's bytes as a 1-D tensor.
    c10::IValue persistent(const c10::IValue& pid) {
        if (!pid.isTuple() || pid.toTupleRef().elements().size() < 5)
            bad("a persistent id that is not a storage");
        const auto& e = pid.toTupleRef().elements();
        const std::string type = global_name(e[1]);
        static const std::map<std::string, at::ScalarType> kinds = {
            {"torch.FloatStorage", at::kFloat}, {"torch.DoubleStorage", at::kDouble},
            {"torch.HalfStorage", at::kHalf},   {"torch.BFloat16Storage", at::kBFloat16},
            {"torch.LongStorage", at::kLong},   {"torch.IntStorage", at::kInt},
            {"torch.ShortStorage", at::kShort}, {"torch.CharStorage", at::kChar},
            {"torch.ByteStorage", at::kByte},   {"torch.BoolStorage", at::kBool}};
        const auto kind = kinds.find(type);
        if (kind == kinds.end()) bad(fmt::format("a storage of type {} st does not read", type));
        const std::string key = e[2].toStringRef();
        if (auto it = storages_.find(key); it != storages_.end()) return it->second;
        const std::string record = "data/" + key;
        if (!zip_.hasRecord(record)) bad(fmt::format("the archive lacks {}", record));
        auto [ptr, size] = zip_.getRecord(record);
        const int64_t numel = e[4].toInt();
        const auto item = static_cast<int64_t>(c10::elementSize(kind->second));
        if (static_cast<int64_t>(size) < numel * item)
            bad(fmt::format("{} holds {} bytes, fewer than its {} elements need", record, size, numel));
        at::Tensor t = at::empty({numel}, at::TensorOptions(kind->second));
        std::memcpy(t.data_ptr(), ptr.get(), static_cast<size_t>(numel * item));
        storages_[key] = t;
        return t;
    }

    std::string global_name(const c10::IValue& v) const {
        const std::string prefix = kGlobal;
        if (!v.isString() || v.toStringRef().rfind(prefix, 0) != 0) bad("a class reference was expected");
        return v.toStringRef().substr(prefix.size());
    }

    void reduce() {
        const c10::IValue args = pop();
        const c10::IValue fn = pop();
        const std::string name = global_name(fn);
        if (!args.isTuple()) bad(fmt::format("{} is called without an argument tuple", name));
        const auto& a = args.toTupleRef().elements();
        if (name == "collections.OrderedDict") {
            push(dict());
        } else if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
            if (a.size() < 4 || !a[0].isTensor()) bad("a tensor without its storage");
            auto ints = [&](const c10::IValue& t) {
                std::vector<int64_t> out;
                for (const auto& x : t.toTupleRef().elements()) out.push_back(x.toInt());
                return out;
            };
            const at::Tensor storage = a[0].toTensor();
            push(storage.as_strided(ints(a[2]), ints(a[3]), a[1].toInt()).clone());
        } else {
            bad(fmt::format("the pickle calls {}, which is not part of a state dict st reads", name));
        }
    }

    const char* p_;
    const char* begin_ = nullptr;
    const char* end_;
    caffe2::serialize::PyTorchStreamReader& zip_;
    std::string file_, component_;
    std::vector<c10::IValue> stack_;
    std::vector<size_t> marks_;
    std::map<size_t, c10::IValue> memo_;
    std::map<std::string, at::Tensor> storages_;
};

}  // namespace

c10::IValue read_torch_save(const fs::path& file, const std::string& component) {
    {
        std::ifstream in(file, std::ios::binary);
        char magic[2] = {0, 0};
        in.read(magic, 2);
        if (!in || magic[0] != 'P' || magic[1] != 'K')
            fail(component, "load",
                 "'{}' is not a zip-format torch.save() file (legacy pickles of torch < 1.6 are not read)",
                 file.string());
    }
    try {
        caffe2::serialize::PyTorchStreamReader zip(file.string());
        auto [data, size] = zip.getRecord("data.pkl");
        const char* bytes = static_cast<const char*>(data.get());
        Unpickler u(bytes, size, zip, file.string(), component);
        u.set_begin(bytes);
        return u.run();
    } catch (const Error&) {
        throw;
    } catch (const c10::Error& e) {
        fail(component, "load", "'{}' could not be read: {}", file.string(), e.what_without_backtrace());
    }
}

}  // namespace st::host::train
