#include "models/text/wordpiece.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "tests/text/text_test_util.h"

namespace choir {
namespace {

using ::testing::ElementsAre;

constexpr char kVocab[] =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n,\n!\n.\ncreme\nbrulee\nun\n##aff\n##able\n"
    "我\n喜\n欢\n猫\n$\n5\n##0\na\n";

std::unique_ptr<BertTokenizer> Tiny(int max_length = 256) {
  BertTokenizerOptions options;
  options.max_length = max_length;
  auto t = BertTokenizer::FromVocabText(kVocab, options);
  CHECK(t.ok()) << t.status();
  return std::move(t).value();
}

TEST(BertTokenizerTest, LowerCasesAndSplitsPunctuation) {
  EXPECT_THAT(Tiny()->Tokenize("Hello, WORLD!"), ElementsAre("hello", ",", "world", "!"));
}

TEST(BertTokenizerTest, StripsAccents) {
  EXPECT_THAT(Tiny()->Tokenize("Crème  brûlée"), ElementsAre("creme", "brulee"));
}

TEST(BertTokenizerTest, SplitsCjkCharacters) {
  EXPECT_THAT(Tiny()->Tokenize("我喜欢猫"), ElementsAre("我", "喜", "欢", "猫"));
}

TEST(BertTokenizerTest, WordPieceUsesContinuationsAndUnknown) {
  EXPECT_THAT(Tiny()->Tokenize("unaffable unknowable $50"),
              ElementsAre("un", "##aff", "##able", "[UNK]", "$", "5", "##0"));
}

TEST(BertTokenizerTest, WordsOverHundredCharactersAreUnknown) {
  EXPECT_THAT(Tiny()->Tokenize(std::string(100, 'a')), ElementsAre("[UNK]"));  // No "##a".
  EXPECT_THAT(Tiny()->Tokenize(std::string(101, 'a')), ElementsAre("[UNK]"));
}

TEST(BertTokenizerTest, DropsControlCharactersAndInvalidUtf8) {
  EXPECT_THAT(Tiny()->Tokenize(std::string("hel\x01lo\tworld\xff", 14)),
              ElementsAre("hello", "world"));
}

TEST(BertTokenizerTest, EncodeAddsSpecialTokensAndTruncates) {
  EXPECT_THAT(Tiny()->Encode(""), ElementsAre(2, 3));
  EXPECT_THAT(Tiny()->Encode("hello world"), ElementsAre(2, 4, 5, 3));
  EXPECT_THAT(Tiny(4)->Encode("hello world hello"), ElementsAre(2, 4, 5, 3));
  EXPECT_THAT(Tiny(3)->Encode("unaffable"), ElementsAre(2, 11, 3));
}

TEST(BertTokenizerTest, LiteralSpecialTokensKeepTheirIds) {
  EXPECT_THAT(Tiny()->Encode("hello[SEP] [CLS]world"), ElementsAre(2, 4, 3, 2, 5, 3));
  EXPECT_THAT(Tiny()->Tokenize("[cls]"), ElementsAre("[UNK]", "[UNK]", "[UNK]"));
}

TEST(BertTokenizerTest, VocabularyWithoutSpecialTokensIsRejected) {
  auto t = BertTokenizer::FromVocabText("hello\nworld\n", BertTokenizerOptions());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BertTokenizerTest, MissingVocabularyNamesThePath) {
  MemFileSystem fs;
  auto t = BertTokenizer::Load(&fs, "/x/vocab.txt", BertTokenizerOptions());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("/x/vocab.txt"));
}

// Every reference text's ids equal those of Hugging Face's BertTokenizerFast.
TEST(BertTokenizerParityTest, IdsEqualHuggingFaceOnReferenceTexts) {
  if (!text_test::HaveModel()) GTEST_SKIP() << text_test::SkipMessage();
  const nlohmann::json ref = text_test::LoadReference();
  ASSERT_TRUE(ref.is_object()) << "tests/text/testdata/minilm_reference.json unreadable";
  BertTokenizerOptions options;
  options.max_length = ref["max_length"].get<int>();
  auto tokenizer =
      BertTokenizer::Load(PosixFileSystem(), JoinPath(text_test::ModelDir(), "vocab.txt"), options);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  int mismatches = 0;
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = (*tokenizer)->Encode(text);
    if (got != want) {
      ++mismatches;
      ADD_FAILURE() << "ids differ for " << nlohmann::json(text).dump() << "\n got "
                    << nlohmann::json(got).dump() << "\nwant " << nlohmann::json(want).dump();
    }
  }
  EXPECT_GE(ref["cases"].size(), 200u);
  std::cout << "tokenizer parity: " << ref["cases"].size() - mismatches << "/"
            << ref["cases"].size() << " texts with identical ids\n";
}

}  // namespace
}  // namespace choir
