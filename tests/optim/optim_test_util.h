// Helpers shared by the tests/optim suites: golden file access and optimizer construction.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/optim.h"
#include "st/optimizer.h"

namespace st::plugins::optim::test {

inline const nlohmann::json& golden() {
    static const nlohmann::json j = [] {
        const std::string path = std::string(ST_TEST_GOLDEN_DIR) + "/optim/optim_golden.json";
        std::ifstream in(path);
        if (!in) throw std::runtime_error("cannot open " + path + " (run tests/golden/optim/make_golden.py)");
        return nlohmann::json::parse(in);
    }();
    return j;
}

inline at::Tensor from_json(const nlohmann::json& values, const std::vector<int64_t>& shape) {
    std::vector<float> v;
    for (const auto& x : values) v.push_back(static_cast<float>(x.get<double>()));
    return at::tensor(v, at::kFloat).view(shape).clone();
}

inline at::Tensor from_json64(const nlohmann::json& values, const std::vector<int64_t>& shape) {
    std::vector<double> v;
    for (const auto& x : values) v.push_back(x.get<double>());
    return at::tensor(v, at::kDouble).view(shape).clone();
}

/// Config with the given keys (a resolved configuration as the host would pass it).
inline sdk::ConfigView config(nlohmann::json values = nlohmann::json::object()) {
    return sdk::ConfigView(std::make_shared<const nlohmann::json>(std::move(values)));
}

/// Parameters named as in the golden file, in `dtype`, with requires_grad.
inline std::vector<sdk::OptimizerParam> golden_params(at::ScalarType dtype) {
    std::vector<sdk::OptimizerParam> out;
    for (const auto& [name, p] : golden()["params"].items()) {
        auto shape = p["shape"].get<std::vector<int64_t>>();
        at::Tensor t = from_json(p["values"], shape).to(dtype).set_requires_grad(true);
        out.push_back({name, t, p["group"].get<int>()});
    }
    return out;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace st::plugins::optim::test
