#include "data/shard.h"

#include <sys/resource.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/crc32c.h"
#include "core/fs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

using ::testing::HasSubstr;

Schema AllTypesSchema() {
  Schema schema;
  *schema.add_fields() = MakeField("user_id", INT64, USER_ID);
  *schema.add_fields() = MakeField("click", INT64, LABEL_CLICK);
  *schema.add_fields() = MakeField("price", FLOAT, FEATURE, "item price");
  *schema.add_fields() = MakeField("history", INT64_LIST, SEQUENCE);
  *schema.add_fields() = MakeField("dense", FLOAT_LIST);
  return schema;
}

// A block of `rows` random rows of `schema`: extreme and negative integers, special floats
// (NaN, infinities, -0), and lists that are often empty.
RowBlock RandomBlock(const Schema& schema, int rows, std::mt19937_64* rng) {
  std::uniform_int_distribution<int> list_len(0, 6);
  std::uniform_int_distribution<int> pick(0, 9);
  auto random_int = [&]() -> int64_t {
    switch (pick(*rng)) {
      case 0:
        return std::numeric_limits<int64_t>::min();
      case 1:
        return std::numeric_limits<int64_t>::max();
      case 2:
        return -1;
      default:
        return static_cast<int64_t>((*rng)());
    }
  };
  auto random_float = [&]() -> float {
    switch (pick(*rng)) {
      case 0:
        return std::numeric_limits<float>::quiet_NaN();
      case 1:
        return -std::numeric_limits<float>::infinity();
      case 2:
        return -0.0f;
      default:
        return std::uniform_real_distribution<float>(-1e6f, 1e6f)(*rng);
    }
  };
  RowBlock block(schema);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < static_cast<int>(block.num_columns()); ++c) {
      switch (block.column(c).type) {
        case INT64:
          block.AppendInt(c, random_int());
          break;
        case FLOAT:
          block.AppendFloat(c, random_float());
          break;
        case INT64_LIST: {
          const int n = pick(*rng) < 3 ? 0 : list_len(*rng);
          for (int i = 0; i < n; ++i) block.AppendListInt(c, random_int());
          break;
        }
        case FLOAT_LIST: {
          const int n = pick(*rng) < 3 ? 0 : list_len(*rng);
          for (int i = 0; i < n; ++i) block.AppendListFloat(c, random_float());
          break;
        }
        default:
          ADD_FAILURE() << "unexpected type";
      }
    }
    block.FinishRow();
  }
  return block;
}

std::vector<RowBlock> RandomBlocks(int n, uint64_t seed, int max_rows = 200) {
  std::mt19937_64 rng(seed);
  std::vector<RowBlock> blocks;
  for (int i = 0; i < n; ++i) {
    const int rows = std::uniform_int_distribution<int>(1, max_rows)(rng);
    blocks.push_back(RandomBlock(AllTypesSchema(), rows, &rng));
  }
  return blocks;
}

ShardWriterOptions Codec(Codec codec) {
  ShardWriterOptions options;
  options.codec = codec;
  return options;
}

absl::Status WriteShard(FileSystem* fs, const std::string& path,
                        const std::vector<RowBlock>& blocks,
                        const ShardWriterOptions& options = {}) {
  absl::StatusOr<std::unique_ptr<ShardWriter>> writer =
      ShardWriter::Open(fs, path, AllTypesSchema(), options);
  if (!writer.ok()) return writer.status();
  for (const RowBlock& b : blocks) {
    absl::Status s = (*writer)->Write(b);
    if (!s.ok()) return s;
  }
  return (*writer)->Close();
}

// Reads every block of `path`; fails the test on any error.
std::vector<RowBlock> ReadAll(FileSystem* fs, const std::string& path,
                              const ShardReaderOptions& options = {}) {
  std::vector<RowBlock> out;
  absl::StatusOr<std::unique_ptr<ShardReader>> reader = ShardReader::Open(fs, path, options);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  for (size_t i = 0; i < (*reader)->num_blocks(); ++i) {
    RowBlock b;
    absl::Status s = (*reader)->ReadBlock(i, &b);
    EXPECT_TRUE(s.ok()) << s;
    out.push_back(std::move(b));
  }
  return out;
}

uint32_t Le32(const std::string& bytes, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(bytes[at + i]);
  return v;
}
uint64_t Le64(const std::string& bytes, size_t at) {
  return Le32(bytes, at) | static_cast<uint64_t>(Le32(bytes, at + 4)) << 32;
}
void PutLe32(std::string* bytes, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*bytes)[at + i] = static_cast<char>(v >> (8 * i));
}
void AppendLe32(std::string* bytes, uint32_t v) {
  bytes->append(4, '\0');
  PutLe32(bytes, bytes->size() - 4, v);
}
void AppendLe64(std::string* bytes, uint64_t v) {
  AppendLe32(bytes, static_cast<uint32_t>(v));
  AppendLe32(bytes, static_cast<uint32_t>(v >> 32));
}

// Sets the u32 at `field` (4: rows, 8: raw_len, 12: stored_len) of the block header at `block`
// and recomputes the header's CRC, as a hostile (or buggy) writer would.
void PatchBlockHeader(std::string* bytes, size_t block, size_t field, uint32_t v) {
  PutLe32(bytes, block + field, v);
  PutLe32(bytes, block + 20, crc32c::Value(bytes->data() + block, 20));
}

// A complete footer (see docs/shard-format.md) with a correct CRC for whatever it claims.
std::string MakeFooter(const std::vector<uint64_t>& offsets, uint64_t rows) {
  std::string footer;
  for (uint64_t off : offsets) AppendLe64(&footer, off);
  AppendLe64(&footer, offsets.size());
  AppendLe64(&footer, rows);
  AppendLe32(&footer, crc32c::Value(footer));
  AppendLe32(&footer, static_cast<uint32_t>(footer.size() + 12));
  return footer + "CHOIREND";
}

// Block offsets read from the footer, following the documented layout.
std::vector<uint64_t> FooterOffsets(const std::string& bytes) {
  const uint32_t footer_len = Le32(bytes, bytes.size() - 12);
  const size_t start = bytes.size() - footer_len;
  const size_t n = (footer_len - 32) / 8;
  std::vector<uint64_t> offsets;
  for (size_t i = 0; i < n; ++i) offsets.push_back(Le64(bytes, start + 8 * i));
  EXPECT_EQ(Le64(bytes, start + 8 * n), n);
  return offsets;
}

