#include "models/text/minilm.h"

#include <algorithm>
#include <utility>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "tests/text/text_test_util.h"

namespace choir {
namespace {

using ::testing::HasSubstr;

class MiniLmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!text_test::HaveModel()) return;
    auto e = SentenceEncoder::Load(PosixFileSystem(), text_test::ModelDir());
    CHECK(e.ok()) << e.status();
    encoder_ = std::move(e).value().release();
  }
  static void TearDownTestSuite() {
    delete encoder_;
    encoder_ = nullptr;
  }
  void SetUp() override {
    if (encoder_ == nullptr) GTEST_SKIP() << text_test::SkipMessage();
  }
  static SentenceEncoder* encoder_;
};
SentenceEncoder* MiniLmTest::encoder_ = nullptr;

// Every reference embedding (Hugging Face/PyTorch, mean pooling, L2) has cosine >= 0.9999.
TEST_F(MiniLmTest, EmbeddingsMatchHuggingFaceOnReferenceTexts) {
  const nlohmann::json ref = text_test::LoadReference();
  ASSERT_TRUE(ref.is_object());
  std::vector<std::string> texts;
  for (const auto& c : ref["cases"]) texts.push_back(c["text"].get<std::string>());
  ASSERT_GE(texts.size(), 200u);
  const int d = encoder_->dim();
  ASSERT_EQ(d, 384);
  std::vector<float> out(texts.size() * d);
  ASSERT_TRUE(encoder_->Encode(texts, 16, 2, out.data()).ok());
  double min_cos = 1.0, max_abs = 0.0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = ref["cases"][i]["embedding"].get<std::vector<float>>();
    ASSERT_EQ(want.size(), static_cast<size_t>(d));
    double dot = 0, nw = 0, ng = 0;
    for (int k = 0; k < d; ++k) {
      const double g = out[i * d + k];
      dot += g * want[k];
      nw += want[k] * want[k];
      ng += g * g;
      max_abs = std::max(max_abs, std::abs(g - want[k]));
    }
    const double cos = dot / std::sqrt(nw * ng);
    min_cos = std::min(min_cos, cos);
    EXPECT_GE(cos, 0.9999) << "text " << i << ": " << nlohmann::json(texts[i]).dump();
    EXPECT_NEAR(ng, 1.0, 1e-4) << "row " << i << " is not unit length";
  }
  std::cout << std::setprecision(9) << "encoder parity over " << texts.size() << " texts: min cosine " << min_cos
            << ", max abs diff " << max_abs << "\n";
}

// Batch size and thread count change only the schedule: rows stay in input order and equal.
TEST_F(MiniLmTest, RowsFollowInputOrderForAnyBatchingAndThreads) {
  std::vector<std::string> texts;
  for (int i = 0; i < 37; ++i) {
    texts.push_back("user " + std::to_string(i) + std::string(i % 7, '!') + " likes cats");
  }
  const int d = encoder_->dim();
  std::vector<float> one(texts.size() * d);
  ASSERT_TRUE(encoder_->Encode(texts, 1, 1, one.data()).ok());
  for (auto [batch, threads] : {std::pair<int, int>{64, 1}, {5, 3}, {8, 4}}) {
    std::vector<float> got(texts.size() * d);
    ASSERT_TRUE(encoder_->Encode(texts, batch, threads, got.data()).ok());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], one[i], 1e-5) << "batch " << batch << " threads " << threads;
    }
  }
  std::vector<float> single(d);
  ASSERT_TRUE(encoder_->Encode({texts[20]}, 1, 1, single.data()).ok());
  for (int k = 0; k < d; ++k) EXPECT_NEAR(single[k], one[20 * d + k], 1e-5);
}

TEST_F(MiniLmTest, EmptyInputAndBadArguments) {
  EXPECT_TRUE(encoder_->Encode({}, 8, 2, nullptr).ok());
  float out[384];
  EXPECT_EQ(encoder_->Encode({"x"}, 0, 1, out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(encoder_->Encode({"x"}, 1, 0, out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SentenceEncoderLoadTest, MissingModelDirectoryNamesThePath) {
  MemFileSystem fs;
  auto e = SentenceEncoder::Load(&fs, "/models/absent");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(e.status().message(), HasSubstr("/models/absent"));
}

// A tiny model directory in memory: config, vocabulary, and the given weights file.
void WriteTinyModel(MemFileSystem* fs, const std::string& safetensors) {
  ASSERT_TRUE(fs->SetContents("/m/config.json",
                              R"({"vocab_size":5,"hidden_size":4,"num_hidden_layers":1,)"
                              R"("num_attention_heads":2,"intermediate_size":8,)"
                              R"("max_position_embeddings":8,"hidden_act":"gelu"})")
                  .ok());
  ASSERT_TRUE(fs->SetContents("/m/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhi\n").ok());
  if (!safetensors.empty()) {
    ASSERT_TRUE(fs->SetContents("/m/model.safetensors", safetensors).ok());
  }
}

TEST(SentenceEncoderLoadTest, MissingWeightsFileIsNotFound) {
  MemFileSystem fs;
  WriteTinyModel(&fs, "");
  auto e = SentenceEncoder::Load(&fs, "/m");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(e.status().message(), HasSubstr("/m/model.safetensors"));
}

TEST(SentenceEncoderLoadTest, CorruptWeightsAreDataLoss) {
  MemFileSystem fs;
  WriteTinyModel(&fs, std::string("\x10\0\0\0\0\0\0\0{not json at al", 23));
  auto e = SentenceEncoder::Load(&fs, "/m");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(e.status().message(), HasSubstr("/m/model.safetensors"));
}

TEST(SentenceEncoderLoadTest, MissingTensorIsNamed) {
  MemFileSystem fs;
  const std::string header = R"({"__metadata__":{"format":"pt"}})";
  std::string file(8, '\0');
  file[0] = static_cast<char>(header.size());
  WriteTinyModel(&fs, file + header);
  auto e = SentenceEncoder::Load(&fs, "/m");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(e.status().message(), HasSubstr("embeddings.word_embeddings.weight"));
}

}  // namespace
}  // namespace choir
