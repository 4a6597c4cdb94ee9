// `choir embed`'s pipeline and its append-only cache: round trip, torn-tail recovery, corrupt
// records and wrong headers, deduplication, and resume after a failure part way giving output
// identical byte for byte to an uninterrupted run.
#include "models/text/embed.h"

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/fs.h"
#include "gtest/gtest.h"
#include "models/text/internal/embedding_cache.h"
#include "models/text/minilm.h"
#include "tests/text/text_test_util.h"

namespace choir {
namespace {

using text_internal::EmbeddingCache;
using text_internal::EmbeddingCacheKey;
using text_internal::kEmbeddingCacheHeaderSize;

constexpr int kDim = 5;
constexpr char kCache[] = "/work/emb.cache";

// A row that depends on the text alone (not on the batch), unnormalised on purpose: the
// pipeline must not care.
std::vector<float> RowOf(absl::string_view text) {
  std::vector<float> row(kDim);
  uint64_t h = EmbeddingCacheKey("row", text);
  for (float& x : row) {
    x = static_cast<float>(h % 1000003) / 7.0f - 50.0f;
    h = h * 6364136223846793005ull + 1442695040888963407ull;
  }
  return row;
}

// Embeds with RowOf; fails every call after the first `ok_calls` (negative: never) with
// UNAVAILABLE, as an endpoint that died. Thread-safe.
class FakeEmbedder : public TextEmbedder {
 public:
  explicit FakeEmbedder(int ok_calls = -1, int dim = kDim) : ok_calls_(ok_calls), dim_(dim) {}
  std::string Identity() const override { return "fake"; }
  absl::StatusOr<EmbeddingMatrix> Embed(const std::vector<std::string>& texts) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_;
      if (ok_calls_ >= 0 && calls_ > ok_calls_) return absl::UnavailableError("fake endpoint: Connection refused");
      texts_ += static_cast<int64_t>(texts.size());
    }
    EmbeddingMatrix m;
    m.rows = static_cast<int64_t>(texts.size());
    m.dim = dim_;
    for (const std::string& t : texts) {
      std::vector<float> row = RowOf(t);
      row.resize(dim_, 1.0f);
      m.values.insert(m.values.end(), row.begin(), row.end());
    }
    return m;
  }
  int calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  int64_t texts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return texts_;
  }

 private:
  const int ok_calls_;
  const int dim_;
  mutable std::mutex mu_;  // std::mutex: visible to TSan (Debian's abseil is not instrumented)
  int calls_ = 0;
  int64_t texts_ = 0;  // texts embedded successfully
};

// `n` texts with some repeats (every 7th repeats text 0, every 5th its predecessor).
std::vector<std::string> Texts(int n) {
  std::vector<std::string> texts;
  for (int i = 0; i < n; ++i) {
    if (i > 0 && i % 7 == 0) {
      texts.push_back(texts[0]);
    } else if (i > 0 && i % 5 == 0) {
      texts.push_back(texts.back());
    } else {
      texts.push_back(absl::StrCat("profile ", i, ": likes tea and bikes"));
    }
  }
  return texts;
}

EmbedOptions Options(std::string cache = kCache) {
  EmbedOptions o;
  o.cache_path = std::move(cache);
  o.batch_size = 4;
  o.parallelism = 3;
  o.progress = false;
  return o;
}

bool SameBytes(const EmbeddingMatrix& a, const EmbeddingMatrix& b) {
  return a.rows == b.rows && a.dim == b.dim && a.values.size() == b.values.size() &&
         std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float)) == 0;
}

class EmbedTest : public testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fs_.CreateDirs("/work").ok()); }
  std::string Contents() {
    absl::StatusOr<std::string> c = fs_.GetContents(kCache);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : std::string();
  }
  size_t RecordSize() const { return 12 + 4 * kDim; }
  // Writes a cache of `n` rows keyed by "k<i>".
  void WriteCache(int n) {
    absl::StatusOr<std::unique_ptr<EmbeddingCache>> cache = EmbeddingCache::Open(&fs_, kCache);
    ASSERT_TRUE(cache.ok()) << cache.status();
    for (int i = 0; i < n; ++i) {
      const std::vector<float> row = RowOf(absl::StrCat("k", i));
      ASSERT_TRUE((*cache)->Append({EmbeddingCacheKey("fake", absl::StrCat("k", i))}, row.data(), kDim).ok());
    }
  }
  absl::StatusOr<std::unique_ptr<EmbeddingCache>> Reopen() { return EmbeddingCache::Open(&fs_, kCache); }

  MemFileSystem fs_;
};

