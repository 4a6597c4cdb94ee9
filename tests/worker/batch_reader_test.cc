// The trainer's input pipeline: the feature layout built from a schema, and the batches the
// reader delivers, checked against the rows read straight from the shards.
#include "worker/batch_reader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "core/fs.h"
#include "data/row_block.h"
#include "data/shard.h"
#include "gtest/gtest.h"
#include "ps/feature_key.h"
#include "tests/worker/worker_test_util.h"

namespace choir::worker {
namespace {

using testing::CountRows;
using testing::CountRowsWhere;
using testing::Generate;
using testing::ReadBlocks;
using testing::SplitFiles;

// The categorical fields of the generator's impression schema, in schema order: every INT64
// field with role USER_ID, ITEM_ID or FEATURE (timestamp and the labels are not features).
const std::vector<std::string> kCategorical = {
    "user_id",       "item_id", "user_gender", "user_age",  "user_city",   "item_category",
    "item_l1",       "item_brand", "item_shop", "ctx_position", "ctx_hour"};

int SlotOfField(const std::string& name) {
  auto it = std::find(kCategorical.begin(), kCategorical.end(), name);
  EXPECT_NE(it, kCategorical.end()) << name;
  return static_cast<int>(it - kCategorical.begin());
}

std::vector<std::string> CategoricalNames(const FeatureLayout& layout) {
  std::vector<std::string> names;
  for (const auto& c : layout.categorical) names.push_back(c.field);
  return names;
}

// A small dataset shared by the tests of this file: 600 users in chunks of 100, so the train
// split has several blocks, spread over several files.
class WorkerDataTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    Generate(fs_, "/ds", 600, /*seed=*/3, /*users_per_chunk=*/100, /*rows_per_file=*/2000);
    train_files_ = new std::vector<std::string>(SplitFiles(fs_, "/ds", "train"));
    train_blocks_ = new std::vector<data::RowBlock>(ReadBlocks(fs_, *train_files_));
    ASSERT_FALSE(train_blocks_->empty());
    schema_ = new data::Schema(train_blocks_->front().schema());
  }
  static void TearDownTestSuite() {
    delete schema_;
    delete train_blocks_;
    delete train_files_;
    delete fs_;
  }

  static MemFileSystem* fs_;
  static std::vector<std::string>* train_files_;
  static std::vector<data::RowBlock>* train_blocks_;
  static data::Schema* schema_;
};

MemFileSystem* WorkerDataTest::fs_ = nullptr;
std::vector<std::string>* WorkerDataTest::train_files_ = nullptr;
std::vector<data::RowBlock>* WorkerDataTest::train_blocks_ = nullptr;
data::Schema* WorkerDataTest::schema_ = nullptr;

// ---- BuildFeatureLayout ----

using FeatureLayoutTest = WorkerDataTest;

TEST_F(FeatureLayoutTest, ImpressionSchemaGivesCategoricalDenseLabelsAndDefaultSequences) {
  ModelConfig model;
  model.set_max_seq_len(7);
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, TASK_CVR);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(CategoricalNames(*layout), kCategorical);
  for (int i = 0; i < layout->num_slots(); ++i) {
    const auto& c = layout->categorical[i];
    EXPECT_EQ(c.slot, static_cast<uint32_t>(i)) << c.field;
    ASSERT_GE(c.column, 0);
    EXPECT_EQ(schema_->fields(c.column).name(), c.field);
  }
  ASSERT_EQ(layout->dense.size(), 1u);
  EXPECT_EQ(layout->dense[0].field, "item_price");
  EXPECT_EQ(schema_->fields(layout->dense[0].column).name(), "item_price");
  EXPECT_EQ(schema_->fields(layout->user_column).name(), "user_id");
  EXPECT_EQ(schema_->fields(layout->click_column).name(), "click");
  EXPECT_EQ(schema_->fields(layout->conversion_column).name(), "conversion");
  ASSERT_EQ(layout->sequences.size(), 2u);
  EXPECT_EQ(layout->sequences[0].field, "hist_item");
  EXPECT_EQ(schema_->fields(layout->sequences[0].column).name(), "hist_item");
  EXPECT_EQ(layout->categorical[layout->sequences[0].target].field, "item_id");
  EXPECT_EQ(layout->sequences[1].field, "hist_cate");
  EXPECT_EQ(schema_->fields(layout->sequences[1].column).name(), "hist_cate");
  EXPECT_EQ(layout->categorical[layout->sequences[1].target].field, "item_category");
  EXPECT_EQ(layout->task, TASK_CVR);
  EXPECT_EQ(layout->max_seq_len, 7);
}

