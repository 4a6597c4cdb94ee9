#include "core/crc32c.h"
#include "core/hash.h"

#include <cstdint>
#include <random>
#include <string>

#include "core/internal/crc32c_internal.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

std::string Bytes(int n, int first, int step) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(first + i * step));
  return s;
}

// RFC 3720, appendix B.4, plus the usual check value.
TEST(Crc32cTest, MatchesKnownVectors) {
  EXPECT_EQ(crc32c::Value(std::string(32, '\x00')), 0x8A9136AAu);
  EXPECT_EQ(crc32c::Value(std::string(32, '\xFF')), 0x62A8AB43u);
  EXPECT_EQ(crc32c::Value(Bytes(32, 0, 1)), 0x46DD794Eu);
  EXPECT_EQ(crc32c::Value(Bytes(32, 31, -1)), 0x113FDB5Cu);
  EXPECT_EQ(crc32c::Value("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c::Value(""), 0u);
}

TEST(Crc32cTest, SoftwarePathMatchesKnownVectors) {
  const auto sw = [](const std::string& s) {
    return crc32c_internal::ExtendSoftware(0, s.data(), s.size());
  };
  EXPECT_EQ(sw(std::string(32, '\x00')), 0x8A9136AAu);
  EXPECT_EQ(sw(std::string(32, '\xFF')), 0x62A8AB43u);
  EXPECT_EQ(sw(Bytes(32, 0, 1)), 0x46DD794Eu);
  EXPECT_EQ(sw(Bytes(32, 31, -1)), 0x113FDB5Cu);
  EXPECT_EQ(sw("123456789"), 0xE3069283u);
}

TEST(Crc32cTest, ExtendEqualsValueOfConcatenation) {
  const std::string a = "hello ";
  const std::string b = "world, a longer second part that spans several words";
  EXPECT_EQ(crc32c::Extend(crc32c::Value(a), b.data(), b.size()), crc32c::Value(a + b));
  const std::string data = Bytes(1000, 7, 13);
  for (size_t split : {0, 1, 7, 8, 9, 63, 500, 999, 1000}) {
    const uint32_t prefix = crc32c::Value(data.data(), split);
    EXPECT_EQ(crc32c::Extend(prefix, data.data() + split, data.size() - split), crc32c::Value(data))
        << "split at " << split;
  }
}

TEST(Crc32cTest, DifferentDataGivesDifferentChecksums) {
  EXPECT_NE(crc32c::Value("a"), crc32c::Value("foo"));
  std::string flipped = Bytes(64, 0, 3);
  const uint32_t before = crc32c::Value(flipped);
  flipped[40] ^= 1;
  EXPECT_NE(crc32c::Value(flipped), before);
}

TEST(Crc32cTest, HardwareAndSoftwarePathsAgreeOnRandomBuffers) {
  if (!crc32c_internal::HardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  EXPECT_TRUE(crc32c::UsesHardware());
  std::mt19937_64 rng(42);
  std::string buffer(4096 + 16, '\0');
  for (char& c : buffer) c = static_cast<char>(rng());
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t n = 0; n <= 300; ++n) {
      const char* p = buffer.data() + offset;
      ASSERT_EQ(crc32c_internal::ExtendHardware(0, p, n), crc32c_internal::ExtendSoftware(0, p, n))
          << "offset " << offset << " length " << n;
    }
    const uint32_t init = static_cast<uint32_t>(rng());
    ASSERT_EQ(crc32c_internal::ExtendHardware(init, buffer.data() + offset, 4096),
              crc32c_internal::ExtendSoftware(init, buffer.data() + offset, 4096))
        << "offset " << offset;
  }
}

}  // namespace
}  // namespace choir

// Fnv1a64 (core/hash.h): the published FNV-1a 64-bit test vectors, and parts joined by NUL.
namespace choir {
namespace {

TEST(Fnv1a64Test, PublishedVectorsAndNulSeparatedParts) {
  EXPECT_EQ(Fnv1a64({""}), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64({"a"}), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64({"foobar"}), 0x85944171f73967e8ull);
  EXPECT_EQ(Fnv1a64({"a", "b"}), Fnv1a64({absl::string_view("a\0b", 3)}));
  EXPECT_NE(Fnv1a64({"ab", ""}), Fnv1a64({"a", "b"}));
}

}  // namespace
}  // namespace choir