TEST_F(EmbedTest, CacheRoundTripsRowsBitForBit) {
  WriteCache(3);
  EXPECT_EQ(Contents().size(), kEmbeddingCacheHeaderSize + 3 * RecordSize());
  EXPECT_EQ(Contents().substr(0, 8), "CHOIREMB");
  absl::StatusOr<std::unique_ptr<EmbeddingCache>> cache = Reopen();
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->dim(), kDim);
  EXPECT_EQ((*cache)->size(), 3);
  for (int i = 0; i < 3; ++i) {
    const float* row = (*cache)->Find(EmbeddingCacheKey("fake", absl::StrCat("k", i)));
    ASSERT_NE(row, nullptr);
    EXPECT_EQ(std::memcmp(row, RowOf(absl::StrCat("k", i)).data(), kDim * sizeof(float)), 0);
  }
  EXPECT_EQ((*cache)->Find(EmbeddingCacheKey("other", "k0")), nullptr);
  EXPECT_NE(EmbeddingCacheKey("ab", "c"), EmbeddingCacheKey("a", "bc"));
}

TEST_F(EmbedTest, AbsentCacheIsEmptyAndNotCreatedUntilTheFirstAppend) {
  absl::StatusOr<std::unique_ptr<EmbeddingCache>> cache = Reopen();
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->dim(), 0);
  EXPECT_FALSE(fs_.Exists(kCache));
}

TEST_F(EmbedTest, TornTailIsDroppedAndTheFileRepaired) {
  WriteCache(3);
  const std::string whole = Contents();
  for (size_t cut : {size_t{1}, RecordSize() - 1}) {
    ASSERT_TRUE(fs_.SetContents(kCache, whole.substr(0, whole.size() - cut)).ok());
    absl::StatusOr<std::unique_ptr<EmbeddingCache>> cache = Reopen();
    ASSERT_TRUE(cache.ok()) << cache.status();
    EXPECT_EQ((*cache)->size(), 2) << cut;
    EXPECT_EQ(Contents(), whole.substr(0, kEmbeddingCacheHeaderSize + 2 * RecordSize())) << cut;
    // Appending after the repair lines up with the records before it.
    const std::vector<float> row = RowOf("k2");
    ASSERT_TRUE((*cache)->Append({EmbeddingCacheKey("fake", "k2")}, row.data(), kDim).ok());
    cache->reset();
    EXPECT_EQ(Contents(), whole) << cut;
  }
}

TEST_F(EmbedTest, BadLastRecordIsATornTailButABadMiddleRecordIsDataLoss) {
  WriteCache(3);
  std::string bytes = Contents();
  bytes[kEmbeddingCacheHeaderSize + 2 * RecordSize() + 9] ^= 0x40;  // last record's row
  ASSERT_TRUE(fs_.SetContents(kCache, bytes).ok());
  absl::StatusOr<std::unique_ptr<EmbeddingCache>> cache = Reopen();
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->size(), 2);

  WriteCache(1);  // 3 good records again
  bytes = Contents();
  ASSERT_EQ(bytes.size(), kEmbeddingCacheHeaderSize + 3 * RecordSize());
  const size_t offset = kEmbeddingCacheHeaderSize + RecordSize();
  bytes[offset + 3] ^= 0x01;  // the middle record's key
  ASSERT_TRUE(fs_.SetContents(kCache, bytes).ok());
  cache = Reopen();
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kDataLoss) << cache.status();
  EXPECT_TRUE(absl::StrContains(cache.status().message(), kCache)) << cache.status();
  EXPECT_TRUE(absl::StrContains(cache.status().message(), absl::StrCat("record 1 at offset ", offset)))
      << cache.status();
  EXPECT_TRUE(absl::StrContains(cache.status().message(), "delete it")) << cache.status();
}