// ---- Round trips, on both file systems and with both codecs.

enum class FsKind { kMem, kPosix };

class ShardRoundTripTest : public ::testing::TestWithParam<std::tuple<FsKind, data::Codec>> {
 protected:
  void SetUp() override {
    if (std::get<0>(GetParam()) == FsKind::kMem) {
      fs_ = &mem_;
      dir_ = "/data";
    } else {
      fs_ = PosixFileSystem();
      std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
      for (char& ch : name) {
        if (ch == '/') ch = '_';
      }
      dir_ = JoinPath(::testing::TempDir(), absl::StrCat("shard_test_", getpid(), "_", name));
    }
    ASSERT_TRUE(fs_->DeleteRecursively(dir_).ok());
    ASSERT_TRUE(fs_->CreateDirs(dir_).ok());
    path_ = JoinPath(dir_, "part.shard");
  }
  void TearDown() override { fs_->DeleteRecursively(dir_).IgnoreError(); }

  ShardWriterOptions options() const { return Codec(std::get<1>(GetParam())); }

  MemFileSystem mem_;
  FileSystem* fs_ = nullptr;
  std::string dir_, path_;
};

TEST_P(ShardRoundTripTest, ManyRandomBlocksReadBackExactly) {
  const std::vector<RowBlock> blocks = RandomBlocks(25, 42);
  ASSERT_TRUE(WriteShard(fs_, path_, blocks, options()).ok());
  EXPECT_FALSE(fs_->Exists(path_ + ".tmp"));

  auto reader = ShardReader::Open(fs_, path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->num_blocks(), blocks.size());
  uint64_t rows = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    rows += blocks[i].num_rows();
    auto block_rows = (*reader)->BlockRows(i);
    ASSERT_TRUE(block_rows.ok());
    EXPECT_EQ(*block_rows, blocks[i].num_rows());
  }
  EXPECT_EQ((*reader)->num_rows(), rows);
  EXPECT_EQ((*reader)->header().codec(), std::get<1>(GetParam()));
  EXPECT_EQ((*reader)->header().writer(), "choir");
  EXPECT_EQ((*reader)->schema().SerializeAsString(), AllTypesSchema().SerializeAsString());

  RowBlock got;  // reused across blocks, as a training reader does
  for (size_t i = 0; i < blocks.size(); ++i) {
    ASSERT_TRUE((*reader)->ReadBlock(i, &got).ok());
    EXPECT_TRUE(got == blocks[i]) << "block " << i;
  }
  EXPECT_EQ((*reader)->ReadBlock(blocks.size(), &got).code(), absl::StatusCode::kOutOfRange);
}

TEST_P(ShardRoundTripTest, BlocksOfOnlyEmptyListsRoundTrip) {
  RowBlock block(AllTypesSchema());
  for (int r = 0; r < 10; ++r) {
    block.AppendInt(0, r);
    block.AppendInt(1, 0);
    block.AppendFloat(2, 1.0f);
    block.FinishRow();
  }
  ASSERT_TRUE(WriteShard(fs_, path_, {block, block}, options()).ok());
  std::vector<RowBlock> got = ReadAll(fs_, path_);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[0] == block);
  EXPECT_TRUE(got[1] == block);
}

TEST_P(ShardRoundTripTest, SingleRowBlocksAndAFileWithoutBlocks) {
  const std::vector<RowBlock> blocks = RandomBlocks(50, 7, /*max_rows=*/1);
  ASSERT_TRUE(WriteShard(fs_, path_, blocks, options()).ok());
  std::vector<RowBlock> got = ReadAll(fs_, path_);
  ASSERT_EQ(got.size(), blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) EXPECT_TRUE(got[i] == blocks[i]);

  const std::string empty = JoinPath(dir_, "empty.shard");
  ASSERT_TRUE(WriteShard(fs_, empty, {}, options()).ok());
  auto reader = ShardReader::Open(fs_, empty);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->num_blocks(), 0u);
  EXPECT_EQ((*reader)->num_rows(), 0u);
}