TEST_F(FeatureLayoutTest, ExcludedFieldsAreDroppedAndSlotsStayContiguous) {
  ModelConfig model;
  model.add_exclude_fields("ctx_position");
  model.add_exclude_fields("item_price");
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, TASK_CVR);
  ASSERT_TRUE(layout.ok()) << layout.status();
  std::vector<std::string> expected = kCategorical;
  expected.erase(std::find(expected.begin(), expected.end(), "ctx_position"));
  EXPECT_EQ(CategoricalNames(*layout), expected);
  for (int i = 0; i < layout->num_slots(); ++i) {
    EXPECT_EQ(layout->categorical[i].slot, static_cast<uint32_t>(i));
  }
  EXPECT_TRUE(layout->dense.empty());
}

TEST_F(FeatureLayoutTest, ExcludingADefaultSequenceTargetDropsThatSequenceOnly) {
  ModelConfig model;
  model.add_exclude_fields("item_category");
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, TASK_CVR);
  ASSERT_TRUE(layout.ok()) << layout.status();
  ASSERT_EQ(layout->sequences.size(), 1u);
  EXPECT_EQ(layout->sequences[0].field, "hist_item");
  EXPECT_EQ(layout->categorical[layout->sequences[0].target].field, "item_id");
}

TEST_F(FeatureLayoutTest, UnknownExcludedFieldIsInvalidArgumentNamingIt) {
  ModelConfig model;
  model.add_exclude_fields("no_such_field");
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, TASK_CVR);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(layout.status().message().find("no_such_field"), std::string::npos) << layout.status();
  EXPECT_NE(layout.status().message().find("exclude_fields"), std::string::npos) << layout.status();
}

TEST_F(FeatureLayoutTest, CvrOnASchemaWithoutConversionIsFailedPreconditionButCtrWorks) {
  data::Schema no_conversion;
  for (const data::Field& f : schema_->fields()) {
    if (f.role() != data::LABEL_CONVERSION) *no_conversion.add_fields() = f;
  }
  ASSERT_EQ(no_conversion.fields_size(), schema_->fields_size() - 1);
  absl::StatusOr<FeatureLayout> cvr = BuildFeatureLayout(no_conversion, ModelConfig(), TASK_CVR);
  ASSERT_FALSE(cvr.ok());
  EXPECT_EQ(cvr.status().code(), absl::StatusCode::kFailedPrecondition) << cvr.status();
  absl::StatusOr<FeatureLayout> ctcvr = BuildFeatureLayout(no_conversion, ModelConfig(), TASK_CTCVR);
  ASSERT_FALSE(ctcvr.ok());
  EXPECT_EQ(ctcvr.status().code(), absl::StatusCode::kFailedPrecondition) << ctcvr.status();
  absl::StatusOr<FeatureLayout> ctr = BuildFeatureLayout(no_conversion, ModelConfig(), TASK_CTR);
  ASSERT_TRUE(ctr.ok()) << ctr.status();
  EXPECT_EQ(ctr->conversion_column, -1);
  EXPECT_EQ(CategoricalNames(*ctr), kCategorical);
}

TEST_F(FeatureLayoutTest, SchemaWithoutUserIdIsFailedPrecondition) {
  data::Schema no_user;
  for (const data::Field& f : schema_->fields()) {
    if (f.role() != data::USER_ID) *no_user.add_fields() = f;
  }
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(no_user, ModelConfig(), TASK_CTR);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), absl::StatusCode::kFailedPrecondition) << layout.status();
}