TEST_F(EmbedTest, WrongHeaderVersionOrWidthIsInvalidArgumentNamingTheFile) {
  WriteCache(1);
  const std::string good = Contents();
  for (const auto& [bytes, says] : std::vector<std::pair<std::string, std::string>>{
           {"not a cache at all", "bad header"},
           {"CHOIR", "bad header"},
           {good.substr(0, 8) + std::string("\x02\0\0\0", 4) + good.substr(12), "format version 2"},
           {good.substr(0, 12) + std::string(4, '\0') + good.substr(16), "bad row width 0"}}) {
    ASSERT_TRUE(fs_.SetContents(kCache, bytes).ok());
    absl::StatusOr<std::unique_ptr<EmbeddingCache>> cache = Reopen();
    EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument) << says;
    EXPECT_TRUE(absl::StrContains(cache.status().message(), kCache)) << cache.status();
    EXPECT_TRUE(absl::StrContains(cache.status().message(), says)) << cache.status();
  }
  ASSERT_TRUE(fs_.SetContents(kCache, good).ok());
  absl::StatusOr<std::unique_ptr<EmbeddingCache>> cache = Reopen();
  ASSERT_TRUE(cache.ok());
  const std::vector<float> wide(kDim + 1, 1.0f);
  const absl::Status s = (*cache)->Append({1}, wide.data(), kDim + 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "width 5 but the encoder gives width 6")) << s;
}

TEST_F(EmbedTest, RowsFollowTheInputAndRepeatsAreEmbeddedOnce) {
  const std::vector<std::string> texts = Texts(30);
  FakeEmbedder fake;
  EmbedReport report;
  absl::StatusOr<EmbeddingMatrix> m = EmbedTexts(&fs_, &fake, texts, Options(), &report);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows, 30);
  ASSERT_EQ(m->dim, kDim);
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(std::memcmp(m->values.data() + i * kDim, RowOf(texts[i]).data(), kDim * sizeof(float)), 0) << i;
  }
  EXPECT_EQ(report.texts, 30);
  EXPECT_LT(report.distinct, 30);
  EXPECT_EQ(report.embedded, report.distinct);
  EXPECT_EQ(report.cached, 0);
  EXPECT_EQ(fake.texts(), report.distinct);

  // A second run is served from the cache alone.
  FakeEmbedder again;
  absl::StatusOr<EmbeddingMatrix> second = EmbedTexts(&fs_, &again, texts, Options(), &report);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(SameBytes(*m, *second));
  EXPECT_EQ(again.calls(), 0);
  EXPECT_EQ(report.cached, report.distinct);
}

TEST_F(EmbedTest, ResultDoesNotDependOnBatchingOrParallelism) {
  const std::vector<std::string> texts = Texts(50);
  FakeEmbedder a, b;
  EmbedOptions serial = Options("");
  serial.parallelism = 1;
  serial.batch_size = 50;
  EmbedOptions parallel = Options("");
  parallel.parallelism = 4;
  parallel.batch_size = 3;
  absl::StatusOr<EmbeddingMatrix> ma = EmbedTexts(&fs_, &a, texts, serial);
  absl::StatusOr<EmbeddingMatrix> mb = EmbedTexts(&fs_, &b, texts, parallel);
  ASSERT_TRUE(ma.ok() && mb.ok());
  EXPECT_TRUE(SameBytes(*ma, *mb));
  EXPECT_FALSE(fs_.Exists(kCache));
}

