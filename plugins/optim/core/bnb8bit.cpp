// 8-bit block-wise quantized optimizer states, after bitsandbytes' AdamW8bit / Lion8bit
// (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"; bitsandbytes
// `functional.create_dynamic_map` and the `*8bit2StateBlockwise` / `*8bit1StateBlockwise` kernels).
//
// Each state tensor is stored as one uint8 code index per element plus one fp32 absmax per block of
// 256 elements. Codes index a 256-entry "dynamic tree" map: signed for the first moment (m can be
// negative), unsigned for the second (v >= 0), so small values keep relative precision. Every step
// dequantizes a block into fp32, applies the fp32 update (the parameter update uses the fresh fp32
// moments), takes the block's new absmax and requantizes to the nearest code. Parameters with fewer
// than min_8bit_size (4096) elements keep plain fp32 state, as bitsandbytes does.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "optimizer_base.h"
#include "st/error.h"

namespace st::plugins::optim {
namespace {

struct CodeMap {
    std::array<float, 256> values{};  ///< sorted ascending
    std::array<float, 255> mids{};    ///< midpoints between neighbours: nearest-code search
};

// bitsandbytes create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for exponent i in
// 0..6, 2^i (signed, mirrored) or 2^(i+1) (unsigned) linear fractions between 0.1 and 1 scaled by
// 10^(i-6), plus 0 and 1. Built in double, stored as float.
CodeMap make_dynamic_map(bool is_signed) {
    std::vector<double> data;
    for (int i = 0; i < 7; ++i) {
        const int items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        const double scale = std::pow(10.0, -6 + i);
        for (int k = 0; k + 1 < items; ++k) {
            const double lo = 0.1 + 0.9 * k / (items - 1);
            const double hi = 0.1 + 0.9 * (k + 1) / (items - 1);
            const double mean = (lo + hi) / 2.0;
            data.push_back(scale * mean);
            if (is_signed) data.push_back(-scale * mean);
        }
    }
    data.push_back(0.0);
    data.push_back(1.0);
    std::sort(data.begin(), data.end());
    CodeMap map;
    for (size_t i = 0; i < 256; ++i) map.values[i] = static_cast<float>(data.at(i));
    for (size_t i = 0; i < 255; ++i) map.mids[i] = 0.5f * (map.values[i] + map.values[i + 1]);
    return map;
}

const CodeMap& signed_map() {
    static const CodeMap m = make_dynamic_map(true);
    return m;
}
const CodeMap& unsigned_map() {
    static const CodeMap m = make_dynamic_map(false);
    return m;
}

inline uint8_t quantize(const CodeMap& map, float x) {
    // Index of the nearest code: the number of midpoints below x.
    return static_cast<uint8_t>(std::upper_bound(map.mids.begin(), map.mids.end(), x) - map.mids.begin());
}

constexpr int64_t kBlock = 256;

struct Q8 {
    uint8_t* q;
    float* absmax;
};

Q8 q8(ParamState& st, const std::string& key) {
    return Q8{st.tensors[key + ".q"].data_ptr<uint8_t>(), st.tensors[key + ".absmax"].data_ptr<float>()};
}

void add_q8_state(ParamState& st, const std::string& key, int64_t numel) {
    const int64_t blocks = (numel + kBlock - 1) / kBlock;
    st.tensors[key + ".q"] = at::zeros({numel}, at::kByte);
    st.tensors[key + ".absmax"] = at::zeros({blocks}, at::kFloat);
}

class Bnb8bit final : public OptimizerBase {
  public:
    Bnb8bit(std::string name, const sdk::OptimizerInit& init, OptimizerHParams hp, bool is_lion)
        : OptimizerBase(std::move(name), init, hp), lion_(is_lion) {
        for (const auto& p : params()) {
            if (!p.param.is_cpu()) {
                fail(component_, "create",
                     "'{}' is on {}; the 8-bit optimizers run on CPU tensors in this build", p.name,
                     p.param.device().str());
            }
        }
    }

  protected:
    bool quantized(const at::Tensor& p) const { return p.numel() >= hparams_.min_8bit_size; }

    ParamState init_state(const sdk::OptimizerParam& p) const override {
        ParamState st;
        const auto opts = p.param.options().dtype(at::kFloat);
        if (quantized(p.param)) {
            add_q8_state(st, "exp_avg", p.param.numel());
            if (!lion_) add_q8_state(st, "exp_avg_sq", p.param.numel());
        } else {
            st.tensors["exp_avg"] = at::zeros(p.param.sizes(), opts);
            if (!lion_) st.tensors["exp_avg_sq"] = at::zeros(p.param.sizes(), opts);
        }
        return st;
    }

    void update(const sdk::OptimizerParam& prm, const GroupState& group, ParamState& st) override {
        at::Tensor p = prm.param;
        const bool direct = p.scalar_type() == at::kFloat && p.is_contiguous();
        at::Tensor pf = direct ? p : p.to(at::kFloat).contiguous();
        at::Tensor gf = p.grad().to(at::kFloat).contiguous();
        if (quantized(p)) {
            if (lion_) {
                lion_step(pf.data_ptr<float>(), gf.data_ptr<float>(), q8(st, "exp_avg"), p.numel(), group);
            } else {
                adam_step(pf.data_ptr<float>(), gf.data_ptr<float>(), q8(st, "exp_avg"), q8(st, "exp_avg_sq"),
                          p.numel(), group, st.step);
            }
        } else {
            fp32_step(pf, gf, st, group);
        }
        if (!direct) p.copy_(pf.view(p.sizes()));
    }

