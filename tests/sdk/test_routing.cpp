// tread_config parsing (st/routing.h): SimpleTuner's form, negative indices from the end, both ends
// inclusive, and errors that name the route and what is wrong.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "st/error.h"
#include "st/routing.h"

namespace {

using nlohmann::json;
using st::sdk::parse_tread_config;
using st::sdk::TokenRoute;

std::string error_of(const json& config, int64_t blocks = 30) {
    try {
        parse_tread_config(config, blocks);
    } catch (const st::Error& e) {
        return e.what();
    }
    return "no error";
}

TEST(TreadConfigTest, QuickstartRouteWithNegativeEnd) {
    const auto routes = parse_tread_config(
        json::parse(R"({"routes": [{"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": -2}]})"),
        30);
    ASSERT_EQ(routes.size(), 1u);
    EXPECT_EQ(routes[0].start, 2);
    EXPECT_EQ(routes[0].end, 28);
    EXPECT_DOUBLE_EQ(routes[0].selection_ratio, 0.5);
    EXPECT_EQ(routes[0].selection, TokenRoute::Selection::random);
    EXPECT_EQ(st::sdk::describe_routes(routes),
              "route 0: 50% of the video tokens skip blocks 2 .. 28 (random)");
}

TEST(TreadConfigTest, SeveralOrderedRoutesAndL1Selection) {
    const auto routes = parse_tread_config(json::parse(R"({"routes": [
        {"selection_ratio": 0.1, "start_layer_idx": 0, "end_layer_idx": 3},
        {"selection_ratio": 0.3, "start_layer_idx": 4, "end_layer_idx": -5, "selection": "l1"},
        {"selection_ratio": 0.0, "start_layer_idx": -3, "end_layer_idx": -1}]})"),
                                           30);
    ASSERT_EQ(routes.size(), 3u);
    EXPECT_EQ(routes[1].start, 4);
    EXPECT_EQ(routes[1].end, 25);
    EXPECT_EQ(routes[1].selection, TokenRoute::Selection::l1);
    EXPECT_EQ(routes[2].start, 27);
    EXPECT_EQ(routes[2].end, 29);
    EXPECT_TRUE(parse_tread_config(nullptr, 30).empty());
    EXPECT_TRUE(parse_tread_config(json::parse(R"({"routes": []})"), 30).empty());
}

TEST(TreadConfigTest, ErrorsNameTheRouteAndTheProblem) {
    auto route = [](json r) { return json{{"routes", json::array({r})}}; };
    const json ok = {{"selection_ratio", 0.5}, {"start_layer_idx", 2}, {"end_layer_idx", -2}};
    json r = ok;
    r["selection_ratio"] = 1.0;
    EXPECT_NE(error_of(route(r)).find("tread_config route 0: selection_ratio 1 is outside [0, 1)"),
              std::string::npos)
        << error_of(route(r));
    r = ok;
    r["selection_ratio"] = -0.1;
    EXPECT_NE(error_of(route(r)).find("outside [0, 1)"), std::string::npos);
    r = ok;
    r["end_layer_idx"] = 30;
    EXPECT_NE(error_of(route(r)).find(
                  "end_layer_idx 30 is out of range for a model of 30 blocks (valid: -30 .. 29)"),
              std::string::npos)
        << error_of(route(r));
    r = ok;
    r["start_layer_idx"] = -31;
    EXPECT_NE(error_of(route(r)).find("start_layer_idx -31 is out of range"), std::string::npos);
    r = ok;
    r["start_layer_idx"] = 20;
    r["end_layer_idx"] = 10;
    EXPECT_NE(error_of(route(r)).find("end_layer_idx (block 10) is before start_layer_idx (block 20)"),
              std::string::npos);
    r = ok;
    r.erase("end_layer_idx");
    EXPECT_NE(error_of(route(r)).find("route 0: 'end_layer_idx' is missing"), std::string::npos);
    r = ok;
    r["ratio"] = 0.2;
    EXPECT_NE(error_of(route(r)).find("unknown key 'ratio'"), std::string::npos);
    r = ok;
    r["selection"] = "topk";
    EXPECT_NE(error_of(route(r)).find("selection 'topk' is not random or l1"), std::string::npos);
    r = ok;
    r["selection_ratio"] = "half";
    EXPECT_NE(error_of(route(r)).find("selection_ratio"), std::string::npos) << error_of(route(r));

    const json overlap = json::parse(R"({"routes": [
        {"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": 10},
        {"selection_ratio": 0.5, "start_layer_idx": 10, "end_layer_idx": 12}]})");
    EXPECT_NE(error_of(overlap).find(
                  "tread_config route 1: blocks 10 .. 12 overlap or precede route 0 (blocks 2 .. 10)"),
              std::string::npos)
        << error_of(overlap);
    EXPECT_NE(error_of(json::parse(R"({"route": []})")).find("expected {\"routes\""), std::string::npos);
    EXPECT_NE(error_of(json::parse(R"({"routes": [], "seed": 1})")).find("unknown key 'seed'"),
              std::string::npos);
}

}  // namespace
