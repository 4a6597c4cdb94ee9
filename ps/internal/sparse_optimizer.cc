#include "ps/internal/sparse_optimizer.h"

#include <cmath>

#include "ps/feature_key.h"

namespace choir {
namespace ps_internal {
namespace {
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
constexpr uint64_t kSeedSalt = 0x5851f42d4c957f2dULL;

// FTRL's (ftrl_beta + sqrt(n)) / learning_rate + ftrl_l2, given sqrt(n) (ApplyUpdate has the
// same expression on locals).
float FtrlDenominator(const SlotConfig& config, float sqrt_n) {
  return (config.ftrl_beta + sqrt_n) / config.learning_rate + config.ftrl_l2;
}

}  // namespace

uint64_t InitSeedMix(uint64_t seed) { return Mix64(seed ^ kSeedSalt); }

float InitValue(uint64_t key, uint64_t seed_mix, int j, float init_scale) {
  const uint64_t base = Mix64(key ^ seed_mix);
  const uint64_t h = Mix64(base + (static_cast<uint64_t>(j) + 1) * kGolden);
  const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // exact, in [0, 1)
  return init_scale * (2.0f * u - 1.0f);
}

void InitRow(const SlotConfig& config, uint64_t key, uint64_t seed_mix, float* row) {
  const int d = config.dim;
  const uint64_t base = Mix64(key ^ seed_mix);
  for (int j = 0; j < d; ++j) {
    const uint64_t h = Mix64(base + (static_cast<uint64_t>(j) + 1) * kGolden);
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
    row[j] = config.init_scale * (2.0f * u - 1.0f);
  }
  switch (config.optimizer) {
    case OptimizerKind::kAdagrad:
      for (int j = 0; j < d; ++j) row[d + j] = config.adagrad_initial_accumulator;
      break;
    case OptimizerKind::kAdam:
      for (int j = 0; j < 2 * d; ++j) row[d + j] = 0.0f;
      break;
    case OptimizerKind::kSgd:
      break;
    case OptimizerKind::kFtrl: {
      // z such that the closed form of ApplyUpdate gives back w: -(z - sign(z) l1) / q = w.
      const float n0 = config.ftrl_initial_accumulator;
      const float q0 = FtrlDenominator(config, std::sqrt(n0));
      for (int j = 0; j < d; ++j) {
        const float w = row[j];
        row[d + j] = w == 0.0f ? 0.0f : -(w * q0 + std::copysign(config.ftrl_l1, w));
        row[2 * d + j] = n0;
      }
      break;
    }
  }
}

void ApplyUpdate(const SlotConfig& config, const float* grad, uint32_t step, float* row) {
  const int d = config.dim;
  const float lr = config.learning_rate;
  float* w = row;
  switch (config.optimizer) {
    case OptimizerKind::kSgd:
      for (int j = 0; j < d; ++j) w[j] -= lr * grad[j];
      break;
    case OptimizerKind::kAdagrad: {
      float* a = row + d;
      const float eps = config.adagrad_epsilon;
      for (int j = 0; j < d; ++j) {
        const float g = grad[j];
        a[j] += g * g;
        w[j] -= lr * g / (std::sqrt(a[j]) + eps);
      }
      break;
    }
    case OptimizerKind::kAdam: {
      float* m = row + d;
      float* v = row + 2 * d;
      const float b1 = config.adam_beta1;
      const float b2 = config.adam_beta2;
      const float eps = config.adam_epsilon;
      const float t = static_cast<float>(step);
      const float bc1 = 1.0f - std::pow(b1, t);
      const float bc2 = 1.0f - std::pow(b2, t);
      for (int j = 0; j < d; ++j) {
        const float g = grad[j];
        m[j] = b1 * m[j] + (1.0f - b1) * g;
        v[j] = b2 * v[j] + (1.0f - b2) * g * g;
        const float m_hat = m[j] / bc1;
        const float v_hat = v[j] / bc2;
        w[j] -= lr * m_hat / (std::sqrt(v_hat) + eps);
      }
      break;
    }
    case OptimizerKind::kFtrl: {
      float* z = row + d;
      float* n = row + 2 * d;
      // Locals, not config's fields: the row's stores could alias those, which would keep
      // the loop scalar.
      const float l1 = config.ftrl_l1, beta = config.ftrl_beta, l2 = config.ftrl_l2;
      for (int j = 0; j < d; ++j) {
        const float g = grad[j];
        const float g2 = g * g;
        const float sqrt_n = std::sqrt(n[j]);
        const float n_new = n[j] + g2;
        const float sqrt_new = std::sqrt(n_new);
        // sigma = (sqrt(n_new) - sqrt(n)) / lr, written without the cancellation (and 0, not
        // 0 / 0, for a zero gradient on n = 0). Both sides of each select are computed, so
        // that the loop vectorises: the quotient not taken may be NaN.
        const float quotient = g2 / (lr * (sqrt_new + sqrt_n));
        const float sigma = g2 == 0.0f ? 0.0f : quotient;
        const float zj = z[j] + (g - sigma * w[j]);
        const float closed_form = -(zj - std::copysign(l1, zj)) / ((beta + sqrt_new) / lr + l2);
        z[j] = zj;
        n[j] = n_new;
        w[j] = std::fabs(zj) <= l1 ? 0.0f : closed_form;
      }
      break;
    }
  }
}

}  // namespace ps_internal
}  // namespace choir
