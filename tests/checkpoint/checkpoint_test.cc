// checkpoint/: the directory protocol (commit point, checks, latest, pruning) and the file
// encodings, on the in-memory file system.
#include "checkpoint/checkpoint.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "checkpoint/files.h"
#include "core/crc32c.h"
#include "core/fs.h"
#include "gtest/gtest.h"

namespace choir::checkpoint {
namespace {

absl::Status Commit(FileSystem* fs, const std::string& root, int64_t step) {
  absl::StatusOr<Writer> w = Writer::Begin(fs, root, step);
  if (!w.ok()) return w.status();
  if (absl::Status s = w->AddFile("a.bin", "payload " + std::to_string(step)); !s.ok()) return s;
  return w->Commit({{"note", step}});
}

TEST(CheckpointTest, ACommittedCheckpointReadsBackWithItsMeta) {
  MemFileSystem fs;
  ASSERT_TRUE(Commit(&fs, "/r", 12).ok());
  absl::StatusOr<Reader> r = Reader::Open(&fs, CheckpointDir("/r", 12));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->step(), 12);
  EXPECT_EQ(r->meta()["note"], 12);
  EXPECT_EQ(r->FileNames(), std::vector<std::string>{"a.bin"});
  EXPECT_EQ(*r->ReadFile("a.bin"), "payload 12");
  EXPECT_TRUE(r->Verify().ok());
  EXPECT_EQ(r->ReadFile("b.bin").status().code(), absl::StatusCode::kNotFound);
  // The same step cannot be committed twice.
  EXPECT_EQ(Writer::Begin(&fs, "/r", 12).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CheckpointTest, TypedMetaFieldsNameTheManifestAndFieldWhenMissingOrOfAnotherType) {
  MemFileSystem fs;
  absl::StatusOr<Writer> w = Writer::Begin(&fs, "/r", 4);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(w->Commit({{"job", "name: 'x'"}, {"count", 7}, {"crc", 5}, {"negative", -1}, {"real", 1.5}}).ok());
  absl::StatusOr<Reader> r = Reader::Open(&fs, CheckpointDir("/r", 4));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r->Meta<std::string>("job"), "name: 'x'");
  EXPECT_EQ(*r->Meta<int64_t>("count"), 7);
  EXPECT_EQ(*r->Meta<size_t>("absent", 3), 3u);
  absl::Status s = r->Meta<std::string>("count").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "step-000000000004/MANIFEST.json")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "\"count\" holds a JSON number, want a string")) << s;
  s = r->Meta<uint32_t>("job", 0).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "\"job\" holds a JSON string, want an integer")) << s;
  // Integers must be integers in range: nlohmann alone would turn -1 into SIZE_MAX.
  s = r->Meta<size_t>("negative").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "\"negative\" is -1, out of range")) << s;
  EXPECT_EQ(*r->Meta<int32_t>("negative"), -1);
  EXPECT_TRUE(absl::StrContains(r->Meta<int64_t>("real").status().message(), "holds a JSON number, want an integer"));
  s = r->Meta<int64_t>("absent").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "has no \"absent\"")) << s;
}