TEST_P(ShardRoundTripTest, TwoThreadsReadingTheSameReaderGetIdenticalBlocks) {
  const std::vector<RowBlock> blocks = RandomBlocks(30, 99);
  ASSERT_TRUE(WriteShard(fs_, path_, blocks, options()).ok());
  auto reader = ShardReader::Open(fs_, path_);
  ASSERT_TRUE(reader.ok());
  const ShardReader& shared = **reader;
  std::vector<RowBlock> got[2];
  std::vector<absl::Status> errors[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      // Thread 1 reads backwards so the two overlap on different blocks.
      for (size_t k = 0; k < shared.num_blocks(); ++k) {
        const size_t i = t == 0 ? k : shared.num_blocks() - 1 - k;
        RowBlock b;
        absl::Status s = shared.ReadBlock(i, &b);
        if (!s.ok()) errors[t].push_back(s);
        got[t].push_back(std::move(b));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 2; ++t) {
    EXPECT_TRUE(errors[t].empty()) << errors[t][0];
    ASSERT_EQ(got[t].size(), blocks.size());
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    EXPECT_TRUE(got[0][i] == blocks[i]);
    EXPECT_TRUE(got[1][blocks.size() - 1 - i] == blocks[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(AllFileSystemsAndCodecs, ShardRoundTripTest,
                         ::testing::Combine(::testing::Values(FsKind::kMem, FsKind::kPosix),
                                            ::testing::Values(CODEC_NONE, CODEC_ZSTD)),
                         [](const auto& info) {
                           return absl::StrCat(
                               std::get<0>(info.param) == FsKind::kMem ? "Mem" : "Posix",
                               std::get<1>(info.param) == CODEC_NONE ? "None" : "Zstd");
                         });

TEST(ShardWriterTest, ZstdMakesRepetitiveDataSmaller) {
  RowBlock block(AllTypesSchema());
  for (int r = 0; r < 1000; ++r) {
    block.AppendInt(0, r % 10);
    block.AppendInt(1, 0);
    block.AppendFloat(2, 1.0f);
    for (int i = 0; i < 5; ++i) block.AppendListInt(3, i);
    block.FinishRow();
  }
  MemFileSystem fs;
  ASSERT_TRUE(WriteShard(&fs, "/none", {block}, Codec(CODEC_NONE)).ok());
  ASSERT_TRUE(WriteShard(&fs, "/zstd", {block}, Codec(CODEC_ZSTD)).ok());
  EXPECT_LT(*fs.FileSize("/zstd") * 5, *fs.FileSize("/none"));
  EXPECT_TRUE(ReadAll(&fs, "/zstd")[0] == block);
}

// ---- Writer contract.

TEST(ShardWriterTest, EmptyBlocksAreSkipped) {
  MemFileSystem fs;
  std::vector<RowBlock> blocks = RandomBlocks(2, 1);
  blocks.insert(blocks.begin() + 1, RowBlock(AllTypesSchema()));
  ASSERT_TRUE(WriteShard(&fs, "/f", blocks).ok());
  std::vector<RowBlock> got = ReadAll(&fs, "/f");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[0] == blocks[0]);
  EXPECT_TRUE(got[1] == blocks[2]);
}

TEST(ShardWriterTest, BlockWithAnotherSchemaIsRejected) {
  MemFileSystem fs;
  auto writer = ShardWriter::Open(&fs, "/f", AllTypesSchema());
  ASSERT_TRUE(writer.ok());
  Schema other = AllTypesSchema();
  other.mutable_fields(2)->set_name("cost");
  std::mt19937_64 rng(3);
  absl::Status s = (*writer)->Write(RandomBlock(other, 5, &rng));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("/f"));
  EXPECT_THAT(s.message(), HasSubstr("schema"));
  // The writer is still usable.
  EXPECT_TRUE((*writer)->Write(RandomBlock(AllTypesSchema(), 5, &rng)).ok());
  EXPECT_TRUE((*writer)->Close().ok());
  EXPECT_EQ(ReadAll(&fs, "/f").size(), 1u);
}

TEST(ShardWriterTest, InvalidSchemaIsRejectedAtOpen) {
  MemFileSystem fs;
  Schema bad = AllTypesSchema();
  *bad.add_fields() = MakeField("user_id", FLOAT);
  auto writer = ShardWriter::Open(&fs, "/f", bad);
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs.Exists("/f.tmp"));
}

TEST(ShardWriterTest, InconsistentBlockIsRejected) {
  MemFileSystem fs;
  auto writer = ShardWriter::Open(&fs, "/f", AllTypesSchema());
  ASSERT_TRUE(writer.ok());
  std::mt19937_64 rng(3);
  RowBlock block = RandomBlock(AllTypesSchema(), 5, &rng);
  block.column(0).ints.pop_back();
  EXPECT_FALSE((*writer)->Write(block).ok());
}

TEST(ShardWriterTest, FileAppearsOnlyAtCloseAndWriteAfterCloseFails) {
  MemFileSystem fs;
  auto writer = ShardWriter::Open(&fs, "/f", AllTypesSchema());
  ASSERT_TRUE(writer.ok());
  const std::vector<RowBlock> blocks = RandomBlocks(3, 5);
  for (const RowBlock& b : blocks) ASSERT_TRUE((*writer)->Write(b).ok());
  EXPECT_TRUE(fs.Exists("/f.tmp"));
  EXPECT_FALSE(fs.Exists("/f"));
  ASSERT_TRUE((*writer)->Close().ok());
  EXPECT_TRUE(fs.Exists("/f"));
  EXPECT_FALSE(fs.Exists("/f.tmp"));
  EXPECT_EQ((*writer)->bytes_written(), *fs.FileSize("/f"));
  EXPECT_EQ((*writer)->rows_written(),
            blocks[0].num_rows() + blocks[1].num_rows() + blocks[2].num_rows());
  EXPECT_EQ((*writer)->Write(blocks[0]).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*writer)->Close().ok());
  writer->reset();
  EXPECT_TRUE(fs.Exists("/f"));  // destroying a closed writer keeps the file
}

TEST(ShardWriterTest, DestructorWithoutCloseLeavesNothing) {
  MemFileSystem fs;
  {
    auto writer = ShardWriter::Open(&fs, "/f", AllTypesSchema());
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write(RandomBlocks(1, 5)[0]).ok());
    EXPECT_TRUE(fs.Exists("/f.tmp"));
  }
  EXPECT_FALSE(fs.Exists("/f.tmp"));
  EXPECT_FALSE(fs.Exists("/f"));
}

TEST(ShardWriterTest, WriteFailingMidFileLeavesNoFileAtTheFinalPath) {
  const std::vector<RowBlock> blocks = RandomBlocks(10, 11);
  // Fail at several points: inside the header, inside a block, at the footer.
  MemFileSystem probe;
  ASSERT_TRUE(WriteShard(&probe, "/f", blocks).ok());
  const int64_t full = static_cast<int64_t>(*probe.FileSize("/f"));
  for (int64_t limit : {int64_t{0}, int64_t{10}, full / 3, full - 20, full - 1}) {
    SCOPED_TRACE(limit);
    MemFileSystem mem;
    FaultInjectingFileSystem fs(&mem);
    fs.FailWritesAfterBytes(limit);
    absl::Status s = WriteShard(&fs, "/f", blocks);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("/f"));
    EXPECT_GE(fs.faults_injected(), 1);
    EXPECT_FALSE(mem.Exists("/f"));
    EXPECT_FALSE(mem.Exists("/f.tmp"));
  }
}

TEST(ShardWriterTest, FailedRenameLeavesNoFile) {
  MemFileSystem mem;
  FaultInjectingFileSystem fs(&mem);
  fs.FailNextRename();
  EXPECT_FALSE(WriteShard(&fs, "/f", RandomBlocks(2, 1)).ok());
  EXPECT_FALSE(mem.Exists("/f"));
  EXPECT_FALSE(mem.Exists("/f.tmp"));
}

