#include "ps/feature_key.h"

#include "glog/logging.h"

namespace choir {
namespace {
// Separates the per-slot salt from raw ids that equal small slot numbers.
constexpr uint64_t kSlotSalt = 0x9e3779b97f4a7c15ULL;
}  // namespace

uint64_t FeatureKey(uint32_t slot, int64_t raw_id) {
  CHECK_LT(slot, kMaxSlots) << "slot out of range";
  const uint64_t salt = Mix64(uint64_t{slot} + kSlotSalt);
  const uint64_t hash = Mix64(static_cast<uint64_t>(raw_id) ^ salt);
  return (uint64_t{slot} << kKeyHashBits) | (hash & kKeyHashMask);
}

}  // namespace choir