TEST(CheckpointTest, LatestSkipsUnfinishedAndPruneKeepsTheNewest) {
  MemFileSystem fs;
  for (int64_t step : {5, 10, 15, 20}) ASSERT_TRUE(Commit(&fs, "/r", step).ok());
  ASSERT_TRUE(fs.SetContents(CheckpointDir("/r", 25) + "/a.bin", "half").ok());  // no manifest
  ASSERT_TRUE(fs.SetContents(CheckpointDir("/r", 7) + "/a.bin", "old, unfinished").ok());
  EXPECT_EQ(*FindLatest(&fs, "/r"), CheckpointDir("/r", 20));
  EXPECT_EQ(*Resolve(&fs, "latest", "/r"), CheckpointDir("/r", 20));
  EXPECT_EQ(*Resolve(&fs, "/r", "/elsewhere"), CheckpointDir("/r", 20));
  EXPECT_EQ(*Resolve(&fs, CheckpointDir("/r", 10), "/r"), CheckpointDir("/r", 10));
  EXPECT_EQ(Resolve(&fs, "/nope", "/r").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(Prune(&fs, "/r", 2).ok());
  absl::StatusOr<std::vector<std::string>> left = fs.ListDir("/r");
  ASSERT_TRUE(left.ok());
  // Kept: the two newest commits and the unfinished step 25 (newer: maybe being written).
  EXPECT_EQ(*left, (std::vector<std::string>{"step-000000000015", "step-000000000020",
                                             "step-000000000025"}));
  EXPECT_EQ(*Clear(&fs, "/r"), 3);
  EXPECT_EQ(FindLatest(&fs, "/r").status().code(), absl::StatusCode::kNotFound);
}

// A manifest that is there but unreadable is damage, not a write cut short: "latest" does not
// pass over it to an older checkpoint (a resumed run would then meet it at its step).
TEST(CheckpointTest, ADamagedNewestCheckpointIsNotPassedOverByLatest) {
  MemFileSystem fs;
  for (int64_t step : {5, 10, 15}) ASSERT_TRUE(Commit(&fs, "/r", step).ok());
  const std::string newest = CheckpointDir("/r", 15) + "/" + kManifestName;
  std::string manifest = *fs.GetContents(newest);
  manifest[manifest.size() / 2] ^= 0x01;
  ASSERT_TRUE(fs.SetContents(newest, manifest).ok());
  for (const absl::StatusOr<std::string>& latest : {FindLatest(&fs, "/r"), Resolve(&fs, "latest", "/r")}) {
    EXPECT_EQ(latest.status().code(), absl::StatusCode::kDataLoss) << latest.status();
    EXPECT_TRUE(absl::StrContains(latest.status().message(), CheckpointDir("/r", 15) + ", is damaged"))
        << latest.status();
    EXPECT_TRUE(absl::StrContains(latest.status().message(), "CRC32C")) << latest.status();
    EXPECT_TRUE(absl::StrContains(latest.status().message(), "the older " + CheckpointDir("/r", 10)))
        << latest.status();
  }
  // An explicit older one still resolves; the damaged one counts among the later manifests.
  EXPECT_EQ(*Resolve(&fs, CheckpointDir("/r", 10), "/r"), CheckpointDir("/r", 10));
  EXPECT_EQ(*ManifestsAfter(&fs, "/r", 5), (std::vector<std::string>{CheckpointDir("/r", 10), CheckpointDir("/r", 15)}));
  EXPECT_TRUE(ManifestsAfter(&fs, "/r", 15)->empty());
  // A committed manifest copied under another step's name is damaged too.
  ASSERT_TRUE(fs.SetContents(CheckpointDir("/r", 15) + "/" + kManifestName,
                             *fs.GetContents(CheckpointDir("/r", 10) + "/" + kManifestName))
                  .ok());
  absl::Status s = FindLatest(&fs, "/r").status();
  EXPECT_TRUE(absl::StrContains(s.message(), "is the manifest of step 10, not 15")) << s;
  // Once a newer commit exists, Prune removes the damaged directory like an unfinished one.
  ASSERT_TRUE(Commit(&fs, "/r", 20).ok());
  EXPECT_EQ(*FindLatest(&fs, "/r"), CheckpointDir("/r", 20));
  ASSERT_TRUE(Prune(&fs, "/r", 1).ok());
  EXPECT_EQ(*fs.ListDir("/r"), std::vector<std::string>{"step-000000000020"});
}

TEST(CheckpointTest, ADamagedManifestIsDataLossAndAnotherVersionIsRefused) {
  MemFileSystem fs;
  ASSERT_TRUE(Commit(&fs, "/r", 3).ok());
  const std::string dir = CheckpointDir("/r", 3);
  const std::string path = dir + "/" + kManifestName;
  const std::string manifest = *fs.GetContents(path);
  for (size_t at : {size_t{0}, manifest.size() / 2, manifest.size() - 3}) {
    std::string flipped = manifest;
    flipped[at] ^= 0x01;
    ASSERT_TRUE(fs.SetContents(path, flipped).ok());
    EXPECT_EQ(Reader::Open(&fs, dir).status().code(), absl::StatusCode::kDataLoss) << at;
  }
  ASSERT_TRUE(fs.SetContents(path, manifest.substr(0, manifest.size() - 5)).ok());
  EXPECT_EQ(Reader::Open(&fs, dir).status().code(), absl::StatusCode::kDataLoss);
  // Another format version with a valid checksum: refused as such, not as damage.
  std::string body = manifest.substr(0, manifest.rfind("crc32c "));
  ASSERT_TRUE(absl::StrContains(body, "\"version\": 1"));
  body = absl::StrReplaceAll(body, {{"\"version\": 1", "\"version\": 2"}});
  ASSERT_TRUE(fs.SetContents(path, absl::StrFormat("%scrc32c %08x\n", body, crc32c::Value(body))).ok());
  absl::Status s = Reader::Open(&fs, dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "version 2")) << s;
}

