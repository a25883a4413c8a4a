// LyCORIS LoKr / LoHa adapters (see st/lycoris.h). Shapes, initialisation and scale follow
// LyCORIS (KohakuBlueleaf/LyCORIS lycoris/modules/lokr.py LokrModule.__init__ / get_weight,
// loha.py LohaModule, functional/general.py factorization); the loading rules (which parts are
// low-rank, the scale from alpha) follow both LyCORIS's create_lycoris_from_weights and ComfyUI's
// weight adapters, which agree.
#include "st/lycoris.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>

#include "st/error.h"

namespace st::sdk {

namespace {
constexpr const char* kComponent = "sdk.lycoris";

std::string shape_str(at::IntArrayRef s) {
    return fmt::format("[{}]", fmt::join(s.begin(), s.end(), ", "));
}
}  // namespace

std::pair<int64_t, int64_t> lycoris_factorization(int64_t dimension, int64_t factor) {
    if (factor > 0 && dimension % factor == 0) {
        int64_t m = factor, n = dimension / factor;
        if (m > n) std::swap(m, n);
        return {m, n};
    }
    if (factor < 0) factor = dimension;
    int64_t m = 1, n = dimension;
    const int64_t length = m + n;
    while (m < n) {
        int64_t new_m = m + 1;
        while (dimension % new_m != 0) ++new_m;
        const int64_t new_n = dimension / new_m;
        if (new_m + new_n > length || new_m > factor) break;
        m = new_m;
        n = new_n;
    }
    if (m > n) std::swap(m, n);
    return {m, n};
}

LycorisAdapterImpl::LycorisAdapterImpl(int64_t in, int64_t out, LycorisOptions options)
    : in_(in), out_(out), options_(std::move(options)) {
    if (options_.algo == "lora") options_.algo = "locon";  // LyCORIS: both are LoConModule
    if (options_.algo != "lokr" && options_.algo != "loha" && options_.algo != "locon")
        fail(kComponent, "inject", "LyCORIS algo '{}' is not supported for Linear layers: lokr, loha, locon",
             options_.algo);
    if (options_.dim < 1) fail(kComponent, "inject", "LyCORIS linear_dim must be >= 1, got {}", options_.dim);
    plan_shapes();
    reset();
}

LycorisAdapterImpl::LycorisAdapterImpl(int64_t in, int64_t out, LycorisOptions options,
                                       std::map<std::string, std::vector<int64_t>> shapes, double scale,
                                       double saved_alpha)
    : in_(in),
      out_(out),
      options_(std::move(options)),
      shapes_(std::move(shapes)),
      scale_(scale),
      saved_alpha_(saved_alpha) {
    reset();
}

void LycorisAdapterImpl::plan_shapes() {
    shapes_.clear();
    const int64_t r = options_.dim;
    double alpha = options_.alpha == 0.0 ? static_cast<double>(r) : options_.alpha;
    if (options_.algo == "locon") {
        shapes_["lora_down"] = {r, in_};
        shapes_["lora_up"] = {out_, r};
    } else if (options_.algo == "loha") {
        shapes_["hada_w1_a"] = {out_, r};
        shapes_["hada_w1_b"] = {r, in_};
        shapes_["hada_w2_a"] = {out_, r};
        shapes_["hada_w2_b"] = {r, in_};
    } else {
        const auto [in_m, in_n] = lycoris_factorization(in_, options_.factor);
        const auto [out_l, out_k] = lycoris_factorization(out_, options_.factor);
        const bool w1_low =
            options_.decompose_both && r < std::max(out_l, in_m) / 2.0 && !options_.full_matrix;
        const bool w2_low = r < std::max(out_k, in_n) / 2.0 && !options_.full_matrix;
        if (w1_low) {
            shapes_["lokr_w1_a"] = {out_l, r};
            shapes_["lokr_w1_b"] = {r, in_m};
        } else {
            shapes_["lokr_w1"] = {out_l, in_m};
        }
        if (w2_low) {
            shapes_["lokr_w2_a"] = {out_k, r};
            shapes_["lokr_w2_b"] = {r, in_n};
        } else {
            shapes_["lokr_w2"] = {out_k, in_n};
        }
        if (!w1_low && !w2_low) {
            if (options_.rs_lora)
                fail(
                    kComponent, "create",
                    "rs_lora with both LoKr factors full (Linear {} -> {}, linear_dim {}): LyCORIS would "
                    "train "
                    "it at scale sqrt(dim) but every loader (ComfyUI, LyCORIS, st) reads such a file back at "
                    "scale 1; lower linear_dim or factor so that w2 is low-rank, or drop rs_lora",
                    in_, out_, r);
            alpha = static_cast<double>(r);  // both full: scale 1
        }
    }
    // lycoris/modules/lokr.py, loha.py: r_factor = sqrt(dim) with rs_lora; the alpha buffer saved is
    // alpha * dim / r_factor, so that alpha_saved / dim is the scale.
    const double r_factor = options_.rs_lora ? std::sqrt(static_cast<double>(r)) : static_cast<double>(r);
    scale_ = alpha / r_factor;
    saved_alpha_ = alpha * (static_cast<double>(r) / r_factor);
}

void LycorisAdapterImpl::reset() {
    for (const auto& [name, shape] : shapes_) register_parameter(name, at::zeros(shape));
    if (options_.use_scalar) register_parameter("scalar", at::zeros({}));
}

void LycorisAdapterImpl::pretty_print(std::ostream& stream) const {
    stream << "st::sdk::LycorisAdapter(" << options_.algo << ", in=" << in_ << ", out=" << out_
           << ", dim=" << options_.dim << ", scale=" << scale_ << ")";
}

void LycorisAdapterImpl::init_weights(uint64_t seed) {
    at::NoGradGuard no_grad;
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto p = [&](const std::string& n) -> at::Tensor { return named_parameters(false)[n]; };
    // kaiming_uniform_(a = sqrt(5)) on [rows, cols]: U(-1/sqrt(cols), 1/sqrt(cols)).
    auto kaiming = [&](const std::string& n) {
        at::Tensor t = p(n);
        const double bound = 1.0 / std::sqrt(static_cast<double>(t.size(1)));
        t.copy_(at::empty(t.sizes(), at::kFloat).uniform_(-bound, bound, g));
    };
    auto normal = [&](const std::string& n, double std) {
        at::Tensor t = p(n);
        t.copy_(at::empty(t.sizes(), at::kFloat).normal_(0.0, std, g));
    };
    // use_scalar: the scalar starts at 0 (dW = 0), so w2 (LoCon's lora_up) can start random.
    if (options_.algo == "locon") {
        kaiming("lora_down");
        if (options_.use_scalar)
            kaiming("lora_up");
        else
            p("lora_up").zero_();
        return;
    }
    if (options_.algo == "loha") {
        normal("hada_w1_b", 1.0);
        normal("hada_w1_a", 0.1);
        normal("hada_w2_b", 1.0);
        if (options_.use_scalar)
            normal("hada_w2_a", 0.1);
        else
            p("hada_w2_a").zero_();
        return;
    }
    if (shapes_.count("lokr_w2")) {
        if (options_.use_scalar)
            kaiming("lokr_w2");
        else
            p("lokr_w2").zero_();
    } else {
        kaiming("lokr_w2_a");
        if (options_.use_scalar)
            kaiming("lokr_w2_b");
        else
            p("lokr_w2_b").zero_();
    }
    if (shapes_.count("lokr_w1")) {
        kaiming("lokr_w1");
    } else {
        kaiming("lokr_w1_a");
        kaiming("lokr_w1_b");
    }
}

at::Tensor LycorisAdapterImpl::delta_weight() const {
    auto params = named_parameters(false);
    auto get = [&](const std::string& n) { return params[n]; };
    at::Tensor d;
    if (options_.algo == "locon") {
        d = at::matmul(get("lora_up"), get("lora_down")) * scale_;
    } else if (options_.algo == "loha") {
        d = at::matmul(get("hada_w1_a"), get("hada_w1_b")) * at::matmul(get("hada_w2_a"), get("hada_w2_b")) *
            scale_;
    } else {
        const at::Tensor w1 =
            shapes_.count("lokr_w1") ? get("lokr_w1") : at::matmul(get("lokr_w1_a"), get("lokr_w1_b"));
        const at::Tensor w2 =
            shapes_.count("lokr_w2") ? get("lokr_w2") : at::matmul(get("lokr_w2_a"), get("lokr_w2_b"));
        d = at::kron(w1, w2) * scale_;
    }
    // LyCORIS's forward: get_weight(...) * self.scalar.
    return options_.use_scalar ? d * get("scalar") : d;
}

std::map<std::string, at::Tensor> LycorisAdapterImpl::file_tensors() const {
    std::map<std::string, at::Tensor> out;
    auto params = named_parameters(false);
    for (const auto& [name, shape] : shapes_) out[name] = params[name].detach();
    if (options_.algo == "locon") {
        // LoConModule.custom_state_dict: lora_up.weight (times the scalar), lora_down.weight.
        at::Tensor up = out.at("lora_up");
        if (options_.use_scalar) up = up * params["scalar"].detach();
        return {{"lora_down.weight", out.at("lora_down")}, {"lora_up.weight", up}};
    }
    if (options_.use_scalar) {
        // custom_state_dict of lokr.py / loha.py: the scalar goes into w1 (or w1_a), the file has none.
        const char* w1 = options_.algo == "loha"    ? "hada_w1_a"
                         : shapes_.count("lokr_w1") ? "lokr_w1"
                                                    : "lokr_w1_a";
        out[w1] = out[w1] * params["scalar"].detach();
    }
    return out;
}

void LycorisAdapterImpl::copy_from(const LycorisAdapterImpl& other, const std::string& what) {
    if (other.shapes_ != shapes_ || other.options_.algo != options_.algo)
        fail(kComponent, "load", "{}: the file's {} adapter does not have this module's shapes ({} {})", what,
             other.options_.algo, options_.algo, options_.dim);
    at::NoGradGuard no_grad;
    auto mine = named_parameters(false);
    auto theirs = other.named_parameters(false);
    for (const auto& [name, shape] : shapes_) mine[name].copy_(theirs[name]);
    // A file's w1 holds the scalar (LyCORIS's load_weight_hook sets it to 1 likewise).
    if (options_.use_scalar)
        mine["scalar"].fill_(other.options_.use_scalar ? theirs["scalar"].item<double>() : 1.0);
    scale_ = other.scale_;
    saved_alpha_ = other.saved_alpha_;
}

std::shared_ptr<LycorisAdapterImpl> LycorisAdapterImpl::from_tensors(
    int64_t in, int64_t out, const std::map<std::string, at::Tensor>& t, std::optional<double> alpha,
    const std::string& what) {
    auto has = [&](const char* n) { return t.count(n) > 0; };
    auto need2d = [&](const char* n) -> const at::Tensor& {
        const at::Tensor& x = t.at(n);
        if (x.dim() != 2)
            fail(kComponent, "load", "{}: '{}' has shape {}, expected a matrix", what, n,
                 shape_str(x.sizes()));
        return x;
    };
    LycorisOptions o;
    std::map<std::string, std::vector<int64_t>> shapes;
    int64_t rank = 0;
    if (has("lora_down") || has("lora_up")) {
        // LoCon (LyCORIS's LoConModule on a Linear): lora_down [r, in], lora_up [out, r].
        o.algo = "locon";
        for (const char* n : {"lora_down", "lora_up"})
            if (!has(n)) fail(kComponent, "load", "{}: the LoCon adapter lacks '{}'", what, n);
        const at::Tensor &down = need2d("lora_down"), &up = need2d("lora_up");
        rank = down.size(0);
        if (down.size(1) != in || up.size(0) != out || up.size(1) != rank)
            fail(kComponent, "load", "{}: LoCon shapes lora_down {} lora_up {} do not make a [{}, {}] weight",
                 what, shape_str(down.sizes()), shape_str(up.sizes()), out, in);
        shapes["lora_down"] = down.sizes().vec();
        shapes["lora_up"] = up.sizes().vec();
    } else if (has("hada_w1_a") || has("hada_w1_b") || has("hada_w2_a") || has("hada_w2_b")) {
        o.algo = "loha";
        for (const char* n : {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"})
            if (!has(n)) fail(kComponent, "load", "{}: the LoHa adapter lacks '{}'", what, n);
        const at::Tensor &a1 = need2d("hada_w1_a"), &b1 = need2d("hada_w1_b"), &a2 = need2d("hada_w2_a"),
                         &b2 = need2d("hada_w2_b");
        rank = b1.size(0);
        if (a1.size(0) != out || a1.size(1) != rank || b1.size(1) != in || a2.sizes() != a1.sizes() ||
            b2.sizes() != b1.sizes())
            fail(kComponent, "load",
                 "{}: LoHa shapes hada_w1_a {} hada_w1_b {} hada_w2_a {} hada_w2_b {} do not make a [{}, {}] "
                 "weight",
                 what, shape_str(a1.sizes()), shape_str(b1.sizes()), shape_str(a2.sizes()),
                 shape_str(b2.sizes()), out, in);
        for (const char* n : {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"})
            shapes[n] = t.at(n).sizes().vec();
    } else {
        o.algo = "lokr";
        std::vector<int64_t> w1, w2;
        bool w1_low = false, w2_low = false;
        if (has("lokr_w1")) {
            w1 = need2d("lokr_w1").sizes().vec();
        } else if (has("lokr_w1_a") && has("lokr_w1_b")) {
            const at::Tensor &a = need2d("lokr_w1_a"), &b = need2d("lokr_w1_b");
            if (a.size(1) != b.size(0))
                fail(kComponent, "load", "{}: lokr_w1_a {} and lokr_w1_b {} do not multiply", what,
                     shape_str(a.sizes()), shape_str(b.sizes()));
            w1 = {a.size(0), b.size(1)};
            w1_low = true;
            rank = b.size(0);
        } else {
            fail(kComponent, "load", "{}: the LoKr adapter lacks lokr_w1 (or lokr_w1_a and lokr_w1_b)", what);
        }
        if (has("lokr_w2")) {
            w2 = need2d("lokr_w2").sizes().vec();
        } else if (has("lokr_w2_a") && has("lokr_w2_b")) {
            const at::Tensor &a = need2d("lokr_w2_a"), &b = need2d("lokr_w2_b");
            if (a.size(1) != b.size(0))
                fail(kComponent, "load", "{}: lokr_w2_a {} and lokr_w2_b {} do not multiply", what,
                     shape_str(a.sizes()), shape_str(b.sizes()));
            w2 = {a.size(0), b.size(1)};
            w2_low = true;
            rank = b.size(0);  // ComfyUI: w2's rank wins
        } else {
            fail(kComponent, "load", "{}: the LoKr adapter lacks lokr_w2 (or lokr_w2_a and lokr_w2_b)", what);
        }
        if (w1[0] * w2[0] != out || w1[1] * w2[1] != in)
            fail(kComponent, "load",
                 "{}: kron of w1 {} and w2 {} is [{}, {}], but the module's weight is [{}, {}]", what,
                 shape_str(w1), shape_str(w2), w1[0] * w2[0], w1[1] * w2[1], out, in);
        for (const char* n : {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"})
            if (has(n)) shapes[n] = t.at(n).sizes().vec();
        o.full_matrix = !w1_low && !w2_low;
        o.decompose_both = w1_low;
    }
    if (rank == 0) rank = 1;  // LoKr with both factors full: scale 1 whatever the alpha
    o.dim = rank;
    o.alpha = alpha.value_or(static_cast<double>(rank));
    const double scale = (o.algo == "lokr" && o.full_matrix) ? 1.0 : o.alpha / static_cast<double>(rank);
    auto a = std::make_shared<LycorisAdapterImpl>(in, out, o, shapes, scale, o.alpha);
    at::NoGradGuard no_grad;
    auto params = a->named_parameters(false);
    for (const auto& [name, shape] : shapes) params[name].copy_(t.at(name));
    return a;
}

}  // namespace st::sdk
