#include "core/error_budget.h"

#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

ErrorBudget Budget(int64_t max_errors, double max_fraction) {
  ErrorBudget budget;
  budget.max_errors = max_errors;
  budget.max_fraction = max_fraction;
  return budget;
}

absl::Status BadRow(int line) {
  return absl::DataLossError(absl::StrCat("rows.csv:", line, ": expected 5 fields"));
}

TEST(ErrorCounterTest, DefaultBudgetFailsOnFirstBadInputWithItsCodeAndMessage) {
  ErrorCounter counter;
  counter.CountGood(10);
  const absl::Status status = counter.CountBad(BadRow(11));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), "rows.csv:11: expected 5 fields (1 bad inputs, budget 0 exceeded)");
  EXPECT_EQ(counter.errors(), 1);
  EXPECT_EQ(counter.seen(), 10);
}

TEST(ErrorCounterTest, AbsoluteBudgetToleratesExactlyMaxErrors) {
  ErrorCounter counter(Budget(3, 0));
  for (int i = 1; i <= 3; ++i) EXPECT_TRUE(counter.CountBad(BadRow(i)).ok()) << i;
  const absl::Status status = counter.CountBad(BadRow(4));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  // The failure carries the first error, not the last.
  EXPECT_EQ(status.message(), "rows.csv:1: expected 5 fields (4 bad inputs, budget 3 exceeded)");
}

TEST(ErrorCounterTest, FractionBudgetAppliesOnlyFromAThousandInputs) {
  // A bad first input fails although the fraction alone would allow it.
  EXPECT_FALSE(ErrorCounter(Budget(0, 0.5)).CountBad(BadRow(1)).ok());

  ErrorCounter too_early(Budget(0, 0.01));
  too_early.CountGood(998);
  EXPECT_FALSE(too_early.CountBad(BadRow(999)).ok());  // 999 inputs

  ErrorCounter enough(Budget(0, 0.01));
  enough.CountGood(999);
  EXPECT_TRUE(enough.CountBad(BadRow(1000)).ok());  // 1 of 1000 inputs
}

TEST(ErrorCounterTest, FractionBudgetFailsWhenFractionExceeded) {
  ErrorCounter counter(Budget(0, 0.01));
  counter.CountGood(1980);
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(counter.CountBad(BadRow(i)).ok()) << i;  // 20/2000
  const absl::Status status = counter.CountBad(BadRow(99));                         // 21/2001
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("21 bad inputs"), absl::string_view::npos) << status;
}

TEST(ErrorCounterTest, CountBadWithACountSpendsThatMuchBudgetAndKeepsOneMessage) {
  ErrorCounter counter(Budget(100, 0));
  counter.CountGood(50);
  EXPECT_TRUE(counter.CountBad(BadRow(7), 100).ok()) << "100 of a budget of 100";
  EXPECT_EQ(counter.errors(), 100);
  EXPECT_EQ(counter.seen(), 50);
  EXPECT_EQ(counter.messages(), std::vector<std::string>{"rows.csv:7: expected 5 fields"});
  const absl::Status status = counter.CountBad(BadRow(8));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(),
            "rows.csv:7: expected 5 fields (101 bad inputs, budget 100 exceeded)");

  ErrorCounter one_short(Budget(99, 0));
  EXPECT_FALSE(one_short.CountBad(BadRow(1), 100).ok());
}

TEST(ErrorCounterTest, FractionBudgetComparesCountedErrorsWithGoodInputs) {
  ErrorCounter counter(Budget(0, 0.1));
  counter.CountGood(900);
  EXPECT_TRUE(counter.CountBad(BadRow(1), 100).ok());  // 100 of 1000
  EXPECT_FALSE(counter.CountBad(BadRow(2), 2).ok());   // 102 of 1002
}

TEST(ErrorCounterTest, HugeCountsSaturateInsteadOfOverflowing) {
  ErrorCounter counter(Budget(100, 0.5));
  counter.CountGood(10);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_FALSE(counter.CountBad(BadRow(1), kMax).ok());
  EXPECT_FALSE(counter.CountBad(BadRow(2), kMax).ok());
  EXPECT_EQ(counter.errors(), kMax);
  ErrorCounter other;
  other.CountGood(kMax);
  counter.Merge(other);
  EXPECT_EQ(counter.seen(), kMax);
  EXPECT_EQ(counter.errors(), kMax);
}

TEST(ErrorCounterTest, KeepsOnlyTheFirstMessages) {
  ErrorCounter counter(Budget(100, 0));
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(counter.CountBad(BadRow(i)).ok());
  ASSERT_EQ(counter.messages().size(), static_cast<size_t>(ErrorCounter::kKeptMessages));
  EXPECT_EQ(counter.messages().front(), "rows.csv:0: expected 5 fields");
  EXPECT_EQ(counter.messages().back(), "rows.csv:19: expected 5 fields");
  EXPECT_EQ(counter.errors(), 30);
}

TEST(ErrorCounterTest, MergeAddsCountsAndKeepsMessagesUpToTheLimit) {
  ErrorCounter a(Budget(100, 0));
  ErrorCounter b(Budget(100, 0));
  a.CountGood(5);
  for (int i = 0; i < 15; ++i) ASSERT_TRUE(a.CountBad(BadRow(i)).ok());
  b.CountGood(7);
  for (int i = 100; i < 110; ++i) ASSERT_TRUE(b.CountBad(BadRow(i)).ok());
  a.Merge(b);
  EXPECT_EQ(a.seen(), 12);
  EXPECT_EQ(a.errors(), 25);
  ASSERT_EQ(a.messages().size(), static_cast<size_t>(ErrorCounter::kKeptMessages));
  EXPECT_EQ(a.messages()[14], "rows.csv:14: expected 5 fields");
  EXPECT_EQ(a.messages()[15], "rows.csv:100: expected 5 fields");
  EXPECT_EQ(a.messages()[19], "rows.csv:104: expected 5 fields");
}

}  // namespace
}  // namespace choir
