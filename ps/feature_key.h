// Feature keys: the 64-bit names of sparse-embedding rows.
//
// A key packs the slot (which embedding table a feature belongs to) into its top 12 bits and a
// well-mixed 52-bit hash of (slot, raw id) into the rest:
//
//   key = slot << 52 | (Mix64(raw_id ^ Mix64(slot + kSlotSalt)) & (2^52 - 1))
//
// Mix64 is the SplitMix64 finaliser, a bijection on 64 bits, so within one slot two raw ids
// collide only when their mixed values agree in the low 52 bits: for n distinct ids in a slot
// the expected number of colliding pairs is n(n-1) / 2^53, i.e. about 0.01 for 10^7 ids, 1.1
// for 10^8 and 111 for 10^9 (colliding ids then share a row). Keys of different slots never
// collide. The low bits are uniform, so any bit range of a key can be used for sharding; users
// of a second level of sharding (servers, then table shards) should re-mix (see ShardOf in
// sparse_table.h) so the two levels stay independent.
#ifndef CHOIR_PS_FEATURE_KEY_H_
#define CHOIR_PS_FEATURE_KEY_H_

#include <cstdint>

namespace choir {

inline constexpr int kSlotBits = 12;
inline constexpr int kKeyHashBits = 64 - kSlotBits;     // 52
inline constexpr uint32_t kMaxSlots = 1u << kSlotBits;  // 4096; slots are 0..4095
inline constexpr uint64_t kKeyHashMask = (uint64_t{1} << kKeyHashBits) - 1;

// SplitMix64's finaliser: a bijective, well-mixing function on 64 bits.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// The key of raw id `raw_id` in slot `slot`. CHECK-fails when slot >= kMaxSlots (a bug in the
// caller: slots come from the model definition, never from data).
uint64_t FeatureKey(uint32_t slot, int64_t raw_id);

// The slot packed into `key`.
inline uint32_t SlotOf(uint64_t key) { return static_cast<uint32_t>(key >> kKeyHashBits); }

}  // namespace choir

#endif  // CHOIR_PS_FEATURE_KEY_H_
