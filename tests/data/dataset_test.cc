#include "data/dataset.h"

#include <string>
#include <vector>

#include "core/fs.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

Schema TestSchema() {
  Schema schema;
  *schema.add_fields() = MakeField("user_id", INT64, USER_ID);
  *schema.add_fields() = MakeField("history", INT64_LIST, SEQUENCE);
  return schema;
}

// `rows` rows with user ids first, first+1, ... and histories [id] repeated id % 3 times.
RowBlock Block(int64_t first, int rows) {
  RowBlock block(TestSchema());
  for (int64_t id = first; id < first + rows; ++id) {
    block.AppendInt(0, id);
    for (int i = 0; i < id % 3; ++i) block.AppendListInt(1, id);
    block.FinishRow();
  }
  return block;
}

DatasetManifest SampleManifest() {
  DatasetManifest m;
  m.set_source("synthetic");
  m.set_provenance("choir data gen --users 100 --seed 1");
  m.set_split_time(1700000000);
  SplitInfo* train = m.add_splits();
  train->set_name("train");
  train->add_files("train/part-00000.shard");
  train->add_files("train/part-00001.shard");
  train->set_rows(1234);
  SplitInfo* test = m.add_splits();
  test->set_name("test");
  test->add_files("test/part-00000.shard");
  test->set_rows(56);
  (*m.mutable_counters())["rows_rejected"] = 3;
  return m;
}

TEST(ManifestTest, RoundTripsAndSetsTheFormatVersion) {
  MemFileSystem fs;
  ASSERT_TRUE(WriteManifest(&fs, "/ds", SampleManifest()).ok());
  EXPECT_TRUE(fs.Exists("/ds/dataset.pbtxt"));
  EXPECT_FALSE(fs.Exists("/ds/dataset.pbtxt.tmp"));
  absl::StatusOr<DatasetManifest> got = ReadManifest(&fs, "/ds");
  ASSERT_TRUE(got.ok()) << got.status();
  DatasetManifest want = SampleManifest();
  want.set_format_version(kDatasetFormatVersion);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*got, want)) << got->DebugString();
}

TEST(ManifestTest, FolderWithoutManifestIsNotFoundNamingTheFolder) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/half/train").ok());
  absl::StatusOr<DatasetManifest> got = ReadManifest(&fs, "/half");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(got.status().message(),
            "/half: no dataset.pbtxt (not a dataset folder, or an incomplete one)");
}

TEST(ManifestTest, OtherFormatVersionIsRefused) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/ds").ok());
  ASSERT_TRUE(
      fs.WriteStringToFileAtomic("/ds/dataset.pbtxt", "format_version: 2\nsource: \"synthetic\"\n")
          .ok());
  absl::StatusOr<DatasetManifest> got = ReadManifest(&fs, "/ds");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(got.status().message(), HasSubstr("/ds/dataset.pbtxt"));
  EXPECT_THAT(got.status().message(), HasSubstr("version 2"));
}

TEST(ManifestTest, UnparsableManifestNamesFileAndLine) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.CreateDirs("/ds").ok());
  ASSERT_TRUE(
      fs.WriteStringToFileAtomic("/ds/dataset.pbtxt", "format_version: 1\nsplitz {}\n").ok());
  absl::StatusOr<DatasetManifest> got = ReadManifest(&fs, "/ds");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("/ds/dataset.pbtxt:2:"));
  EXPECT_THAT(got.status().message(), HasSubstr("splitz"));
}

TEST(ManifestTest, FindSplitAndSplitPaths) {
  const DatasetManifest m = SampleManifest();
  absl::StatusOr<SplitInfo> train = FindSplit(m, "train");
  ASSERT_TRUE(train.ok());
  EXPECT_EQ(train->rows(), 1234);
  EXPECT_THAT(SplitPaths("/ds", *train),
              ElementsAre("/ds/train/part-00000.shard", "/ds/train/part-00001.shard"));
  absl::StatusOr<SplitInfo> missing = FindSplit(m, "valid");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("valid"));
  EXPECT_THAT(missing.status().message(), HasSubstr("train, test"));
}

// ---------------------------------------------------------------------------------------
// PrepareDatasetDir.

const std::vector<std::string> kProducerEntries = {"train", "val", "test"};

