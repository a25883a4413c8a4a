#include "sampler.h"

#include <fmt/core.h>

#include <algorithm>
#include <sstream>

#include "st/error.h"

namespace st::plugins::data_local {
namespace {

uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t z = a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// Fisher-Yates with our own index draw: std::shuffle's algorithm is implementation-defined, ours
/// gives the same order on every standard library.
void shuffle(std::vector<int64_t>& v, std::mt19937_64& g) {
    for (size_t i = v.size(); i > 1; --i) {
        const size_t j = static_cast<size_t>(g() % i);
        std::swap(v[i - 1], v[j]);
    }
}

}  // namespace

BucketSampler::BucketSampler(std::vector<SamplerDataset> datasets, uint64_t seed)
    : datasets_(std::move(datasets)), seed_(seed), rng_(seed) {
    layout_hash_ = compute_layout_hash();
}

int64_t BucketSampler::batches_per_epoch(int64_t b) const {
    if (b < 1) throw Error("data.local", "sampler", fmt::format("batch size {} must be >= 1", b));
    int64_t total = 0;
    for (const auto& d : datasets_) {
        if (d.probability <= 0) continue;
        for (const auto& m : d.bucket_members) {
            const int64_t n = static_cast<int64_t>(m.size()) * (1 + d.repeats);
            total += (n + b - 1) / b;
        }
    }
    return total;
}

void BucketSampler::build_orders() {
    cursors_.assign(datasets_.size(), Cursor{});
    for (size_t d = 0; d < datasets_.size(); ++d) {
        const auto& ds = datasets_[d];
        Cursor& c = cursors_[d];
        c.order.resize(ds.bucket_members.size());
        c.pos.assign(ds.bucket_members.size(), 0);
        for (size_t b = 0; b < ds.bucket_members.size(); ++b) {
            std::mt19937_64 g(mix(mix(seed_, static_cast<uint64_t>(epoch_)), mix(d, b)));
            auto& o = c.order[b];
            for (int r = 0; r <= ds.repeats; ++r) {
                std::vector<int64_t> pass = ds.bucket_members[b];
                shuffle(pass, g);
                o.insert(o.end(), pass.begin(), pass.end());
            }
        }
        c.exhausted = ds.probability <= 0 || ds.bucket_members.empty();
    }
}

void BucketSampler::start_epoch(int64_t epoch) {
    epoch_ = epoch;
    rng_.seed(mix(seed_, static_cast<uint64_t>(epoch) + 0x51ull));
    build_orders();
}

size_t BucketSampler::draw(size_t n) {
    return n <= 1 ? 0 : static_cast<size_t>(rng_() % n);
}

std::optional<SamplerPick> BucketSampler::next(int64_t batch_size) {
    if (batch_size < 1)
        throw Error("data.local", "sampler", fmt::format("batch size {} must be >= 1", batch_size));
    if (epoch_ < 0) start_epoch(0);
    double total = 0;
    for (size_t d = 0; d < datasets_.size(); ++d)
        if (!cursors_[d].exhausted) total += datasets_[d].probability;
    if (total <= 0) return std::nullopt;
    // Weighted dataset choice (torch.multinomial over `probability` in SimpleTuner).
    const double u = static_cast<double>(rng_() >> 11) / static_cast<double>(1ull << 53) * total;
    size_t chosen = datasets_.size();
    double acc = 0;
    for (size_t d = 0; d < datasets_.size(); ++d) {
        if (cursors_[d].exhausted) continue;
        acc += datasets_[d].probability;
        chosen = d;
        if (u < acc) break;
    }
    Cursor& c = cursors_[chosen];
    const auto& ds = datasets_[chosen];
    const size_t nb = ds.bucket_members.size();
    size_t b = c.bucket;
    for (size_t k = 0; k < nb && c.pos[b] >= c.order[b].size(); ++k) b = (b + 1) % nb;
    SamplerPick pick;
    pick.dataset = chosen;
    pick.bucket = ds.bucket_keys[b];
    auto& order = c.order[b];
    while (static_cast<int64_t>(pick.samples.size()) < batch_size && c.pos[b] < order.size())
        pick.samples.push_back(order[c.pos[b]++]);
    // Top a short bucket up with samples it already gave (SimpleTuner: from "exhausted" samples).
    const auto& members = ds.bucket_members[b];
    while (static_cast<int64_t>(pick.samples.size()) < batch_size)
        pick.samples.push_back(members[draw(members.size())]);
    c.bucket = (b + 1) % nb;
    c.exhausted = true;
    for (size_t k = 0; k < nb; ++k)
        if (c.pos[k] < c.order[k].size()) c.exhausted = false;
    return pick;
}

std::string BucketSampler::compute_layout_hash() const {
    uint64_t h = 1469598103934665603ull;
    auto add = [&](const std::string& s) {
        for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
    };
    for (const auto& d : datasets_) {
        add(d.id);
        add(std::to_string(d.repeats));
        for (size_t b = 0; b < d.bucket_keys.size(); ++b) {
            add(d.bucket_keys[b]);
            for (int64_t m : d.bucket_members[b]) add(std::to_string(m));
        }
    }
    return fmt::format("{:016x}", h);
}

nlohmann::json BucketSampler::state() const {
    std::ostringstream rng;
    rng << rng_;
    nlohmann::json ds = nlohmann::json::array();
    for (const auto& c : cursors_) ds.push_back({{"bucket", c.bucket}, {"pos", c.pos}});
    return {{"version", 1},           {"epoch", epoch_},  {"seed", seed_},
            {"layout", layout_hash_}, {"rng", rng.str()}, {"datasets", ds}};
}

void BucketSampler::restore(const nlohmann::json& s) {
    try {
        if (s.at("version") != 1)
            throw Error("data.local", "restore",
                        fmt::format("sampler state version {} is not 1", s.at("version").dump()));
        if (s.at("layout") != layout_hash_)
            throw Error(
                "data.local", "restore",
                fmt::format("the datasets changed since the checkpoint (layout {} != {}): files or buckets "
                            "differ, so the saved position cannot be resumed exactly",
                            s.at("layout").get<std::string>(), layout_hash_));
        seed_ = s.at("seed");
        epoch_ = s.at("epoch");
        if (epoch_ < 0) return;
        build_orders();
        const auto& ds = s.at("datasets");
        if (ds.size() != cursors_.size())
            throw Error(
                "data.local", "restore",
                fmt::format("sampler state has {} datasets, expected {}", ds.size(), cursors_.size()));
        for (size_t d = 0; d < cursors_.size(); ++d) {
            Cursor& c = cursors_[d];
            c.bucket = ds[d].at("bucket");
            c.pos = ds[d].at("pos").get<std::vector<size_t>>();
            if (c.pos.size() != c.order.size())
                throw Error("data.local", "restore", "sampler state bucket count differs from the datasets");
            c.exhausted = datasets_[d].probability <= 0 || datasets_[d].bucket_members.empty();
            if (!c.exhausted) {
                c.exhausted = true;
                for (size_t k = 0; k < c.pos.size(); ++k)
                    if (c.pos[k] < c.order[k].size()) c.exhausted = false;
            }
        }
        std::istringstream rng(s.at("rng").get<std::string>());
        rng >> rng_;
        if (!rng) throw Error("data.local", "restore", "sampler RNG state is not readable");
    } catch (const nlohmann::json::exception& e) {
        throw Error("data.local", "restore", fmt::format("malformed sampler state: {}", e.what()));
    }
}

}  // namespace st::plugins::data_local