TEST(ShardWriterTest, CloseSyncsTheDirectoryAfterTheRename) {
  MemFileSystem mem;
  ASSERT_TRUE(mem.CreateDirs("/d").ok());
  FaultInjectingFileSystem fs(&mem);
  const std::vector<RowBlock> blocks = RandomBlocks(2, 1);
  ASSERT_TRUE(WriteShard(&fs, "/d/f", blocks).ok());
  EXPECT_EQ(fs.faults_injected(), 0);

  // A failing directory sync is reported, naming the file; it comes after the rename, so the
  // file is complete at its path.
  fs.FailNextSyncDir();
  const absl::Status s = WriteShard(&fs, "/d/g", blocks);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("/d/g: syncing its directory"));
  EXPECT_THAT(s.message(), HasSubstr("injected directory sync failure: /d"));
  EXPECT_EQ(fs.faults_injected(), 1);
  EXPECT_FALSE(mem.Exists("/d/g.tmp"));
  EXPECT_EQ(ReadAll(&mem, "/d/g").size(), blocks.size());
}

// ---- Reader: refusing bad files with errors that name them.

class ShardCorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    blocks_ = RandomBlocks(4, 123, 40);
    ASSERT_TRUE(fs_.CreateDirs("/ds/train").ok());
    absl::Status s = WriteShard(&fs_, path_, blocks_);
    ASSERT_TRUE(s.ok()) << s;
    bytes_ = *fs_.GetContents(path_);
    offsets_ = FooterOffsets(bytes_);
    ASSERT_EQ(offsets_.size(), blocks_.size());
  }

  absl::Status OpenStatus(const std::string& contents) {
    EXPECT_TRUE(fs_.SetContents(path_, contents).ok());
    return ShardReader::Open(&fs_, path_).status();
  }

  MemFileSystem fs_;
  const std::string path_ = "/ds/train/part-00003.shard";
  std::vector<RowBlock> blocks_;
  std::string bytes_;
  std::vector<uint64_t> offsets_;
};

TEST_F(ShardCorruptionTest, FooterOffsetsFollowTheDocumentedLayout) {
  EXPECT_EQ(bytes_.substr(0, 8), "CHOIRSHD");
  EXPECT_EQ(Le32(bytes_, 8), kShardVersion);
  const uint32_t header_len = Le32(bytes_, 12);
  EXPECT_EQ(offsets_[0], 16u + header_len + 4);
  EXPECT_EQ(bytes_.substr(offsets_[0], 4), "BLK1");
  EXPECT_EQ(Le32(bytes_, offsets_[0] + 4), blocks_[0].num_rows());
  EXPECT_EQ(bytes_.substr(bytes_.size() - 8), "CHOIREND");
  EXPECT_EQ(Le32(bytes_, 16 + header_len), crc32c::Value(bytes_.data() + 8, 8 + header_len));
  for (size_t i = 0; i + 1 < offsets_.size(); ++i) {
    EXPECT_EQ(offsets_[i + 1], offsets_[i] + 24 + Le32(bytes_, offsets_[i] + 12));
  }
}

TEST_F(ShardCorruptionTest, NewerVersionIsRefusedNamingFileAndVersion) {
  std::string patched = bytes_;
  PutLe32(&patched, 8, 7);
  const uint32_t header_len = Le32(patched, 12);
  PutLe32(&patched, 16 + header_len, crc32c::Value(patched.data() + 8, 8 + header_len));
  absl::Status s = OpenStatus(patched);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            absl::StrCat(path_, ": shard version 7 is not supported (this build reads version 1)"));
}

TEST_F(ShardCorruptionTest, OtherFilesAreNotShards) {
  absl::Status s = OpenStatus("user_id,click\n1,0\n2,1\n");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), absl::StrCat(path_, ": not a Choir shard (bad magic at offset 0)"));
}

TEST_F(ShardCorruptionTest, TruncatedFilesAreRefusedNamingTheFile) {
  const uint32_t header_len = Le32(bytes_, 12);
  const size_t cuts[] = {0,
                         5,                    // inside the magic
                         10,                   // inside the version
                         16 + header_len / 2,  // inside the header proto
                         offsets_[1] + 3,      // inside a block header
                         offsets_[2] + 30,     // inside a block payload
                         bytes_.size() - 40,   // inside the footer's offsets
                         bytes_.size() - 10,   // inside footer_len
                         bytes_.size() - 1};   // inside the end magic
  for (size_t cut : cuts) {
    SCOPED_TRACE(cut);
    absl::Status s = OpenStatus(bytes_.substr(0, cut));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(s.message(), absl::StrCat(path_, ": truncated: no footer (file is ", cut, " bytes)"));
  }
}

TEST_F(ShardCorruptionTest, FlippedPayloadByteIsDataLossNamingBlockAndOffset) {
  std::string corrupt = bytes_;
  corrupt[offsets_[2] + 24 + 5] ^= 0x01;
  ASSERT_TRUE(fs_.SetContents(path_, corrupt).ok());
  auto reader = ShardReader::Open(&fs_, path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  RowBlock b;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    absl::Status s = (*reader)->ReadBlock(i, &b);
    if (i != 2) {
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_TRUE(b == blocks_[i]);
      continue;
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(path_, ": block 2 at offset ", offsets_[2])));
    EXPECT_THAT(s.message(), HasSubstr("checksum"));
  }
}

TEST_F(ShardCorruptionTest, FlippedByteFromTheMediaIsDataLoss) {
  FaultInjectingFileSystem faulty(&fs_);
  faulty.CorruptReadsAtOffset(static_cast<int64_t>(offsets_[1] + 24 + 1));
  auto reader = ShardReader::Open(&faulty, path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_GE(faulty.faults_injected(), 1);
  RowBlock b;
  ASSERT_TRUE((*reader)->ReadBlock(0, &b).ok());
  absl::Status s = (*reader)->ReadBlock(1, &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(path_, ": block 1 at offset ", offsets_[1])));
}

TEST_F(ShardCorruptionTest, FlippedBlockHeaderByteIsDataLoss) {
  std::string corrupt = bytes_;
  corrupt[offsets_[3] + 6] ^= 0x40;  // in the row count
  ASSERT_TRUE(fs_.SetContents(path_, corrupt).ok());
  auto reader = ShardReader::Open(&fs_, path_);
  ASSERT_TRUE(reader.ok());
  RowBlock b;
  absl::Status s = (*reader)->ReadBlock(3, &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("block 3 at offset ", offsets_[3])));
  EXPECT_EQ((*reader)->BlockRows(3).status().code(), absl::StatusCode::kDataLoss);
}