// Names in `dir`, sorted.
std::vector<std::string> Entries(FileSystem* fs, const std::string& dir) {
  absl::StatusOr<std::vector<std::string>> entries = fs->ListDir(dir);
  EXPECT_TRUE(entries.ok()) << entries.status();
  return entries.ok() ? *entries : std::vector<std::string>{};
}

TEST(PrepareDatasetDirTest, CreatesAMissingFolder) {
  MemFileSystem fs;
  ASSERT_TRUE(PrepareDatasetDir(&fs, "/a/b/ds", kProducerEntries).ok());
  EXPECT_TRUE(fs.IsDirectory("/a/b/ds"));
  EXPECT_TRUE(Entries(&fs, "/a/b/ds").empty());
}

TEST(PrepareDatasetDirTest, ReplacesADatasetAndLeavesUnrelatedFiles) {
  MemFileSystem fs;
  ASSERT_TRUE(WriteManifest(&fs, "/ds", SampleManifest()).ok());  // splits train and test
  for (const char* file : {"/ds/train/part-00000.shard", "/ds/train/part-00001.shard",
                           "/ds/test/part-00000.shard", "/ds/rejects.tsv", "/ds/truth/users.tsv",
                           "/ds/taxonomy.pbtxt", "/ds/notes.txt", "/ds/mine/data.csv"}) {
    ASSERT_TRUE(fs.SetContents(file, "x").ok()) << file;
  }
  ASSERT_TRUE(PrepareDatasetDir(&fs, "/ds", kProducerEntries).ok());
  EXPECT_THAT(Entries(&fs, "/ds"), ElementsAre("mine", "notes.txt"));
  EXPECT_TRUE(fs.Exists("/ds/mine/data.csv"));
}

TEST(PrepareDatasetDirTest, RefusesAFolderWithoutManifestHoldingAForeignFile) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/ds/train/part-00000.shard", "x").ok());
  ASSERT_TRUE(fs.SetContents("/ds/thesis.tex", "mine").ok());
  absl::Status status = PrepareDatasetDir(&fs, "/ds", kProducerEntries);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("/ds is not empty"));
  EXPECT_THAT(status.message(), HasSubstr("'thesis.tex'"));
  // Nothing was deleted.
  EXPECT_THAT(Entries(&fs, "/ds"), ElementsAre("thesis.tex", "train"));
  EXPECT_TRUE(fs.Exists("/ds/train/part-00000.shard"));
}

TEST(PrepareDatasetDirTest, ClearsWhatAnInterruptedRunLeft) {
  MemFileSystem fs;
  for (const char* file :
       {"/ds/train/part-00000.shard.tmp", "/ds/val/part-00000.shard", "/ds/rejects.tsv",
        "/ds/truth/users.tsv", "/ds/taxonomy.pbtxt", "/ds/dataset.pbtxt.tmp"}) {
    ASSERT_TRUE(fs.SetContents(file, "x").ok()) << file;
  }
  ASSERT_TRUE(PrepareDatasetDir(&fs, "/ds", kProducerEntries).ok());
  EXPECT_TRUE(fs.IsDirectory("/ds"));
  EXPECT_TRUE(Entries(&fs, "/ds").empty());
}

TEST(PrepareDatasetDirTest, RefusesAFileAndAnUnreadableManifestWithoutDeleting) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/file", "x").ok());
  EXPECT_EQ(PrepareDatasetDir(&fs, "/file", kProducerEntries).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fs.Exists("/file"));

  ASSERT_TRUE(fs.SetContents("/ds/dataset.pbtxt", "splitz {}\n").ok());
  ASSERT_TRUE(fs.SetContents("/ds/train/part-00000.shard", "x").ok());
  absl::Status status = PrepareDatasetDir(&fs, "/ds", kProducerEntries);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("/ds/dataset.pbtxt:1:"));
  EXPECT_TRUE(fs.Exists("/ds/dataset.pbtxt"));
  EXPECT_TRUE(fs.Exists("/ds/train/part-00000.shard"));
}