TEST_F(EmbedTest, FailurePartWayKeepsFinishedBatchesAndARerunResumesToIdenticalOutput) {
  const std::vector<std::string> texts = Texts(60);
  FakeEmbedder healthy;
  absl::StatusOr<EmbeddingMatrix> uninterrupted = EmbedTexts(&fs_, &healthy, texts, Options("/work/ref.cache"));
  ASSERT_TRUE(uninterrupted.ok()) << uninterrupted.status();

  FakeEmbedder dying(/*ok_calls=*/5);
  EmbedReport report;
  absl::StatusOr<EmbeddingMatrix> failed = EmbedTexts(&fs_, &dying, texts, Options(), &report);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "fake endpoint: Connection refused")) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(),
                                absl::StrCat("20 of ", report.distinct, " distinct texts are embedded and saved in ",
                                             kCache, ": rerun the same command to resume")))
      << failed.status();
  EXPECT_EQ(report.embedded, 20);  // 5 batches of 4 finished; none after the failure
  ASSERT_EQ(Contents().size(), kEmbeddingCacheHeaderSize + 20 * RecordSize());

  FakeEmbedder rerun;
  absl::StatusOr<EmbeddingMatrix> resumed = EmbedTexts(&fs_, &rerun, texts, Options(), &report);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(report.cached, 20);
  EXPECT_EQ(rerun.texts(), report.distinct - 20);
  EXPECT_TRUE(SameBytes(*uninterrupted, *resumed));
}

TEST_F(EmbedTest, CrashMidAppendLosesOnlyThatBatch) {
  const std::vector<std::string> texts = Texts(40);
  FakeEmbedder healthy;
  absl::StatusOr<EmbeddingMatrix> uninterrupted = EmbedTexts(&fs_, &healthy, texts, Options(""));
  ASSERT_TRUE(uninterrupted.ok());

  FaultInjectingFileSystem faulty(&fs_);
  // The header and two whole batches of 4 reach the file, then half a record.
  faulty.FailWritesAfterBytes(kEmbeddingCacheHeaderSize + 8 * RecordSize() + RecordSize() / 2);
  FakeEmbedder embedder;
  EmbedOptions serial = Options();
  serial.parallelism = 1;
  absl::StatusOr<EmbeddingMatrix> failed = EmbedTexts(&faulty, &embedder, texts, serial);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "injected")) << failed.status();

  EmbedReport report;
  FakeEmbedder rerun;
  absl::StatusOr<EmbeddingMatrix> resumed = EmbedTexts(&fs_, &rerun, texts, Options(), &report);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(report.cached, 8);
  EXPECT_TRUE(SameBytes(*uninterrupted, *resumed));
}

TEST_F(EmbedTest, CacheOfAnotherWidthIsInvalidArgumentNamingIt) {
  const std::vector<std::string> texts = Texts(10);
  FakeEmbedder narrow;
  ASSERT_TRUE(EmbedTexts(&fs_, &narrow, {texts.begin(), texts.begin() + 5}, Options()).ok());
  FakeEmbedder wide(-1, kDim + 3);
  absl::StatusOr<EmbeddingMatrix> m = EmbedTexts(&fs_, &wide, texts, Options());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), kCache)) << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), "width 5 but fake gives width 8")) << m.status();
}

TEST_F(EmbedTest, EmptyInputGivesNoRowsAndBadOptionsAreRefused) {
  FakeEmbedder fake;
  absl::StatusOr<EmbeddingMatrix> m = EmbedTexts(&fs_, &fake, {}, Options());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 0);
  EXPECT_EQ(fake.calls(), 0);
  EmbedOptions bad = Options();
  bad.batch_size = 0;
  EXPECT_EQ(EmbedTexts(&fs_, &fake, {"a"}, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MiniLmEmbedderTest, EmbedMatchesEncodeAndNamesTheModelDirectory) {
  if (!text_test::HaveModel()) GTEST_SKIP() << text_test::SkipMessage();
  absl::StatusOr<std::unique_ptr<SentenceEncoder>> encoder =
      SentenceEncoder::Load(PosixFileSystem(), text_test::ModelDir());
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  const std::vector<std::string> texts = {"a young parent in a large city", "likes tea", ""};
  std::vector<float> want(texts.size() * (*encoder)->dim());
  ASSERT_TRUE((*encoder)->Encode(texts, 1, 1, want.data()).ok());
  TextEmbedder* embedder = encoder->get();
  absl::StatusOr<EmbeddingMatrix> m = embedder->Embed(texts);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->dim, 384);
  // One packed batch gives the rows of batches of one up to rounding (BLAS picks kernels by
  // matrix size, so the last bits can differ).
  ASSERT_EQ(m->values.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(m->values[i], want[i], 1e-6) << i;
  EXPECT_EQ(embedder->Identity(), "minilm:" + text_test::ModelDir());
}

}  // namespace
}  // namespace choir