TEST_F(FeatureLayoutTest, ConfiguredSequenceWithMissingTargetIsInvalidArgumentNamingIt) {
  ModelConfig model;
  SequenceTarget* s = model.add_sequences();
  s->set_sequence("hist_item");
  s->set_target("no_such_target");
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, TASK_CVR);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(layout.status().message().find("no_such_target"), std::string::npos) << layout.status();
  EXPECT_NE(layout.status().message().find("model.sequences"), std::string::npos) << layout.status();

  // A target that exists but was excluded is missing as a feature.
  ModelConfig excluded;
  excluded.add_exclude_fields("item_id");
  SequenceTarget* e = excluded.add_sequences();
  e->set_sequence("hist_item");
  e->set_target("item_id");
  layout = BuildFeatureLayout(*schema_, excluded, TASK_CVR);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument) << layout.status();
}

TEST_F(FeatureLayoutTest, ConfiguredSequenceThatIsNotAnIntListIsInvalidArgument) {
  ModelConfig model;
  SequenceTarget* s = model.add_sequences();
  s->set_sequence("item_price");
  s->set_target("item_id");
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, TASK_CVR);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(layout.status().message().find("item_price"), std::string::npos) << layout.status();
}

TEST_F(FeatureLayoutTest, ConfiguredSequencesReplaceTheDefaults) {
  ModelConfig model;
  SequenceTarget* s = model.add_sequences();
  s->set_sequence("hist_cate");
  s->set_target("item_category");
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, TASK_CVR);
  ASSERT_TRUE(layout.ok()) << layout.status();
  ASSERT_EQ(layout->sequences.size(), 1u);
  EXPECT_EQ(layout->sequences[0].field, "hist_cate");
  EXPECT_EQ(layout->categorical[layout->sequences[0].target].field, "item_category");
}

// ---- BatchReader ----

// One sample as the reader hands it out, comparable and sortable.
struct Sample {
  int64_t user = 0;
  float label = 0;
  std::vector<uint64_t> cat;
  std::vector<float> dense;
  std::vector<std::vector<uint64_t>> seqs;

  auto Tie() const { return std::tie(user, label, cat, dense, seqs); }
  bool operator==(const Sample& o) const { return Tie() == o.Tie(); }
  bool operator<(const Sample& o) const { return Tie() < o.Tie(); }
};

// Splits a batch into samples, checking its internal sizes.
std::vector<Sample> SamplesOf(const Batch& batch, const FeatureLayout& layout) {
  const size_t n = batch.size, slots = layout.num_slots(), nd = layout.dense.size();
  EXPECT_EQ(batch.labels.size(), n);
  EXPECT_EQ(batch.user_ids.size(), n);
  EXPECT_EQ(batch.cat_keys.size(), n * slots);
  EXPECT_EQ(batch.dense.size(), n * nd);
  EXPECT_EQ(batch.seq_keys.size(), layout.sequences.size());
  EXPECT_EQ(batch.seq_lengths.size(), layout.sequences.size());
  std::vector<Sample> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i].user = batch.user_ids[i];
    out[i].label = batch.labels[i];
    out[i].cat.assign(batch.cat_keys.begin() + i * slots, batch.cat_keys.begin() + (i + 1) * slots);
    out[i].dense.assign(batch.dense.begin() + i * nd, batch.dense.begin() + (i + 1) * nd);
    out[i].seqs.resize(layout.sequences.size());
  }
  for (size_t q = 0; q < layout.sequences.size(); ++q) {
    EXPECT_EQ(batch.seq_lengths[q].size(), n);
    size_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      const size_t len = batch.seq_lengths[q][i];
      EXPECT_LE(len, static_cast<size_t>(layout.max_seq_len));
      EXPECT_LE(offset + len, batch.seq_keys[q].size());
      if (offset + len > batch.seq_keys[q].size()) return out;
      out[i].seqs[q].assign(batch.seq_keys[q].begin() + offset, batch.seq_keys[q].begin() + offset + len);
      offset += len;
    }
    EXPECT_EQ(offset, batch.seq_keys[q].size());
  }
  return out;
}

