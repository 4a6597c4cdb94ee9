// Stable, non-cryptographic 64-bit hashes for cache keys that outlive a process (the same
// value on every platform and run, unlike std::hash or absl::Hash).
#ifndef CHOIR_CORE_HASH_H_
#define CHOIR_CORE_HASH_H_

#include <cstdint>
#include <initializer_list>

#include "absl/strings/string_view.h"

namespace choir {

// FNV-1a (64-bit) of the parts joined by NUL bytes: {"a", "b"} hashes "a\0b", so the split
// between parts is part of the key.
inline uint64_t Fnv1a64(std::initializer_list<absl::string_view> parts) {
  uint64_t h = 14695981039346656037ull;
  bool first = true;
  for (absl::string_view part : parts) {
    if (!first) h = (h ^ 0u) * 1099511628211ull;  // the NUL separator
    first = false;
    for (unsigned char c : part) h = (h ^ c) * 1099511628211ull;
  }
  return h;
}

}  // namespace choir

#endif  // CHOIR_CORE_HASH_H_
