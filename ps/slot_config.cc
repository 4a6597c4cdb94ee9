#include "ps/slot_config.h"

#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace choir {

std::string OptimizerKindName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kAdagrad:
      return "adagrad";
    case OptimizerKind::kAdam:
      return "adam";
    case OptimizerKind::kSgd:
      return "sgd";
    case OptimizerKind::kFtrl:
      return "ftrl";
  }
  return "unknown";
}

absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "adagrad") return OptimizerKind::kAdagrad;
  if (lower == "adam") return OptimizerKind::kAdam;
  if (lower == "sgd") return OptimizerKind::kSgd;
  if (lower == "ftrl") return OptimizerKind::kFtrl;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown sparse optimizer '", name, "' (adagrad, adam, sgd, ftrl)"));
}

int StateFloatsPerDim(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kAdagrad:
      return 1;
    case OptimizerKind::kAdam:
      return 2;
    case OptimizerKind::kSgd:
      return 0;
    case OptimizerKind::kFtrl:
      return 2;
  }
  return 0;
}

absl::Status ValidateSlotConfig(const SlotConfig& c) {
  auto bad = [](absl::string_view field, double value, absl::string_view want) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot config: ", field, " = ", value, ", want ", want));
  };
  if (c.dim < 1 || c.dim > 4096) return bad("dim", c.dim, "1..4096");
  if (c.optimizer != OptimizerKind::kAdagrad && c.optimizer != OptimizerKind::kAdam &&
      c.optimizer != OptimizerKind::kSgd && c.optimizer != OptimizerKind::kFtrl) {
    return absl::InvalidArgumentError("slot config: unknown optimizer");
  }
  if (!std::isfinite(c.learning_rate) || c.learning_rate < 0) {
    return bad("learning_rate", c.learning_rate, "finite and >= 0");
  }
  if (!std::isfinite(c.init_scale) || c.init_scale < 0) {
    return bad("init_scale", c.init_scale, "finite and >= 0");
  }
  if (c.optimizer == OptimizerKind::kAdagrad) {
    if (!std::isfinite(c.adagrad_initial_accumulator) || c.adagrad_initial_accumulator < 0) {
      return bad("adagrad_initial_accumulator", c.adagrad_initial_accumulator,
                 "finite and >= 0");
    }
    if (!std::isfinite(c.adagrad_epsilon) || c.adagrad_epsilon < 0) {
      return bad("adagrad_epsilon", c.adagrad_epsilon, "finite and >= 0");
    }
    if (c.adagrad_initial_accumulator + c.adagrad_epsilon <= 0) {
      return absl::InvalidArgumentError(
          "slot config: adagrad_initial_accumulator + adagrad_epsilon must be > 0");
    }
  }
  if (c.optimizer == OptimizerKind::kAdam) {
    if (!(c.adam_beta1 >= 0 && c.adam_beta1 < 1)) return bad("adam_beta1", c.adam_beta1, "[0, 1)");
    if (!(c.adam_beta2 >= 0 && c.adam_beta2 < 1)) return bad("adam_beta2", c.adam_beta2, "[0, 1)");
    if (!std::isfinite(c.adam_epsilon) || !(c.adam_epsilon > 0)) {
      return bad("adam_epsilon", c.adam_epsilon, "finite and > 0");
    }
  }
  if (c.optimizer == OptimizerKind::kFtrl) {
    if (!(c.learning_rate > 0)) return bad("learning_rate", c.learning_rate, "> 0 for ftrl");
    const std::pair<const char*, float> fields[] = {{"ftrl_initial_accumulator", c.ftrl_initial_accumulator},
                                                    {"ftrl_beta", c.ftrl_beta},
                                                    {"ftrl_l1", c.ftrl_l1},
                                                    {"ftrl_l2", c.ftrl_l2}};
    for (const auto& [field, value] : fields) {
      if (!std::isfinite(value) || value < 0) return bad(field, value, "finite and >= 0");
    }
    if (!(c.ftrl_beta + std::sqrt(c.ftrl_initial_accumulator) + c.learning_rate * c.ftrl_l2 > 0)) {
      return absl::InvalidArgumentError(
          "slot config: ftrl_beta + sqrt(ftrl_initial_accumulator) + learning_rate * ftrl_l2 must be > 0");
    }
  }
  if (c.admit_min_count < 0 || c.admit_min_count > 65535) {
    return bad("admit_min_count", c.admit_min_count, "0..65535");
  }
  if (c.ttl_steps < 0) return bad("ttl_steps", static_cast<double>(c.ttl_steps), ">= 0");
  if (c.capacity < 0) return bad("capacity", static_cast<double>(c.capacity), ">= 0");
  return absl::OkStatus();
}

}  // namespace choir
