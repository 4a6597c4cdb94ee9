// CRC32C (Castagnoli), as used by iSCSI, ext4 and leveldb: the checksum of every shard block
// and, later, of checkpoint files. Uses the SSE4.2 crc32 instruction when the CPU has it and a
// table otherwise; both give identical results.
#ifndef CHOIR_CORE_CRC32C_H_
#define CHOIR_CORE_CRC32C_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace choir::crc32c {

// Returns the CRC32C of concat(A, data) where `init` is the CRC32C of some string A.
// Extend(0, data) is the CRC32C of `data`.
uint32_t Extend(uint32_t init, const char* data, size_t n);

inline uint32_t Value(const char* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(absl::string_view s) { return Extend(0, s.data(), s.size()); }

// True when the hardware path is in use (for benchmarks' reports).
bool UsesHardware();

}  // namespace choir::crc32c

#endif  // CHOIR_CORE_CRC32C_H_