TEST(FilesTest, SparseRowsAndDenseFloatsRoundTrip) {
  SparseRowsWriter writer;
  writer.Add(7, std::vector<float>{1, 2, 3}, 4);
  writer.Add(~uint64_t{0}, std::vector<float>{}, 0);
  writer.Add(9, std::vector<float>{-0.5f}, 1);
  const std::string bytes = writer.Finish();
  std::vector<uint64_t> keys;
  std::vector<float> values;
  std::vector<uint32_t> pushes;
  ASSERT_TRUE(ReadSparseRows(bytes, "f", [&](uint64_t k, absl::Span<const float> row, uint32_t p) {
                keys.push_back(k);
                values.insert(values.end(), row.begin(), row.end());
                pushes.push_back(p);
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(keys, (std::vector<uint64_t>{7, ~uint64_t{0}, 9}));
  EXPECT_EQ(values, (std::vector<float>{1, 2, 3, -0.5f}));
  EXPECT_EQ(pushes, (std::vector<uint32_t>{4, 0, 1}));

  const std::vector<std::vector<float>> dense = {{1.5f, 2.5f}, {}, {3}};
  absl::StatusOr<std::vector<std::vector<float>>> back =
      DecodeDenseFloats(EncodeDenseFloats(dense), "d");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, dense);
}

TEST(FilesTest, EveryTruncationAndTrailingGarbageIsDataLossNamingTheFile) {
  SparseRowsWriter writer;
  writer.Add(7, std::vector<float>{1, 2, 3}, 4);
  writer.Add(8, std::vector<float>{5, 6, 7}, 2);
  const std::string sparse = writer.Finish();
  const std::string dense = EncodeDenseFloats({{1, 2}, {3}});
  auto nothing = [](uint64_t, absl::Span<const float>, uint32_t) { return absl::OkStatus(); };
  for (size_t n = 0; n < sparse.size(); ++n) {
    absl::Status s = ReadSparseRows(sparse.substr(0, n), "rows.bin", nothing);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << n;
    EXPECT_TRUE(absl::StrContains(s.message(), "rows.bin")) << s;
  }
  for (size_t n = 0; n < dense.size(); ++n) {
    EXPECT_EQ(DecodeDenseFloats(dense.substr(0, n), "dense.bin").status().code(),
              absl::StatusCode::kDataLoss)
        << n;
  }
  EXPECT_EQ(ReadSparseRows(sparse + "x", "rows.bin", nothing).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeDenseFloats(dense + "x", "d").status().code(), absl::StatusCode::kDataLoss);
  std::string wrong_magic = sparse;
  wrong_magic[0] = 'X';
  EXPECT_EQ(ReadSparseRows(wrong_magic, "rows.bin", nothing).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace choir::checkpoint