// Every single flipped byte anywhere in the file is detected (all bytes are under a checksum
// or a magic), with either codec.
TEST(ShardFlipTest, EveryFlippedByteIsDetectedWhenVerifying) {
  for (data::Codec codec : {CODEC_NONE, CODEC_ZSTD}) {
    MemFileSystem fs;
    const std::vector<RowBlock> blocks = RandomBlocks(3, 77, 12);
    ASSERT_TRUE(WriteShard(&fs, "/f", blocks, Codec(codec)).ok());
    const std::string bytes = *fs.GetContents("/f");
    for (size_t at = 0; at < bytes.size(); ++at) {
      std::string corrupt = bytes;
      corrupt[at] ^= 0x20;
      ASSERT_TRUE(fs.SetContents("/f", corrupt).ok());
      auto reader = ShardReader::Open(&fs, "/f");
      bool detected = !reader.ok();
      if (reader.ok()) {
        RowBlock b;
        for (size_t i = 0; i < (*reader)->num_blocks(); ++i) {
          absl::Status s = (*reader)->ReadBlock(i, &b);
          if (!s.ok()) {
            detected = true;
            EXPECT_THAT(s.message(), HasSubstr("/f: block "));
          }
        }
      }
      EXPECT_TRUE(detected) << "flip at byte " << at << " of " << bytes.size() << " codec "
                            << codec;
    }
  }
}

// Whether `b` keeps the invariants a decoded block of `schema` with `rows` rows must keep,
// checked here independently of RowBlock::Validate (which the reader itself calls).
::testing::AssertionResult KeepsBlockInvariants(const RowBlock& b, const Schema& schema,
                                                size_t rows) {
  if (b.num_rows() != rows) {
    return ::testing::AssertionFailure() << b.num_rows() << " rows, header says " << rows;
  }
  if (b.num_columns() != static_cast<size_t>(schema.fields_size())) {
    return ::testing::AssertionFailure() << b.num_columns() << " columns";
  }
  for (int c = 0; c < schema.fields_size(); ++c) {
    const Column& col = b.column(c);
    const bool is_int = schema.fields(c).type() == INT64 || schema.fields(c).type() == INT64_LIST;
    const size_t values = is_int ? col.ints.size() : col.floats.size();
    const size_t wrong_kind = is_int ? col.floats.size() : col.ints.size();
    if (col.type != schema.fields(c).type() || wrong_kind != 0) {
      return ::testing::AssertionFailure() << "column " << c << " has the wrong type";
    }
    if (!col.is_list()) {
      if (values != rows) return ::testing::AssertionFailure() << "column " << c << ": " << values;
      continue;
    }
    if (col.offsets.size() != rows + 1 || col.offsets[0] != 0 || col.offsets[rows] != values) {
      return ::testing::AssertionFailure() << "list column " << c << " offsets do not span values";
    }
    for (size_t r = 0; r < rows; ++r) {
      if (col.offsets[r + 1] < col.offsets[r]) {
        return ::testing::AssertionFailure() << "list column " << c << " decreases at " << r;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Without checksums a flipped byte may go unnoticed, but decoding stays within bounds, what is
// returned keeps every invariant of a block, and the structural checks still catch some flips.
TEST(ShardFlipTest, FlippedBytesNeverCrashWithoutChecksums) {
  ShardReaderOptions no_crc;
  no_crc.verify_checksums = false;
  for (data::Codec codec : {CODEC_NONE, CODEC_ZSTD}) {
    SCOPED_TRACE(codec);
    MemFileSystem fs;
    const std::vector<RowBlock> blocks = RandomBlocks(3, 78, 12);
    ASSERT_TRUE(WriteShard(&fs, "/f", blocks, Codec(codec)).ok());
    const std::string bytes = *fs.GetContents("/f");
    const size_t payload_start = FooterOffsets(bytes)[0] + 24;
    int block_errors = 0;    // ReadBlock failures
    int payload_errors = 0;  // ... of which for flips in block 0's payload (no header CRC)
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      for (size_t at = 0; at < bytes.size(); ++at) {
        std::string corrupt = bytes;
        corrupt[at] ^= static_cast<char>(mask);
        ASSERT_TRUE(fs.SetContents("/f", corrupt).ok());
        auto reader = ShardReader::Open(&fs, "/f", no_crc);
        if (!reader.ok()) continue;
        RowBlock b;
        for (size_t i = 0; i < (*reader)->num_blocks(); ++i) {
          const absl::Status s = (*reader)->ReadBlock(i, &b);
          if (s.ok()) {
            EXPECT_TRUE(KeepsBlockInvariants(b, AllTypesSchema(), *(*reader)->BlockRows(i)))
                << "flip at byte " << at << " block " << i;
            continue;
          }
          EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
          EXPECT_EQ(b.num_rows(), 0u);
          ++block_errors;
          if (i == 0 && at >= payload_start && at < FooterOffsets(bytes)[1]) ++payload_errors;
        }
      }
    }
    // Header flips fail on the header CRC; payload flips, unchecked by any CRC here, are still
    // caught by the decoder's length and offset checks (or zstd) in part.
    EXPECT_GT(block_errors, 0);
    EXPECT_GT(payload_errors, 0);
  }
}

// ---- Hostile lengths: headers and footers whose CRCs are right but whose counts are not.

// Peak resident memory of this process so far, in bytes.
int64_t PeakRssBytes() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

// A zstd frame that claims `content_size` bytes of content but holds none: a 4-byte frame
// content size in a single-segment frame, then one empty raw last block (RFC 8878).
std::string LyingZstdFrame(uint32_t content_size) {
  std::string frame;
  AppendLe32(&frame, 0xFD2FB528);            // magic
  frame.push_back(static_cast<char>(0xA0));  // descriptor: 4-byte content size, single segment
  AppendLe32(&frame, content_size);
  frame.append("\x01\x00\x00", 3);  // last block, raw, 0 bytes
  return frame;
}

TEST_F(ShardCorruptionTest, HugeRawLengthIsDataLossBeforeAnyAllocation) {
  // The last block becomes a frame that says it decompresses to 4 GiB - 1, with a block
  // header that agrees and every CRC right: only the length limit stands between it and a
  // 4 GiB buffer.
  const uint32_t huge = 0xFFFFFFFF;
  const std::string frame = LyingZstdFrame(huge);
  ASSERT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), huge);
  std::string bytes = bytes_.substr(0, offsets_[3] + 24) + frame;
  PutLe32(&bytes, offsets_[3] + 12, static_cast<uint32_t>(frame.size()));
  PutLe32(&bytes, offsets_[3] + 16, crc32c::Value(frame));
  PatchBlockHeader(&bytes, offsets_[3], 8, huge);
  uint64_t rows = 0;
  for (const RowBlock& b : blocks_) rows += b.num_rows();
  bytes += MakeFooter(offsets_, rows);
  ASSERT_TRUE(fs_.SetContents(path_, bytes).ok());

  auto reader = ShardReader::Open(&fs_, path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const int64_t rss_before = PeakRssBytes();
  RowBlock b;
  EXPECT_TRUE((*reader)->ReadBlock(0, &b).ok());
  const absl::Status s = (*reader)->ReadBlock(3, &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), absl::StrCat(path_, ": block 3 at offset ", offsets_[3],
                                      ": raw payload length 4294967295 exceeds the reader's "
                                      "limit of 268435456 bytes "
                                      "(ShardReaderOptions::max_block_bytes)"));
  EXPECT_EQ((*reader)->BlockRows(3).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_LT(PeakRssBytes() - rss_before, int64_t{64} << 20);
}

TEST_F(ShardCorruptionTest, HugeRawLengthOfAnUncompressedBlockIsDataLoss) {
  ASSERT_TRUE(WriteShard(&fs_, path_, blocks_, Codec(CODEC_NONE)).ok());
  std::string bytes = *fs_.GetContents(path_);
  const std::vector<uint64_t> offsets = FooterOffsets(bytes);
  PatchBlockHeader(&bytes, offsets[1], 8, 0xFFFFFFFF);
  ASSERT_TRUE(fs_.SetContents(path_, bytes).ok());
  auto reader = ShardReader::Open(&fs_, path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  RowBlock b;
  const absl::Status s = (*reader)->ReadBlock(1, &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(path_, ": block 1 at offset ", offsets[1],
                                                  ": raw payload length 4294967295")));
}

TEST_F(ShardCorruptionTest, MaxBlockBytesIsHonoured) {
  ASSERT_TRUE(WriteShard(&fs_, path_, blocks_, Codec(CODEC_ZSTD)).ok());
  const std::string bytes = *fs_.GetContents(path_);
  uint32_t largest = 0;
  for (uint64_t off : offsets_) largest = std::max(largest, Le32(bytes, off + 8));
  ShardReaderOptions options;
  options.max_block_bytes = largest;
  EXPECT_EQ(ReadAll(&fs_, path_, options).size(), blocks_.size());
  options.max_block_bytes = largest - 1;
  auto reader = ShardReader::Open(&fs_, path_, options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  int refused = 0;
  RowBlock b;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const absl::Status s = (*reader)->ReadBlock(i, &b);
    if (s.ok()) continue;
    ++refused;
    EXPECT_THAT(s.message(), HasSubstr("max_block_bytes"));
  }
  EXPECT_GE(refused, 1);
}

TEST_F(ShardCorruptionTest, StoredLengthBeyondTheBlockIsDataLoss) {
  std::string bytes = bytes_;
  PatchBlockHeader(&bytes, offsets_[3], 12, 0xFFFFFFF0);
  ASSERT_TRUE(fs_.SetContents(path_, bytes).ok());
  auto reader = ShardReader::Open(&fs_, path_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  RowBlock b;
  const absl::Status s = (*reader)->ReadBlock(3, &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(path_, ": block 3 at offset ", offsets_[3],
                                                  ": payload length 4294967280 but the block")));
}

TEST_F(ShardCorruptionTest, RowCountThePayloadCannotHoldIsDataLoss) {
  for (uint32_t rows : {0xFFFFFFFFu, 1000000u, 0u}) {
    SCOPED_TRACE(rows);
    std::string bytes = bytes_;
    PatchBlockHeader(&bytes, offsets_[2], 4, rows);
    ASSERT_TRUE(fs_.SetContents(path_, bytes).ok());
    auto reader = ShardReader::Open(&fs_, path_);
    ASSERT_TRUE(reader.ok()) << reader.status();
    RowBlock b;
    const absl::Status s = (*reader)->ReadBlock(2, &b);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(path_, ": block 2 at offset ", offsets_[2],
                                                    ": block header gives ", rows, " rows")));
    EXPECT_EQ((*reader)->BlockRows(2).status().code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(b.num_rows(), 0u);
  }
}

TEST_F(ShardCorruptionTest, FooterWithMoreBlocksThanTheFileHoldsIsDataLoss) {
  // The header, then a footer listing a million blocks: its CRC is right and it is as long
  // as it claims, but no block fits before it.
  const size_t header_end = offsets_[0];
  const std::vector<uint64_t> offsets(1000000, header_end);
  const std::string hostile = bytes_.substr(0, header_end) + MakeFooter(offsets, 1000000);
  const absl::Status s = OpenStatus(hostile);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), absl::StrCat(path_, ": footer at offset ", header_end,
                                      " lists 1000000 blocks but the 0 bytes at offset ",
                                      header_end, " hold at most 0"));
}