// The samples `task` makes of `blocks`, in file order, computed from the rows by field name
// (slots from kCategorical, not from the layout): the reference the reader must match.
std::vector<Sample> ExpectedSamples(const std::vector<data::RowBlock>& blocks, Task task,
                                    int max_seq_len) {
  std::vector<Sample> out;
  for (const data::RowBlock& b : blocks) {
    const int click = b.FieldIndex("click"), conversion = b.FieldIndex("conversion");
    const int user = b.FieldIndex("user_id"), price = b.FieldIndex("item_price");
    const int hist_item = b.FieldIndex("hist_item"), hist_cate = b.FieldIndex("hist_cate");
    for (size_t r = 0; r < b.num_rows(); ++r) {
      Sample s;
      if (task == TASK_CVR && b.Int(click, r) == 0) continue;
      s.label = task == TASK_CTR ? b.Int(click, r) : b.Int(conversion, r);
      s.user = b.Int(user, r);
      for (size_t slot = 0; slot < kCategorical.size(); ++slot) {
        s.cat.push_back(FeatureKey(slot, b.Int(b.FieldIndex(kCategorical[slot]), r)));
      }
      s.dense.push_back(std::log1p(std::max(0.0f, b.Float(price, r))));
      for (auto [col, target] : {std::pair{hist_item, "item_id"}, std::pair{hist_cate, "item_category"}}) {
        std::vector<uint64_t> keys;
        absl::Span<const int64_t> values = b.IntList(col, r);
        for (size_t k = 0; k < values.size() && k < static_cast<size_t>(max_seq_len); ++k) {
          keys.push_back(FeatureKey(SlotOfField(target), values[k]));
        }
        s.seqs.push_back(keys);
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

struct ReadResult {
  absl::Status status;
  std::vector<std::vector<Sample>> batches;
  std::vector<Sample> all;
  int64_t samples = 0, filtered = 0;
};

// Reads every batch of `files` (until Next returns false or fails).
ReadResult ReadAll(FileSystem* fs, const std::vector<std::string>& files, const FeatureLayout& layout,
                   const BatchReaderOptions& options) {
  ReadResult result;
  absl::StatusOr<std::unique_ptr<BatchReader>> reader = BatchReader::Open(fs, files, layout, options);
  if (!reader.ok()) {
    result.status = reader.status();
    return result;
  }
  Batch batch;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&batch);
    if (!more.ok()) {
      result.status = more.status();
      break;
    }
    if (!*more) break;
    result.batches.push_back(SamplesOf(batch, layout));
    result.all.insert(result.all.end(), result.batches.back().begin(), result.batches.back().end());
  }
  result.samples = (*reader)->samples();
  result.filtered = (*reader)->filtered();
  return result;
}

std::vector<Sample> Sorted(std::vector<Sample> v) {
  std::sort(v.begin(), v.end());
  return v;
}

class BatchReaderTest : public WorkerDataTest {
 protected:
  FeatureLayout Layout(Task task) {
    ModelConfig model;
    model.set_max_seq_len(kMaxSeqLen);
    absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(*schema_, model, task);
    EXPECT_TRUE(layout.ok()) << layout.status();
    return *layout;
  }
  static BatchReaderOptions Options(int batch_size, int shuffle_buffer, uint64_t seed) {
    BatchReaderOptions o;
    o.batch_size = batch_size;
    o.shuffle_buffer = shuffle_buffer;
    o.seed = seed;
    o.prefetch_blocks = 2;
    return o;
  }
  static constexpr int kMaxSeqLen = 5;
};

TEST_F(BatchReaderTest, DatasetHasSeveralFilesBlocksAndSequencesBothSidesOfTheCap) {
  // Preconditions of the tests below, so that they exercise what they claim to.
  EXPECT_GE(train_files_->size(), 2u);
  EXPECT_GE(train_blocks_->size(), 4u);
  int shorter = 0, longer = 0;
  for (const data::RowBlock& b : *train_blocks_) {
    const int col = b.FieldIndex("hist_item");
    for (size_t r = 0; r < b.num_rows(); ++r) {
      const size_t n = b.IntList(col, r).size();
      shorter += n < static_cast<size_t>(kMaxSeqLen);
      longer += n > static_cast<size_t>(kMaxSeqLen);
    }
  }
  EXPECT_GT(shorter, 0);
  EXPECT_GT(longer, 0);
  const int64_t clicks = CountRowsWhere(*train_blocks_, "click", 1);
  EXPECT_GT(clicks, 100);
  EXPECT_LT(clicks, CountRows(*train_blocks_));
}

TEST_F(BatchReaderTest, CvrDeliversExactlyTheClickedRowsLabelledByConversion) {
  const FeatureLayout layout = Layout(TASK_CVR);
  ReadResult r = ReadAll(fs_, *train_files_, layout, Options(64, 1000, 5));
  ASSERT_TRUE(r.status.ok()) << r.status;
  const int64_t clicks = CountRowsWhere(*train_blocks_, "click", 1);
  EXPECT_EQ(static_cast<int64_t>(r.all.size()), clicks);
  EXPECT_EQ(r.samples, clicks);
  EXPECT_EQ(r.filtered, CountRows(*train_blocks_) - clicks);
  // The full samples (user, label = conversion, keys, dense, capped sequences) as a multiset.
  EXPECT_TRUE(Sorted(r.all) == Sorted(ExpectedSamples(*train_blocks_, TASK_CVR, kMaxSeqLen)));
  // And the (user, label) multiset alone, for a readable failure.
  std::multiset<std::pair<int64_t, float>> got, want;
  for (const Sample& s : r.all) got.insert({s.user, s.label});
  for (const Sample& s : ExpectedSamples(*train_blocks_, TASK_CVR, kMaxSeqLen)) want.insert({s.user, s.label});
  EXPECT_EQ(got, want);
  int positives = 0;
  for (const Sample& s : r.all) positives += s.label == 1.0f;
  EXPECT_GT(positives, 0);
}

TEST_F(BatchReaderTest, CtrDeliversEveryRowLabelledByClick) {
  const FeatureLayout layout = Layout(TASK_CTR);
  ReadResult r = ReadAll(fs_, *train_files_, layout, Options(100, 500, 5));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(static_cast<int64_t>(r.all.size()), CountRows(*train_blocks_));
  EXPECT_EQ(r.filtered, 0);
  EXPECT_TRUE(Sorted(r.all) == Sorted(ExpectedSamples(*train_blocks_, TASK_CTR, kMaxSeqLen)));
}

TEST_F(BatchReaderTest, CtcvrDeliversEveryRowLabelledByConversion) {
  const FeatureLayout layout = Layout(TASK_CTCVR);
  ReadResult r = ReadAll(fs_, *train_files_, layout, Options(100, 0, 5));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(r.all == ExpectedSamples(*train_blocks_, TASK_CTCVR, kMaxSeqLen));
}

TEST_F(BatchReaderTest, BatchesAreFullExceptTheLast) {
  const FeatureLayout layout = Layout(TASK_CTR);
  const int64_t rows = CountRows(*train_blocks_);
  const int batch_size = 97;  // does not divide the row count (checked below)
  ASSERT_NE(rows % batch_size, 0);
  ReadResult r = ReadAll(fs_, *train_files_, layout, Options(batch_size, 300, 9));
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(static_cast<int64_t>(r.batches.size()), (rows + batch_size - 1) / batch_size);
  for (size_t i = 0; i + 1 < r.batches.size(); ++i) EXPECT_EQ(r.batches[i].size(), size_t{batch_size}) << i;
  EXPECT_EQ(static_cast<int64_t>(r.batches.back().size()), rows % batch_size);
}

TEST_F(BatchReaderTest, NextKeepsReturningFalseAfterTheEnd) {
  const FeatureLayout layout = Layout(TASK_CTR);
  absl::StatusOr<std::unique_ptr<BatchReader>> reader =
      BatchReader::Open(fs_, *train_files_, layout, Options(1 << 20, 0, 1));
  ASSERT_TRUE(reader.ok()) << reader.status();
  Batch batch;
  absl::StatusOr<bool> more = (*reader)->Next(&batch);
  ASSERT_TRUE(more.ok() && *more) << more.status();
  EXPECT_EQ(batch.size, CountRows(*train_blocks_));
  for (int i = 0; i < 3; ++i) {
    more = (*reader)->Next(&batch);
    ASSERT_TRUE(more.ok()) << more.status();
    EXPECT_FALSE(*more);
    EXPECT_EQ(batch.size, 0);
  }
}

TEST_F(BatchReaderTest, SameSeedGivesIdenticalBatchSequences) {
  const FeatureLayout layout = Layout(TASK_CTR);
  ReadResult a = ReadAll(fs_, *train_files_, layout, Options(64, 700, 42));
  ReadResult b = ReadAll(fs_, *train_files_, layout, Options(64, 700, 42));
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status << b.status;
  ASSERT_EQ(a.batches.size(), b.batches.size());
  for (size_t i = 0; i < a.batches.size(); ++i) EXPECT_TRUE(a.batches[i] == b.batches[i]) << "batch " << i;
}

TEST_F(BatchReaderTest, DecodeThreadsDoNotChangeTheBatches) {
  const FeatureLayout layout = Layout(TASK_CVR);
  for (int shuffle : {0, 700}) {
    SCOPED_TRACE(shuffle);
    BatchReaderOptions options = Options(64, shuffle, 42);
    options.epochs = 2;
    ReadResult one = ReadAll(fs_, *train_files_, layout, options);
    options.decode_threads = 4;
    ReadResult four = ReadAll(fs_, *train_files_, layout, options);
    ASSERT_TRUE(one.status.ok() && four.status.ok()) << one.status << four.status;
    ASSERT_EQ(one.batches.size(), four.batches.size());
    for (size_t i = 0; i < one.batches.size(); ++i) EXPECT_TRUE(one.batches[i] == four.batches[i]) << "batch " << i;
    EXPECT_EQ(one.samples, four.samples);
    EXPECT_EQ(one.filtered, four.filtered);
  }
}

TEST_F(BatchReaderTest, DifferentSeedsChangeTheOrderButNotTheSamples) {
  const FeatureLayout layout = Layout(TASK_CTR);
  ReadResult a = ReadAll(fs_, *train_files_, layout, Options(64, 700, 42));
  ReadResult b = ReadAll(fs_, *train_files_, layout, Options(64, 700, 43));
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status << b.status;
  EXPECT_FALSE(a.all == b.all);
  EXPECT_TRUE(Sorted(a.all) == Sorted(b.all));
  // Shuffled at all: not the file order.
  EXPECT_FALSE(a.all == ExpectedSamples(*train_blocks_, TASK_CTR, kMaxSeqLen));
}

TEST_F(BatchReaderTest, ZeroShuffleBufferKeepsFileOrderExactly) {
  const FeatureLayout layout = Layout(TASK_CVR);
  ReadResult r = ReadAll(fs_, *train_files_, layout, Options(33, 0, 42));
  ASSERT_TRUE(r.status.ok()) << r.status;
  const std::vector<Sample> want = ExpectedSamples(*train_blocks_, TASK_CVR, kMaxSeqLen);
  ASSERT_EQ(r.all.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(r.all[i] == want[i]) << "sample " << i << ": user " << r.all[i].user << " vs " << want[i].user;
  }
}

TEST_F(BatchReaderTest, TwoEpochsDeliverEverySampleTwice) {
  const FeatureLayout layout = Layout(TASK_CVR);
  BatchReaderOptions options = Options(50, 400, 8);
  options.epochs = 2;
  ReadResult r = ReadAll(fs_, *train_files_, layout, options);
  ASSERT_TRUE(r.status.ok()) << r.status;
  std::vector<Sample> once = ExpectedSamples(*train_blocks_, TASK_CVR, kMaxSeqLen);
  std::vector<Sample> twice = once;
  twice.insert(twice.end(), once.begin(), once.end());
  EXPECT_EQ(r.samples, static_cast<int64_t>(twice.size()));
  EXPECT_TRUE(Sorted(r.all) == Sorted(twice));

  // In file order the second epoch follows the first.
  options.shuffle_buffer = 0;
  ReadResult ordered = ReadAll(fs_, *train_files_, layout, options);
  ASSERT_TRUE(ordered.status.ok()) << ordered.status;
  EXPECT_TRUE(ordered.all == twice);
}

TEST_F(BatchReaderTest, KeysAreFeatureKeysOfTheRowAndSequencesAreCapped) {
  // Spelled out on the first rows in file order (the multiset tests above cover all rows).
  const FeatureLayout layout = Layout(TASK_CTR);
  absl::StatusOr<std::unique_ptr<BatchReader>> reader =
      BatchReader::Open(fs_, *train_files_, layout, Options(200, 0, 1));
  ASSERT_TRUE(reader.ok()) << reader.status();
  Batch batch;
  absl::StatusOr<bool> more = (*reader)->Next(&batch);
  ASSERT_TRUE(more.ok() && *more) << more.status();
  const data::RowBlock& block = train_blocks_->front();
  ASSERT_GE(block.num_rows(), 200u);
  const int slots = layout.num_slots();
  size_t offsets[2] = {0, 0};
  int capped = 0;
  for (int r = 0; r < 200; ++r) {
    EXPECT_EQ(batch.user_ids[r], block.Int(block.FieldIndex("user_id"), r));
    EXPECT_EQ(batch.labels[r], static_cast<float>(block.Int(block.FieldIndex("click"), r)));
    for (int s = 0; s < slots; ++s) {
      const int64_t value = block.Int(block.FieldIndex(kCategorical[s]), r);
      EXPECT_EQ(batch.cat_keys[r * slots + s], FeatureKey(s, value)) << "row " << r << " " << kCategorical[s];
      EXPECT_EQ(SlotOf(batch.cat_keys[r * slots + s]), static_cast<uint32_t>(s));
    }
    EXPECT_FLOAT_EQ(batch.dense[r], std::log1p(std::max(0.0f, block.Float(block.FieldIndex("item_price"), r))));
    const char* seq_fields[2] = {"hist_item", "hist_cate"};
    const uint32_t target_slots[2] = {1, 5};  // item_id, item_category
    for (int q = 0; q < 2; ++q) {
      absl::Span<const int64_t> list = block.IntList(block.FieldIndex(seq_fields[q]), r);
      const size_t want_len = std::min<size_t>(list.size(), kMaxSeqLen);
      ASSERT_EQ(batch.seq_lengths[q][r], want_len) << "row " << r << " " << seq_fields[q];
      capped += list.size() > want_len;
      for (size_t k = 0; k < want_len; ++k) {
        EXPECT_EQ(batch.seq_keys[q][offsets[q] + k], FeatureKey(target_slots[q], list[k]));
      }
      offsets[q] += want_len;
    }
  }
  EXPECT_GT(capped, 0);  // some rows had longer lists than max_seq_len
}

TEST_F(BatchReaderTest, OpenRejectsBadOptionsAndNoFiles) {
  const FeatureLayout layout = Layout(TASK_CTR);
  for (int which = 0; which < 5; ++which) {
    BatchReaderOptions o;
    if (which == 0) o.batch_size = 0;
    if (which == 1) o.epochs = 0;
    if (which == 2) o.prefetch_blocks = 0;
    if (which == 3) o.shuffle_buffer = -1;
    if (which == 4) o.decode_threads = 0;
    absl::StatusOr<std::unique_ptr<BatchReader>> reader = BatchReader::Open(fs_, *train_files_, layout, o);
    ASSERT_FALSE(reader.ok()) << which;
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument) << which;
  }
  absl::StatusOr<std::unique_ptr<BatchReader>> reader = BatchReader::Open(fs_, {}, layout, {});
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BatchReaderTest, MissingFileFailsNext) {
  const FeatureLayout layout = Layout(TASK_CTR);
  std::vector<std::string> files = *train_files_;
  files.push_back("/ds/train/no-such-file.shard");
  ReadResult r = ReadAll(fs_, files, layout, Options(64, 0, 1));
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound) << r.status;
}

