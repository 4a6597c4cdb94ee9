// Row initialisation and sparse optimizer updates on one row (private to ps/).
//
// A row of a slot with width d is `Stride(config)` floats laid out as
//   [ w (d) | state (StateFloatsPerDim(optimizer) * d) ]
// Adagrad state: accumulator a (d). Adam state: first moment m (d), then second moment v (d).
// FTRL state: z (d), then the accumulator n (d).
// Exact float formulas: ps/README.md.
#ifndef CHOIR_PS_INTERNAL_SPARSE_OPTIMIZER_H_
#define CHOIR_PS_INTERNAL_SPARSE_OPTIMIZER_H_

#include <cstdint>

#include "ps/slot_config.h"

namespace choir {
namespace ps_internal {

// Floats per row: dim * (1 + StateFloatsPerDim(optimizer)).
inline int Stride(const SlotConfig& config) {
  return config.dim * (1 + StateFloatsPerDim(config.optimizer));
}

// The seed-dependent part of initialisation, computed once per table.
uint64_t InitSeedMix(uint64_t seed);

// Element j of the initial values of `key`'s row: init_scale * (2u - 1) with
// u = (Mix64(Mix64(key ^ seed_mix) + (j + 1) * 0x9e3779b97f4a7c15) >> 40) / 2^24.
float InitValue(uint64_t key, uint64_t seed_mix, int j, float init_scale);

// Writes a new row (Stride(config) floats): initial values and initial optimizer state.
void InitRow(const SlotConfig& config, uint64_t key, uint64_t seed_mix, float* row);

// Applies one update with gradient grad[0..dim) to `row`; `step` is the row's push count
// including this push (>= 1; Adam's bias correction).
void ApplyUpdate(const SlotConfig& config, const float* grad, uint32_t step, float* row);

}  // namespace ps_internal
}  // namespace choir

#endif  // CHOIR_PS_INTERNAL_SPARSE_OPTIMIZER_H_
