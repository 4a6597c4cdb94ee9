// Private pieces shared by the CPU implementation files.
#ifndef CHOIR_MODELS_INTERNAL_CPU_H_
#define CHOIR_MODELS_INTERNAL_CPU_H_

#include <cstdint>
#include <memory>

#include "models/layers.h"

namespace choir::models::internal {

// SplitMix64 finaliser: derives well-mixed seeds ("seed of layer i") from one seed.
inline uint64_t MixSeed(uint64_t seed, uint64_t salt) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (salt + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

template <typename T>
std::unique_ptr<TargetAttention<T>> NewCpuTargetAttention(int dim, const AttentionOptions& options,
                                                          uint64_t seed);

}  // namespace choir::models::internal

#endif  // CHOIR_MODELS_INTERNAL_CPU_H_
