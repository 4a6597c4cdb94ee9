// CRC32C: reflected polynomial 0x82F63B78, register pre- and post-inverted (as in iSCSI and
// leveldb), so Extend(Extend(0, a), b) == Extend(0, a + b).
#include "core/crc32c.h"

#include <array>
#include <cstring>

#include "core/internal/crc32c_internal.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace choir {
namespace crc32c_internal {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;

// kTables[0] is the byte-at-a-time table; kTables[k][b] is the CRC of byte b followed by k
// zero bytes, which lets the software path consume 8 bytes per step (slicing-by-8).
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ ((crc & 1) ? kPoly : 0);
    t[0][b] = crc;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
    }
  }
  return t;
}

constexpr Tables kTables = MakeTables();

inline uint32_t LoadLE32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

uint32_t ExtendSoftware(uint32_t crc, const char* data, size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  uint32_t l = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    const uint32_t lo = LoadLE32(p) ^ l;
    const uint32_t hi = LoadLE32(p + 4);
    l = kTables[7][lo & 0xFF] ^ kTables[6][(lo >> 8) & 0xFF] ^ kTables[5][(lo >> 16) & 0xFF] ^
        kTables[4][lo >> 24] ^ kTables[3][hi & 0xFF] ^ kTables[2][(hi >> 8) & 0xFF] ^
        kTables[1][(hi >> 16) & 0xFF] ^ kTables[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) l = (l >> 8) ^ kTables[0][(l ^ *p) & 0xFF];
  return ~l;
}

#if defined(__x86_64__)

bool HardwareAvailable() {
  static const bool available = __builtin_cpu_supports("sse4.2");
  return available;
}

__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t crc, const char* data,
                                                          size_t n) {
  const char* p = data;
  uint64_t l = ~crc;
  // Byte steps up to 8-byte alignment, then 8 bytes per instruction.
  for (; n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0; --n, ++p) {
    l = _mm_crc32_u8(static_cast<uint32_t>(l), static_cast<uint8_t>(*p));
  }
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));
    l = _mm_crc32_u64(l, word);
  }
  for (; n > 0; --n, ++p) l = _mm_crc32_u8(static_cast<uint32_t>(l), static_cast<uint8_t>(*p));
  return ~static_cast<uint32_t>(l);
}

#else

bool HardwareAvailable() { return false; }

uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n) {
  return ExtendSoftware(crc, data, n);
}

#endif

}  // namespace crc32c_internal

namespace crc32c {

uint32_t Extend(uint32_t init, const char* data, size_t n) {
  using ExtendFn = uint32_t (*)(uint32_t, const char*, size_t);
  static const ExtendFn extend = crc32c_internal::HardwareAvailable()
                                     ? &crc32c_internal::ExtendHardware
                                     : &crc32c_internal::ExtendSoftware;
  return extend(init, data, n);
}

bool UsesHardware() { return crc32c_internal::HardwareAvailable(); }

}  // namespace crc32c
}  // namespace choir
