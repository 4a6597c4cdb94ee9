// The two CRC32C implementations behind choir::crc32c::Extend, exposed for tests and
// benchmarks. Both have the semantics of Extend: `crc` is the CRC32C of a prefix (0 for none).
#ifndef CHOIR_CORE_INTERNAL_CRC32C_INTERNAL_H_
#define CHOIR_CORE_INTERNAL_CRC32C_INTERNAL_H_

#include <cstddef>
#include <cstdint>

namespace choir::crc32c_internal {

// Table-driven (slicing-by-8); works everywhere.
uint32_t ExtendSoftware(uint32_t crc, const char* data, size_t n);

// True when the CPU has the SSE4.2 crc32 instruction.
bool HardwareAvailable();

// The SSE4.2 path. Only call when HardwareAvailable().
uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n);

}  // namespace choir::crc32c_internal

#endif  // CHOIR_CORE_INTERNAL_CRC32C_INTERNAL_H_
