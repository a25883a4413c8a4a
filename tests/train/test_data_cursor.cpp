// DataCursor in process on in-memory backends: the order over backends and epochs, the epoch budget,
// the epoch a batch belongs to, exact position round trips, and walks that leave the position alone.
#include <gtest/gtest.h>

#include "fake_parts.h"
#include "st/error.h"
#include "train/data_cursor.h"

namespace {

using st::host::train::DataCursor;
using st_test::FakeBackend;

std::vector<st::host::OpenedBackend> two_backends() {
    std::vector<st::host::OpenedBackend> b;
    b.push_back(
        st_test::opened(std::make_unique<FakeBackend>("a", std::vector<std::string>{"a0", "a1", "a2"})));
    b.push_back(st_test::opened(std::make_unique<FakeBackend>("b", std::vector<std::string>{"b0"})));
    return b;
}

std::string ids(const st::sdk::Batch& b) {
    std::string s;
    for (const auto& x : b.samples) s += (s.empty() ? "" : ",") + x.id;
    return s;
}

// Every batch until the cursor says done (epoch ends as "|").
std::string walk(DataCursor& c, int max_calls = 100) {
    std::string s;
    for (int i = 0; i < max_calls && !c.done(); ++i) {
        auto b = c.next();
        s += b ? ids(*b) + " " : std::string("| ");
    }
    return s;
}

}  // namespace

TEST(DataCursorTest, WalksBackendsInOrderEpochByEpochWithinTheBudget) {
    auto backends = two_backends();
    DataCursor c(backends, 2, 2);
    std::vector<int64_t> opened;
    c.on_epoch_start([&](int64_t e) { opened.push_back(e); });
    EXPECT_EQ(c.batches_per_epoch(), 3);
    EXPECT_EQ(c.epoch(), 0);
    auto first = c.next();
    ASSERT_TRUE(first);
    EXPECT_EQ(c.epoch(), 1);
    EXPECT_TRUE(c.epoch_open());
    // Epoch 0: a's two batches then b's; epoch 1 rotates the backends' orders by one.
    EXPECT_EQ(ids(*first) + " " + walk(c), "a0,a1 a2 b0 | a1,a2 a0 b0 | | ");
    EXPECT_TRUE(c.done());
    EXPECT_EQ(opened, (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(c.epoch(), 2);
    EXPECT_FALSE(c.next().has_value());
}

TEST(DataCursorTest, TheEpochOfABatchIsKnownOnlyWhenItIsDrawn) {
    // The last batch of epoch 1 leaves the epoch open: the next call closes it and the one after opens
    // epoch 2. A step must take its epoch from its first batch, not from before drawing it.
    auto backends = two_backends();
    DataCursor c(backends, 3, 0);
    ASSERT_TRUE(c.next());  // a0,a1,a2
    ASSERT_TRUE(c.next());  // b0: the last batch of epoch 1
    EXPECT_EQ(c.epoch(), 1);
    EXPECT_TRUE(c.epoch_open());
    EXPECT_FALSE(c.next().has_value());  // epoch 1 closes
    EXPECT_EQ(c.epoch(), 1);
    EXPECT_FALSE(c.epoch_open());
    ASSERT_TRUE(c.next());
    EXPECT_EQ(c.epoch(), 2);
    EXPECT_FALSE(c.done()) << "max_epochs 0: epochs never run out";
}

TEST(DataCursorTest, APositionRestoredGivesTheSameBatchesAgain) {
    auto backends = two_backends();
    DataCursor c(backends, 2, 0);
    c.next();
    c.next();
    const auto p = c.position();
    const std::string ahead = walk(c, 5);
    auto other = two_backends();
    DataCursor d(other, 2, 0);
    d.restore(p);
    EXPECT_EQ(walk(d, 5), ahead);
    EXPECT_EQ(p.data.size(), 2u);
    // A position of another number of backends is refused, naming both counts.
    DataCursor::Position bad = p;
    bad.data.erase(0);
    try {
        d.restore(bad);
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("holds 1 data backend(s) but this run opened 2"),
                  std::string::npos);
    }
}

TEST(DataCursorTest, FirstSamplesScanAndEvalBatchesLeaveThePositionAlone) {
    auto backends = two_backends();
    static_cast<FakeBackend&>(*backends[0].backend).held_out = {"h0", "h1", "h2"};
    DataCursor c(backends, 2, 0);
    c.next();
    const auto before = c.position();
    const auto first = c.first_samples(2);
    ASSERT_EQ(first.size(), 2u);
    EXPECT_EQ(ids(first[0]) + " " + ids(first[1]), "a0 a1");
    std::vector<std::string> seen;
    EXPECT_TRUE(c.scan([&](const st::sdk::Batch& b) {
        seen.push_back(ids(b));
        return ids(b) == "b0";
    }));
    EXPECT_EQ(seen, (std::vector<std::string>{"a0", "a1", "a2", "b0"}));
    EXPECT_FALSE(c.scan([](const st::sdk::Batch&) { return false; }));
    EXPECT_EQ(c.eval_batches(2, 1).size(), 2u);
    EXPECT_EQ(c.position().data, before.data);
    EXPECT_EQ(ids(*c.next()), "a2");
}