  private:
    void adam_step(float* p, const float* g, Q8 m8, Q8 v8, int64_t n, const GroupState& group,
                   int64_t step) const {
        const double lr = group.lr, b1 = hparams_.beta1, b2 = hparams_.beta2;
        const float decay = static_cast<float>(1.0 - lr * group.weight_decay);
        const float fb1 = static_cast<float>(b1), fa1 = static_cast<float>(1.0 - b1);
        const float fb2 = static_cast<float>(b2), fa2 = static_cast<float>(1.0 - b2);
        const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, static_cast<double>(step))));
        const float neg_step = static_cast<float>(-lr / (1.0 - std::pow(b1, static_cast<double>(step))));
        const float eps = static_cast<float>(hparams_.eps);
        const CodeMap& sm = signed_map();
        const CodeMap& um = unsigned_map();
        const int64_t blocks = (n + kBlock - 1) / kBlock;
        at::parallel_for(0, blocks, 16, [&](int64_t b0, int64_t b1e) {
            float mbuf[kBlock], vbuf[kBlock];
            for (int64_t b = b0; b < b1e; ++b) {
                const int64_t start = b * kBlock, len = std::min(kBlock, n - start);
                const float am = m8.absmax[b], av = v8.absmax[b];
                float new_am = 0.0f, new_av = 0.0f;
                for (int64_t j = 0; j < len; ++j) {
                    const int64_t i = start + j;
                    const float gi = g[i];
                    const float mi = sm.values[m8.q[i]] * am * fb1 + fa1 * gi;
                    const float vi = um.values[v8.q[i]] * av * fb2 + fa2 * gi * gi;
                    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
                    p[i] = p[i] * decay + neg_step * mi / denom;
                    mbuf[j] = mi;
                    vbuf[j] = vi;
                    new_am = std::max(new_am, std::fabs(mi));
                    new_av = std::max(new_av, vi);
                }
                m8.absmax[b] = new_am;
                v8.absmax[b] = new_av;
                const float inv_m = new_am > 0.0f ? 1.0f / new_am : 0.0f;
                const float inv_v = new_av > 0.0f ? 1.0f / new_av : 0.0f;
                for (int64_t j = 0; j < len; ++j) {
                    m8.q[start + j] = quantize(sm, mbuf[j] * inv_m);
                    v8.q[start + j] = quantize(um, vbuf[j] * inv_v);
                }
            }
        });
    }

    void lion_step(float* p, const float* g, Q8 m8, int64_t n, const GroupState& group) const {
        const double lr = group.lr, b1 = hparams_.beta1, b2 = hparams_.beta2;
        const float decay = static_cast<float>(1.0 - lr * group.weight_decay);
        const float fb1 = static_cast<float>(b1), fa1 = static_cast<float>(1.0 - b1);
        const float fb2 = static_cast<float>(b2), fa2 = static_cast<float>(1.0 - b2);
        const float neg_lr = static_cast<float>(-lr);
        const CodeMap& sm = signed_map();
        const int64_t blocks = (n + kBlock - 1) / kBlock;
        at::parallel_for(0, blocks, 16, [&](int64_t b0, int64_t b1e) {
            float mbuf[kBlock];
            for (int64_t b = b0; b < b1e; ++b) {
                const int64_t start = b * kBlock, len = std::min(kBlock, n - start);
                const float am = m8.absmax[b];
                float new_am = 0.0f;
                for (int64_t j = 0; j < len; ++j) {
                    const int64_t i = start + j;
                    const float gi = g[i];
                    const float mi = sm.values[m8.q[i]] * am;
                    const float c = mi * fb1 + fa1 * gi;
                    const float s = static_cast<float>((c > 0.0f) - (c < 0.0f));  // branch-free sign
                    p[i] = p[i] * decay + neg_lr * s;
                    const float mn = mi * fb2 + fa2 * gi;
                    mbuf[j] = mn;
                    new_am = std::max(new_am, std::fabs(mn));
                }
                m8.absmax[b] = new_am;
                const float inv = new_am > 0.0f ? 1.0f / new_am : 0.0f;
                for (int64_t j = 0; j < len; ++j) m8.q[start + j] = quantize(sm, mbuf[j] * inv);
            }
        });
    }

    // Small parameters: the same update with fp32 state (bitsandbytes' min_8bit_size rule).
    void fp32_step(at::Tensor& pf, const at::Tensor& gf, ParamState& st, const GroupState& group) const {
        const double lr = group.lr, b1 = hparams_.beta1, b2 = hparams_.beta2;
        at::Tensor m = st.tensors["exp_avg"].view(-1);
        at::Tensor p = pf.view(-1), g = gf.view(-1);
        p.mul_(1.0 - lr * group.weight_decay);
        if (lion_) {
            at::Tensor update = m.clone().mul_(b1).add_(g, 1.0 - b1).sign_();
            p.add_(update, -lr);
            m.mul_(b2).add_(g, 1.0 - b2);
            return;
        }
        at::Tensor v = st.tensors["exp_avg_sq"].view(-1);
        const double step = static_cast<double>(st.step);
        m.mul_(b1).add_(g, 1.0 - b1);
        v.mul_(b2).addcmul_(g, g, 1.0 - b2);
        at::Tensor denom = (v.sqrt() / std::sqrt(1.0 - std::pow(b2, step))).add_(hparams_.eps);
        p.addcdiv_(m, denom, -lr / (1.0 - std::pow(b1, step)));
    }

    bool lion_;
};

}  // namespace

std::unique_ptr<sdk::Optimizer> make_bnb_adamw8bit(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<Bnb8bit>("bnb-adamw8bit", init, hp, false);
}
std::unique_ptr<sdk::Optimizer> make_bnb_lion8bit(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<Bnb8bit>("bnb-lion8bit", init, hp, true);
}

}  // namespace st::plugins::optim
