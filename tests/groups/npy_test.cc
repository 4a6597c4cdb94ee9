// .npy reading and writing: exact round trips and clear errors for what is not a 2-D '<f4'.
#include "data/groups/npy.h"

#include <cstring>
#include <string>
#include <vector>

#include "core/fs.h"
#include "gtest/gtest.h"

namespace choir::groups {
namespace {

// A .npy file with header dict `dict` and `data_bytes` zero bytes of data.
std::string Npy(const std::string& dict, size_t data_bytes, int major = 1) {
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  if (major == 2) out.append(2, '\0');
  return out + dict + std::string(data_bytes, '\0');
}

TEST(NpyTest, RoundTripIsExact) {
  MemFileSystem fs;
  std::vector<float> v = {1.5f, -0.0f, 3.25e-30f, 7.0f, -1e30f, 0.1f};
  ASSERT_TRUE(WriteNpy(&fs, "/a.npy", v.data(), 2, 3).ok());
  absl::StatusOr<std::string> bytes = fs.GetContents("/a.npy");
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ((bytes->size() - v.size() * 4) % 64, 0u);  // data aligned as NumPy does
  absl::StatusOr<FloatMatrix> m = ReadNpy(&fs, "/a.npy");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 3);
  ASSERT_EQ(m->values.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(std::memcmp(&m->values[i], &v[i], 4), 0) << i;
  }
}

TEST(NpyTest, ReadsVersion2AndNumpyStyleHeaders) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }\n";
  absl::StatusOr<FloatMatrix> m = ParseNpy(Npy(dict, 8, 2), "v2.npy");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 1);
}

TEST(NpyTest, EmptyArrayRoundTrips) {
  MemFileSystem fs;
  ASSERT_TRUE(WriteNpy(&fs, "/e.npy", nullptr, 0, 4).ok());
  absl::StatusOr<FloatMatrix> m = ReadNpy(&fs, "/e.npy");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 0);
  EXPECT_EQ(m->cols, 4);
}

void ExpectError(const std::string& bytes, absl::StatusCode code, const std::string& needle) {
  absl::StatusOr<FloatMatrix> m = ParseNpy(bytes, "/x/emb.npy");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), code) << m.status();
  EXPECT_NE(m.status().message().find("/x/emb.npy"), std::string::npos) << m.status();
  EXPECT_NE(m.status().message().find(needle), std::string::npos) << m.status();
}

TEST(NpyTest, RefusesBadInputNamingTheFile) {
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  ExpectError("PK\x03\x04 not numpy", absl::StatusCode::kDataLoss, "magic");
  ExpectError("", absl::StatusCode::kDataLoss, "magic");
  ExpectError(Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48),
              absl::StatusCode::kInvalidArgument, "<f8");
  ExpectError(Npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24),
              absl::StatusCode::kInvalidArgument, ">f4");
  ExpectError(Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24),
              absl::StatusCode::kInvalidArgument, "fortran");
  ExpectError(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", 24),
              absl::StatusCode::kInvalidArgument, "1 dimensions");
  ExpectError(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", 24),
              absl::StatusCode::kInvalidArgument, "3 dimensions");
  ExpectError(Npy(good, 23), absl::StatusCode::kDataLoss, "truncated");
  ExpectError(Npy(good, 25), absl::StatusCode::kDataLoss, "file has 25");
  ExpectError(Npy(good, 24).substr(0, 20), absl::StatusCode::kDataLoss, "truncated header");
  ExpectError(Npy("{'descr': '<f4', 'fortran_order': False}", 0), absl::StatusCode::kDataLoss,
              "shape");
  ExpectError(Npy(good, 24, 3), absl::StatusCode::kInvalidArgument, "version 3");
}

TEST(NpyTest, MissingFileIsNotFound) {
  MemFileSystem fs;
  EXPECT_EQ(ReadNpy(&fs, "/nope.npy").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace choir::groups