TEST_F(ShardCorruptionTest, FooterRowCountTheBlocksCannotHoldIsDataLoss) {
  const size_t footer_start = bytes_.size() - (8 * offsets_.size() + 32);
  for (uint64_t rows : {uint64_t{0}, uint64_t{3}, ~uint64_t{0}}) {
    SCOPED_TRACE(rows);
    const absl::Status s = OpenStatus(bytes_.substr(0, footer_start) + MakeFooter(offsets_, rows));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(s.message(), absl::StrCat(path_, ": footer at offset ", footer_start, " gives ", rows,
                                        " rows for 4 blocks"));
  }
  // The same footer with the real count opens.
  uint64_t rows = 0;
  for (const RowBlock& b : blocks_) rows += b.num_rows();
  EXPECT_TRUE(OpenStatus(bytes_.substr(0, footer_start) + MakeFooter(offsets_, rows)).ok());
}

TEST(ShardReaderTest, MissingFileIsNotFound) {
  MemFileSystem fs;
  EXPECT_EQ(ShardReader::Open(&fs, "/nope").status().code(), absl::StatusCode::kNotFound);
}

// ---- ForEachBlock and the error budget.

// Every case with one thread and with three reading ahead: the same blocks, order and counts.
class ForEachBlockTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    a_ = RandomBlocks(3, 200, 50);
    b_ = RandomBlocks(4, 201, 50);
    ASSERT_TRUE(WriteShard(&fs_, "/a", a_).ok());
    ASSERT_TRUE(WriteShard(&fs_, "/b", b_).ok());
  }

  // Flips a payload byte of block `i` of file "/b".
  void CorruptBlockOfB(size_t i) {
    std::string bytes = *fs_.GetContents("/b");
    bytes[FooterOffsets(bytes)[i] + 24 + 2] ^= 0x10;
    ASSERT_TRUE(fs_.SetContents("/b", bytes).ok());
  }

  absl::Status Run(ErrorCounter* errors, std::vector<RowBlock>* got) {
    return ForEachBlock(&fs_, {"/a", "/b"}, errors, [got](const RowBlock& block) {
      got->push_back(block);
      return absl::OkStatus();
    }, GetParam());
  }

  MemFileSystem fs_;
  std::vector<RowBlock> a_, b_;
};