TEST_F(BatchReaderTest, DestroyingAReaderMidStreamReturns) {
  // The producer is blocked on a full prefetch queue; the destructor must stop it (a hang here
  // is caught by the test timeout).
  const FeatureLayout layout = Layout(TASK_CTR);
  BatchReaderOptions options = Options(8, 0, 1);
  options.prefetch_blocks = 1;
  options.epochs = 5;
  options.decode_threads = 3;  // with decoding threads to stop as well
  absl::StatusOr<std::unique_ptr<BatchReader>> reader = BatchReader::Open(fs_, *train_files_, layout, options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  Batch batch;
  absl::StatusOr<bool> more = (*reader)->Next(&batch);
  ASSERT_TRUE(more.ok() && *more) << more.status();
  reader->reset();
  SUCCEED();
}

// ---- Corrupt input ----

uint32_t ReadU32(const std::string& bytes, size_t offset) {
  uint32_t v;
  std::memcpy(&v, bytes.data() + offset, 4);  // the format is little-endian, as is this host
  return v;
}

TEST(BatchReaderCorruptionTest, CorruptBlockIsDataLossByDefaultAndSkippedWithABudget) {
  MemFileSystem fs;
  Generate(&fs, "/ds", 400, /*seed=*/4, /*users_per_chunk=*/100);
  const std::vector<std::string> files = SplitFiles(&fs, "/ds", "train");
  ASSERT_EQ(files.size(), 1u);
  const std::vector<data::RowBlock> blocks = ReadBlocks(&fs, files);
  ASSERT_GE(blocks.size(), 3u);
  const int64_t total = CountRows(blocks);

  // Flip a payload byte of block 1 (a middle block). Layout (docs/shard-format.md): "CHOIRSHD",
  // u32 version, u32 header_len, header, u32 crc; then blocks of a 24-byte header (magic, rows,
  // raw_len, stored_len, payload crc, header crc) and stored_len payload bytes.
  absl::StatusOr<std::string> bytes = fs.GetContents(files[0]);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::string contents = *bytes;
  const size_t block0 = 20 + ReadU32(contents, 12);
  ASSERT_EQ(contents.substr(block0, 4), "BLK1");
  const size_t block1 = block0 + 24 + ReadU32(contents, block0 + 12);
  ASSERT_EQ(contents.substr(block1, 4), "BLK1");
  const uint32_t block1_rows = ReadU32(contents, block1 + 4);
  ASSERT_EQ(block1_rows, blocks[1].num_rows());
  contents[block1 + 24 + ReadU32(contents, block1 + 12) / 2] ^= 0x5A;
  ASSERT_TRUE(fs.SetContents(files[0], contents).ok());

  ModelConfig model;
  absl::StatusOr<FeatureLayout> layout = BuildFeatureLayout(blocks[0].schema(), model, TASK_CTR);
  ASSERT_TRUE(layout.ok()) << layout.status();
  BatchReaderOptions options;
  options.batch_size = 64;
  options.shuffle_buffer = 0;
  ReadResult strict = ReadAll(&fs, files, *layout, options);
  ASSERT_FALSE(strict.status.ok());
  EXPECT_EQ(strict.status.code(), absl::StatusCode::kDataLoss) << strict.status;
  EXPECT_NE(strict.status.message().find(files[0]), std::string::npos) << strict.status;
  EXPECT_LT(static_cast<int64_t>(strict.all.size()), total);

  options.budget.max_errors = 1'000'000;
  std::vector<data::RowBlock> kept = blocks;
  kept.erase(kept.begin() + 1);
  for (int threads : {1, 3}) {
    SCOPED_TRACE(threads);
    options.decode_threads = threads;
    ReadResult lenient = ReadAll(&fs, files, *layout, options);
    ASSERT_TRUE(lenient.status.ok()) << lenient.status;
    EXPECT_EQ(static_cast<int64_t>(lenient.all.size()), total - block1_rows);
    // Exactly block 1's samples are missing, in file order.
    EXPECT_TRUE(lenient.all == ExpectedSamples(kept, TASK_CTR, layout->max_seq_len));
  }
}

}  // namespace
}  // namespace choir::worker
