// Shared by the parameter-server tests: the table every test server holds (three slots, one
// per optimizer kind) and the transports the fixtures sweep.
#ifndef CHOIR_TESTS_PS_PS_TEST_UTIL_H_
#define CHOIR_TESTS_PS_PS_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "core/transport.h"
#include "gtest/gtest.h"
#include "ps/slot_config.h"
#include "ps/sparse_table.h"

namespace choir::testing {

constexpr uint32_t kAdagradSlot = 0;
constexpr uint32_t kAdamSlot = 1;
constexpr uint32_t kSgdSlot = 7;

// Adagrad (dim 8), Adam (dim 4) and SGD (dim 3) slots, 4 shards, seed 42.
inline TableOptions TestTableOptions() {
  TableOptions options;
  options.seed = 42;
  options.num_shards = 4;
  SlotConfig adagrad;
  adagrad.dim = 8;
  adagrad.learning_rate = 0.05f;
  SlotConfig adam;
  adam.dim = 4;
  adam.optimizer = OptimizerKind::kAdam;
  adam.learning_rate = 0.01f;
  SlotConfig sgd;
  sgd.dim = 3;
  sgd.optimizer = OptimizerKind::kSgd;
  sgd.learning_rate = 0.1f;
  options.slots = {{kAdagradSlot, adagrad}, {kAdamSlot, adam}, {kSgdSlot, sgd}};
  return options;
}

enum class Kind { kInProcess, kZmq };

// An endpoint of `kind` (in-process endpoints join `network`); a failure fails the test.
inline std::unique_ptr<transport::Endpoint> MakeTestEndpoint(Kind kind, transport::InProcessNetwork* network,
                                                             transport::EndpointOptions options) {
  absl::StatusOr<std::unique_ptr<transport::Endpoint>> endpoint =
      kind == Kind::kInProcess ? network->NewEndpoint(std::move(options))
                               : transport::NewZmqEndpoint(std::move(options));
  EXPECT_TRUE(endpoint.ok()) << endpoint.status();
  return endpoint.ok() ? *std::move(endpoint) : nullptr;
}

}  // namespace choir::testing

#endif  // CHOIR_TESTS_PS_PS_TEST_UTIL_H_