TEST_P(ForEachBlockTest, DeliversEveryBlockInOrderAndCountsRows) {
  ErrorCounter errors;
  std::vector<RowBlock> got;
  ASSERT_TRUE(Run(&errors, &got).ok());
  ASSERT_EQ(got.size(), 7u);
  int64_t rows = 0;
  for (size_t i = 0; i < 7; ++i) {
    const RowBlock& want = i < 3 ? a_[i] : b_[i - 3];
    EXPECT_TRUE(got[i] == want) << i;
    rows += static_cast<int64_t>(want.num_rows());
  }
  EXPECT_EQ(errors.seen(), rows);
  EXPECT_EQ(errors.errors(), 0);
}

TEST_P(ForEachBlockTest, CorruptBlockFailsWithTheDefaultBudget) {
  CorruptBlockOfB(1);
  ErrorCounter errors;
  std::vector<RowBlock> got;
  absl::Status s = Run(&errors, &got);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("/b: block 1 at offset"));
  EXPECT_EQ(got.size(), 4u);  // the three of /a and block 0 of /b came before it
}

TEST_P(ForEachBlockTest, CorruptBlockIsSkippedAndCountsItsRowsWithinBudget) {
  CorruptBlockOfB(1);
  ErrorBudget budget;
  budget.max_errors = static_cast<int64_t>(b_[1].num_rows());
  ErrorCounter errors(budget);
  std::vector<RowBlock> got;
  absl::Status s = Run(&errors, &got);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(got.size(), 6u);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(got[i] == a_[i]);
  EXPECT_TRUE(got[3] == b_[0]);
  EXPECT_TRUE(got[4] == b_[2]);
  EXPECT_TRUE(got[5] == b_[3]);
  EXPECT_EQ(errors.errors(), static_cast<int64_t>(b_[1].num_rows()));
  int64_t good_rows = 0;
  for (const RowBlock& b : got) good_rows += static_cast<int64_t>(b.num_rows());
  EXPECT_EQ(errors.seen(), good_rows);
  ASSERT_FALSE(errors.messages().empty());
  EXPECT_THAT(errors.messages()[0], HasSubstr("/b: block 1"));
}

TEST_P(ForEachBlockTest, SecondCorruptBlockExceedsABudgetOfTheFirstOnesRows) {
  CorruptBlockOfB(1);
  CorruptBlockOfB(3);
  ErrorBudget budget;
  budget.max_errors = static_cast<int64_t>(b_[1].num_rows());
  ErrorCounter errors(budget);
  std::vector<RowBlock> got;
  EXPECT_FALSE(Run(&errors, &got).ok());
  EXPECT_EQ(got.size(), 5u);
}

TEST_P(ForEachBlockTest, BudgetIsInRowsACorruptBlockOf100RowsNeeds100) {
  std::mt19937_64 rng(5);
  const RowBlock hundred = RandomBlock(AllTypesSchema(), 100, &rng);
  ASSERT_TRUE(WriteShard(&fs_, "/c", {hundred}).ok());
  std::string bytes = *fs_.GetContents("/c");
  bytes[FooterOffsets(bytes)[0] + 24 + 2] ^= 0x10;
  ASSERT_TRUE(fs_.SetContents("/c", bytes).ok());
  for (int64_t max_errors : {99, 100}) {
    SCOPED_TRACE(max_errors);
    ErrorBudget budget;
    budget.max_errors = max_errors;
    ErrorCounter errors(budget);
    int blocks = 0;
    const absl::Status s = ForEachBlock(&fs_, {"/c", "/a"}, &errors, [&blocks](const RowBlock&) {
      ++blocks;
      return absl::OkStatus();
    }, GetParam());
    EXPECT_EQ(errors.errors(), 100);
    if (max_errors == 99) {
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
      EXPECT_THAT(s.message(), HasSubstr("/c: block 0 at offset"));
      EXPECT_THAT(s.message(), HasSubstr("(100 bad inputs, budget 99 exceeded)"));
      EXPECT_EQ(blocks, 0);
    } else {
      EXPECT_TRUE(s.ok()) << s;
      EXPECT_EQ(blocks, 3);
    }
  }
}

TEST_P(ForEachBlockTest, BlockWithACorruptHeaderCountsAsOneBadInput) {
  std::string bytes = *fs_.GetContents("/b");
  bytes[FooterOffsets(bytes)[2] + 5] ^= 0x01;  // the row count, under the header CRC
  ASSERT_TRUE(fs_.SetContents("/b", bytes).ok());
  ErrorBudget budget;
  budget.max_errors = 1;
  ErrorCounter errors(budget);
  std::vector<RowBlock> got;
  ASSERT_TRUE(Run(&errors, &got).ok());
  EXPECT_EQ(got.size(), 6u);
  EXPECT_EQ(errors.errors(), 1);
}

