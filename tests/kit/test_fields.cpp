// FieldTable (st/kit/fields.h): one declaration reads, writes, keeps defaults, and names unknown keys
// with the closest known one; nulls, optionals, arrays of the wrong length, wrong types.
#include <gtest/gtest.h>

#include "st/error.h"
#include "st/kit/fields.h"

namespace {

struct Demo {
    int64_t num_layers = 30;
    double eps = 1e-6;
    bool norm = true;
    std::string mode = "attn";
    std::optional<int64_t> image_dim;
    std::array<int64_t, 3> patch{1, 2, 2};
    std::vector<int64_t> layers{0, 4};
    int64_t out = 16;
};

const st::kit::FieldTable<Demo>& table() {
    static const auto t = st::kit::FieldTable<Demo>("model.demo@1", "demo config")
                              .constant("_class_name", "Demo")
                              .field("num_layers", &Demo::num_layers)
                              .field("eps", &Demo::eps)
                              .field("norm", &Demo::norm)
                              .field("mode", &Demo::mode)
                              .field("image_dim", &Demo::image_dim)
                              .field("patch_size", &Demo::patch)
                              .field("layers", &Demo::layers)
                              .field("out_channels", &Demo::out, int64_t{-1})
                              .ignore("dropout");
    return t;
}

std::string error_of(const nlohmann::json& j) {
    try {
        table().from_json(j, "cfg.json");
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(FieldTableTest, AbsentKeysKeepDefaultsAndEveryFieldRoundTrips) {
    const Demo d = table().from_json(nlohmann::json::object(), "cfg.json");
    EXPECT_EQ(d.num_layers, 30);
    EXPECT_EQ(d.mode, "attn");
    EXPECT_FALSE(d.image_dim);
    Demo e = table().from_json({{"_name_or_path", "x"},
                                {"num_layers", 2},
                                {"eps", 1e-5},
                                {"norm", false},
                                {"mode", "off"},
                                {"image_dim", 64},
                                {"patch_size", {1, 4, 4}},
                                {"layers", {1}},
                                {"out_channels", nullptr},
                                {"dropout", 0.1}},
                               "cfg.json");
    EXPECT_EQ(e.num_layers, 2);
    EXPECT_DOUBLE_EQ(e.eps, 1e-5);
    EXPECT_FALSE(e.norm);
    EXPECT_EQ(e.mode, "off");
    EXPECT_EQ(*e.image_dim, 64);
    EXPECT_EQ(e.patch, (std::array<int64_t, 3>{1, 4, 4}));
    EXPECT_EQ(e.layers, std::vector<int64_t>{1});
    EXPECT_EQ(e.out, -1) << "null gives the declared null value";
    const nlohmann::json j = table().to_json(e);
    EXPECT_EQ(j["_class_name"], "Demo");
    EXPECT_EQ(j["image_dim"], 64);
    EXPECT_FALSE(j.contains("dropout")) << "ignored keys are not written";
    const Demo back = table().from_json(j, "round trip");
    EXPECT_EQ(back.patch, e.patch);
    EXPECT_EQ(back.layers, e.layers);
    e.image_dim.reset();
    EXPECT_TRUE(table().to_json(e)["image_dim"].is_null());
}

TEST(FieldTableTest, ErrorsNameTheFileTheKeyAndTheClosestKnownKey) {
    const std::string unknown = error_of({{"num_layer", 2}});
    EXPECT_NE(unknown.find("cfg.json: unknown key 'num_layer' in a demo config"), std::string::npos)
        << unknown;
    EXPECT_NE(unknown.find("closest known key 'num_layers'"), std::string::npos) << unknown;
    EXPECT_NE(error_of({{"patch_size", {1, 2}}}).find("key 'patch_size' must have 3 entries"),
              std::string::npos);
    EXPECT_NE(
        error_of({{"num_layers", "two"}}).find(R"(key 'num_layers' has value "two"; expected an integer)"),
        std::string::npos);
    EXPECT_NE(error_of(nlohmann::json::array()).find("expected a JSON object"), std::string::npos);
}
