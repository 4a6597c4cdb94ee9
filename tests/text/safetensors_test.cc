#include "models/text/safetensors.h"

#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

using ::testing::HasSubstr;

std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

std::string Build(const std::string& header, const std::string& data) {
  return Le64(header.size()) + header + data;
}

std::string Floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

const char kGoodHeader[] =
    R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
    R"("h":{"dtype":"F16","shape":[2],"data_offsets":[16,20]}})";

class SafeTensorsTest : public ::testing::Test {
 protected:
  absl::Status OpenWith(const std::string& contents) {
    EXPECT_TRUE(fs_.SetContents("/m/model.safetensors", contents).ok());
    return SafeTensorsFile::Open(&fs_, "/m/model.safetensors").status();
  }
  std::string GoodData() {
    // F16 1.0 = 0x3C00, -2.0 = 0xC000.
    return Floats({1, 2, 3, 4}) + std::string("\x00\x3c\x00\xc0", 4);
  }
  MemFileSystem fs_;
};

TEST_F(SafeTensorsTest, ReadsF32AndWidensF16) {
  ASSERT_TRUE(fs_.SetContents("/m/model.safetensors", Build(kGoodHeader, GoodData())).ok());
  auto file = SafeTensorsFile::Open(&fs_, "/m/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->Names(), ::testing::ElementsAre("a", "h"));
  auto a = (*file)->ReadFloat("a", {2, 2});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(*a, ::testing::ElementsAre(1, 2, 3, 4));
  auto h = (*file)->ReadFloat("h", {2});
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(*h, ::testing::ElementsAre(1.0f, -2.0f));
}

TEST_F(SafeTensorsTest, MissingFileIsNotFoundNamingThePath) {
  auto file = SafeTensorsFile::Open(&fs_, "/nowhere/model.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("/nowhere/model.safetensors"));
}

TEST_F(SafeTensorsTest, FileShorterThanHeaderLengthIsDataLoss) {
  absl::Status s = OpenWith("abc");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("/m/model.safetensors"));
}

TEST_F(SafeTensorsTest, HeaderLengthBeyondFileIsDataLoss) {
  absl::Status s = OpenWith(Le64(1000) + "{}");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("header length 1000"));
}

TEST_F(SafeTensorsTest, BadJsonIsDataLoss) {
  absl::Status s = OpenWith(Build("{\"a\": [", ""));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("JSON"));
}

TEST_F(SafeTensorsTest, TruncatedDataIsDataLossNamingTheTensor) {
  std::string full = Build(kGoodHeader, GoodData());
  absl::Status s = OpenWith(full.substr(0, full.size() - 3));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("'h'"));
}

TEST_F(SafeTensorsTest, OffsetsBeyondDataAreDataLoss) {
  absl::Status s = OpenWith(
      Build(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", Floats({1, 2, 3, 4})));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("'w'"));
}

TEST_F(SafeTensorsTest, ShapeNotMatchingByteRangeIsDataLoss) {
  absl::Status s = OpenWith(
      Build(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", Floats({1, 2, 3, 4})));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
}

TEST_F(SafeTensorsTest, UnknownDtypeAndMalformedEntriesAreDataLoss) {
  EXPECT_EQ(OpenWith(Build(R"({"w":{"dtype":"F8","shape":[4],"data_offsets":[0,4]}})",
                           std::string(4, '\0')))
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(OpenWith(Build(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                           std::string(4, '\0')))
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(OpenWith(Build(R"({"w":{"dtype":"F32","shape":[1]}})", std::string(4, '\0'))).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SafeTensorsTest, MissingTensorIsNotFoundAndWrongShapeInvalid) {
  ASSERT_TRUE(OpenWith(Build(kGoodHeader, GoodData())).ok());
  auto file = SafeTensorsFile::Open(&fs_, "/m/model.safetensors");
  ASSERT_TRUE(file.ok());
  auto missing = (*file)->ReadFloat("nope", {1});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("'nope'"));
  auto shape = (*file)->ReadFloat("a", {4});
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shape.status().message(), HasSubstr("[2, 2]"));
}

}  // namespace
}  // namespace choir