TEST_P(ForEachBlockTest, FileWithAnIntactFooterCountsTheFootersRows) {
  std::string bytes = *fs_.GetContents("/a");
  bytes[16] ^= 0x01;  // in the header proto: the header CRC fails, the footer is intact
  ASSERT_TRUE(fs_.SetContents("/a", bytes).ok());
  int64_t rows_of_a = 0;
  for (const RowBlock& b : a_) rows_of_a += static_cast<int64_t>(b.num_rows());
  ErrorBudget budget;
  budget.max_errors = rows_of_a;
  ErrorCounter errors(budget);
  std::vector<RowBlock> got;
  ASSERT_TRUE(Run(&errors, &got).ok());
  EXPECT_EQ(got.size(), 4u);
  EXPECT_EQ(errors.errors(), rows_of_a);
  ASSERT_FALSE(errors.messages().empty());
  EXPECT_THAT(errors.messages()[0], HasSubstr("/a: header checksum mismatch"));

  ErrorBudget short_budget;
  short_budget.max_errors = rows_of_a - 1;
  ErrorCounter short_errors(short_budget);
  got.clear();
  EXPECT_EQ(Run(&short_errors, &got).code(), absl::StatusCode::kDataLoss);
}

TEST_P(ForEachBlockTest, TruncatedFileWithoutFooterCountsAsOneBadInput) {
  std::string bytes = *fs_.GetContents("/a");
  ASSERT_TRUE(fs_.SetContents("/a", bytes.substr(0, bytes.size() / 2)).ok());
  ErrorBudget budget;
  budget.max_errors = 1;
  ErrorCounter errors(budget);
  std::vector<RowBlock> got;
  ASSERT_TRUE(Run(&errors, &got).ok());
  EXPECT_EQ(got.size(), 4u);
  EXPECT_EQ(errors.errors(), 1);
}

TEST_P(ForEachBlockTest, MissingFileFailsEvenWithABudget) {
  ErrorBudget budget;
  budget.max_errors = 100;
  ErrorCounter errors(budget);
  int calls = 0;
  absl::Status s = ForEachBlock(&fs_, {"/a", "/missing"}, &errors,
                                [&calls](const RowBlock&) { ++calls; return absl::OkStatus(); }, GetParam());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(calls, 3);  // the blocks of /a came first
}

TEST_P(ForEachBlockTest, CallbackErrorStopsTheLoop) {
  ErrorCounter errors;
  int calls = 0;
  absl::Status s = ForEachBlock(&fs_, {"/a", "/b"}, &errors, [&calls](const RowBlock&) {
    return ++calls == 2 ? absl::CancelledError("enough") : absl::OkStatus();
  }, GetParam());
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 2);
}

// A file that cannot be opened after one whose blocks are read ahead: those blocks reach `fn`
// and count first, then the file breaks the budget (or, within it, costs one bad input).
TEST_P(ForEachBlockTest, UnopenableFileCountsAfterTheBlocksBeforeIt) {
  const std::string bytes = *fs_.GetContents("/b");
  ASSERT_TRUE(fs_.SetContents("/truncated", bytes.substr(0, 10)).ok());
  int64_t rows_of_a = 0;
  for (const RowBlock& b : a_) rows_of_a += static_cast<int64_t>(b.num_rows());
  for (int64_t max_errors : {0, 1}) {
    SCOPED_TRACE(max_errors);
    ErrorBudget budget;
    budget.max_errors = max_errors;
    ErrorCounter errors(budget);
    std::vector<RowBlock> got;
    const absl::Status s = ForEachBlock(&fs_, {"/a", "/truncated", "/b"}, &errors, [&got](const RowBlock& b) {
      got.push_back(b);
      return absl::OkStatus();
    }, GetParam());
    EXPECT_EQ(errors.errors(), 1);
    if (max_errors == 0) {
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
      EXPECT_THAT(s.message(), HasSubstr("/truncated"));
      EXPECT_EQ(got.size(), 3u);
      EXPECT_EQ(errors.seen(), rows_of_a);  // good inputs; the bad one is in errors()
    } else {
      EXPECT_TRUE(s.ok()) << s;
      EXPECT_EQ(got.size(), 7u);
    }
  }
}

// A file list with nothing to read: no call, no count.
TEST_P(ForEachBlockTest, NoFilesReadNothing) {
  ErrorCounter errors;
  int calls = 0;
  EXPECT_TRUE(ForEachBlock(&fs_, {}, &errors, [&calls](const RowBlock&) { ++calls; return absl::OkStatus(); },
                           GetParam()).ok());
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(errors.seen(), 0);
}

// Many small blocks over several files, with corrupt ones among them, read by as many threads
// as the machine has and more: every outcome equals the single-threaded one.
TEST_P(ForEachBlockTest, ManyBlocksAndCorruptOnesMatchOneThread) {
  std::vector<std::string> files;
  for (int f = 0; f < 5; ++f) {
    const std::string path = absl::StrCat("/many", f);
    ASSERT_TRUE(WriteShard(&fs_, path, RandomBlocks(9, 300 + f, 7)).ok());
    files.push_back(path);
  }
  std::string bytes = *fs_.GetContents("/many2");
  bytes[FooterOffsets(bytes)[4] + 24 + 2] ^= 0x10;
  ASSERT_TRUE(fs_.SetContents("/many2", bytes).ok());
  bytes = *fs_.GetContents("/many4");
  ASSERT_TRUE(fs_.SetContents("/many4", bytes.substr(0, 10)).ok());  // cannot be opened
  for (int64_t max_errors : {0, 1000}) {
    SCOPED_TRACE(max_errors);
    ErrorBudget budget;
    budget.max_errors = max_errors;
    ErrorCounter one_errors(budget), errors(budget);
    std::vector<RowBlock> one, got;
    auto collect = [](std::vector<RowBlock>* out) {
      return [out](const RowBlock& b) { out->push_back(b); return absl::OkStatus(); };
    };
    const absl::Status one_status = ForEachBlock(&fs_, files, &one_errors, collect(&one), 1);
    const absl::Status status = ForEachBlock(&fs_, files, &errors, collect(&got), GetParam());
    EXPECT_EQ(status, one_status);
    EXPECT_EQ(errors.seen(), one_errors.seen());
    EXPECT_EQ(errors.errors(), one_errors.errors());
    EXPECT_EQ(errors.messages(), one_errors.messages());
    ASSERT_EQ(got.size(), one.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == one[i]) << i;
    if (max_errors == 0) {
      EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
      EXPECT_EQ(got.size(), 22u);  // 2 files of 9, then 4 before the corrupt block
    } else {
      EXPECT_TRUE(status.ok()) << status;
      EXPECT_EQ(got.size(), 35u);  // 4 files of 9, less the corrupt block
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, ForEachBlockTest, ::testing::Values(1, 3, 8),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat(info.param, "Threads");
                         });

}  // namespace
}  // namespace choir::data