TEST(SplitWriterTest, RollsToANewFileEveryRowsPerFile) {
  MemFileSystem fs;
  SplitWriter writer(&fs, "/ds", "train", TestSchema(), {}, /*rows_per_file=*/100);
  std::vector<RowBlock> blocks;
  for (int i = 0; i < 7; ++i) blocks.push_back(Block(40 * i, 40));
  for (const RowBlock& b : blocks) ASSERT_TRUE(writer.Write(b).ok());
  absl::StatusOr<SplitInfo> info = writer.Finish();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name(), "train");
  EXPECT_EQ(info->rows(), 280);
  // 40+40+40 >= 100 closes a file, twice; the last 40 rows make a third file.
  EXPECT_THAT(info->files(), ElementsAre("train/part-00000.shard", "train/part-00001.shard",
                                         "train/part-00002.shard"));
  const std::vector<std::string> paths = SplitPaths("/ds", *info);
  const uint64_t want_rows[] = {120, 120, 40};
  for (size_t f = 0; f < paths.size(); ++f) {
    auto reader = ShardReader::Open(&fs, paths[f]);
    ASSERT_TRUE(reader.ok()) << reader.status();
    EXPECT_EQ((*reader)->num_rows(), want_rows[f]);
  }
  EXPECT_FALSE(fs.Exists("/ds/train/part-00003.shard"));

  ErrorCounter errors;
  std::vector<RowBlock> got;
  ASSERT_TRUE(ForEachBlock(&fs, paths, &errors, [&got](const RowBlock& b) {
                got.push_back(b);
                return absl::OkStatus();
              }).ok());
  ASSERT_EQ(got.size(), blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) EXPECT_TRUE(got[i] == blocks[i]);
  EXPECT_EQ(errors.seen(), 280);
}

TEST(SplitWriterTest, EmptySplitGetsOneFileWithTheSchema) {
  MemFileSystem fs;
  SplitWriter writer(&fs, "/ds", "test", TestSchema());
  ASSERT_TRUE(writer.Write(RowBlock(TestSchema())).ok());
  absl::StatusOr<SplitInfo> info = writer.Finish();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->rows(), 0);
  ASSERT_EQ(info->files_size(), 1);
  auto reader = ShardReader::Open(&fs, JoinPath("/ds", info->files(0)));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->num_blocks(), 0u);
  EXPECT_EQ((*reader)->schema().fields_size(), 2);
  EXPECT_FALSE(writer.Finish().ok());
  EXPECT_FALSE(writer.Write(Block(0, 1)).ok());
}

TEST(SplitWriterTest, DatasetFolderRoundTripOnPosix) {
  FileSystem* fs = PosixFileSystem();
  const std::string dir = JoinPath(::testing::TempDir(), "dataset_test_posix_roundtrip");
  ASSERT_TRUE(fs->DeleteRecursively(dir).ok());
  DatasetManifest manifest;
  manifest.set_source("csv");
  for (const char* split : {"train", "test"}) {
    SplitWriter writer(fs, dir, split, TestSchema(), {}, /*rows_per_file=*/10);
    ASSERT_TRUE(writer.Write(Block(0, 15)).ok());
    ASSERT_TRUE(writer.Write(Block(15, 3)).ok());
    absl::StatusOr<SplitInfo> info = writer.Finish();
    ASSERT_TRUE(info.ok()) << info.status();
    *manifest.add_splits() = *info;
  }
  ASSERT_TRUE(WriteManifest(fs, dir, manifest).ok());

  absl::StatusOr<DatasetManifest> got = ReadManifest(fs, dir);
  ASSERT_TRUE(got.ok()) << got.status();
  absl::StatusOr<SplitInfo> test = FindSplit(*got, "test");
  ASSERT_TRUE(test.ok());
  EXPECT_EQ(test->rows(), 18);
  EXPECT_THAT(test->files(), ElementsAre("test/part-00000.shard", "test/part-00001.shard"));
  ErrorCounter errors;
  std::vector<int64_t> ids;
  ASSERT_TRUE(ForEachBlock(fs, SplitPaths(dir, *test), &errors, [&ids](const RowBlock& b) {
                for (size_t r = 0; r < b.num_rows(); ++r) ids.push_back(b.Int(0, r));
                return absl::OkStatus();
              }).ok());
  ASSERT_EQ(ids.size(), 18u);
  for (int64_t i = 0; i < 18; ++i) EXPECT_EQ(ids[i], i);
  fs->DeleteRecursively(dir).IgnoreError();
}

}  // namespace
}  // namespace choir::data
