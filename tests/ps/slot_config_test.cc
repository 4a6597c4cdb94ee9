#include "ps/slot_config.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "ps/sparse_table.h"

namespace choir {
namespace {

TEST(SlotConfigTest, OptimizerNamesRoundTrip) {
  for (OptimizerKind kind :
       {OptimizerKind::kAdagrad, OptimizerKind::kAdam, OptimizerKind::kSgd, OptimizerKind::kFtrl}) {
    absl::StatusOr<OptimizerKind> parsed = ParseOptimizerKind(OptimizerKindName(kind));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_EQ(*ParseOptimizerKind("AdaGrad"), OptimizerKind::kAdagrad);
  EXPECT_EQ(*ParseOptimizerKind("FTRL"), OptimizerKind::kFtrl);
  absl::Status unknown = ParseOptimizerKind("lamb").status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.message().find("adagrad, adam, sgd, ftrl"), absl::string_view::npos) << unknown;
}

TEST(SlotConfigTest, DefaultsAreValidAndDocumented) {
  SlotConfig c;
  EXPECT_TRUE(ValidateSlotConfig(c).ok());
  EXPECT_EQ(c.dim, 16);
  EXPECT_EQ(c.optimizer, OptimizerKind::kAdagrad);
  EXPECT_FLOAT_EQ(c.learning_rate, 0.01f);
  EXPECT_FLOAT_EQ(c.adagrad_initial_accumulator, 0.1f);
  EXPECT_EQ(StateFloatsPerDim(OptimizerKind::kAdagrad), 1);
  EXPECT_EQ(StateFloatsPerDim(OptimizerKind::kAdam), 2);
  EXPECT_EQ(StateFloatsPerDim(OptimizerKind::kSgd), 0);
  EXPECT_EQ(StateFloatsPerDim(OptimizerKind::kFtrl), 2);
  c.optimizer = OptimizerKind::kFtrl;
  EXPECT_TRUE(ValidateSlotConfig(c).ok());
  EXPECT_FLOAT_EQ(c.ftrl_initial_accumulator, 0.1f);
  EXPECT_EQ(c.ftrl_beta, 0.0f);
  EXPECT_EQ(c.ftrl_l1, 0.0f);
  EXPECT_EQ(c.ftrl_l2, 0.0f);
}

TEST(SlotConfigTest, OutOfRangeFieldsAreRejected) {
  auto rejected = [](void (*edit)(SlotConfig*)) {
    SlotConfig c;
    edit(&c);
    return ValidateSlotConfig(c).code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(rejected([](SlotConfig* c) { c->dim = 0; }));
  EXPECT_TRUE(rejected([](SlotConfig* c) { c->dim = 5000; }));
  EXPECT_TRUE(rejected([](SlotConfig* c) { c->learning_rate = -1; }));
  EXPECT_TRUE(rejected([](SlotConfig* c) { c->init_scale = -0.1f; }));
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->adagrad_initial_accumulator = 0;
    c->adagrad_epsilon = 0;
  }));
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->optimizer = OptimizerKind::kAdam;
    c->adam_beta1 = 1.0f;
  }));
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->optimizer = OptimizerKind::kAdam;
    c->adam_epsilon = 0;
  }));
  // FTRL divides by the learning rate and by its denominator at the initial accumulator.
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->optimizer = OptimizerKind::kFtrl;
    c->learning_rate = 0;
  }));
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->optimizer = OptimizerKind::kFtrl;
    c->ftrl_initial_accumulator = 0;
  }));
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->optimizer = OptimizerKind::kFtrl;
    c->ftrl_l1 = -0.1f;
  }));
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->optimizer = OptimizerKind::kFtrl;
    c->ftrl_l2 = std::numeric_limits<float>::infinity();
  }));
  EXPECT_TRUE(rejected([](SlotConfig* c) {
    c->optimizer = OptimizerKind::kFtrl;
    c->ftrl_beta = std::nanf("");
  }));
  // A zero accumulator is fine once beta or l2 keeps the denominator positive.
  SlotConfig c;
  c.optimizer = OptimizerKind::kFtrl;
  c.ftrl_initial_accumulator = 0;
  c.ftrl_beta = 1;
  EXPECT_TRUE(ValidateSlotConfig(c).ok());
  c.ftrl_beta = 0;
  c.ftrl_l2 = 0.5f;
  EXPECT_TRUE(ValidateSlotConfig(c).ok());
}

TEST(TableOptionsTest, InvalidOptionsAreRejected) {
  TableOptions options;
  EXPECT_EQ(ValidateTableOptions(options).code(), absl::StatusCode::kInvalidArgument);  // no slots
  options.slots[1] = SlotConfig{};
  EXPECT_TRUE(ValidateTableOptions(options).ok());
  options.num_shards = 0;
  EXPECT_EQ(SparseTable::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.num_shards = 16;
  options.slots[4096] = SlotConfig{};
  EXPECT_EQ(ValidateTableOptions(options).code(), absl::StatusCode::kInvalidArgument);
  options.slots.erase(4096);
  options.slots[2].dim = -3;
  absl::Status s = ValidateTableOptions(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("slot 2"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace choir
