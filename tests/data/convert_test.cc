// Tests of the CSV reader and the converters: the real public samples (row counts from
// ../shared/data/README.md, one row read back field by field; skipped unless
// $CHOIR_SHARED_DATA is set), small in-memory inputs of each format, malformed rows with and
// without an error budget, the split choice, the generic CSV/TSV schema, faults while writing,
// and the output folder rules.
#include "data/convert.h"

#include <algorithm>

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "core/fs.h"
#include "data/csv.h"
#include "data/dataset.h"
#include "data/row_block.h"
#include "data/shard.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

// Expects `text` to contain `part`, printing both when not.
#define EXPECT_CONTAINS(text, part)                                            \
  do {                                                                         \
    const std::string choir_text_(text);                                       \
    EXPECT_TRUE(absl::StrContains(choir_text_, part))                          \
        << "expected to contain: " << (part) << "\n  actual: " << choir_text_; \
  } while (0)

// ---------------------------------------------------------------------------------------
// Helpers.

// The folder of the public samples: $CHOIR_SHARED_DATA (ctest sets it to
// <source>/../shared/data); "" when unset.
std::string SharedDataDir() {
  const char* env = std::getenv("CHOIR_SHARED_DATA");
  return env == nullptr ? "" : env;
}

// Skips the test unless $CHOIR_SHARED_DATA names a folder holding the public samples.
#define REQUIRE_SHARED_DATA(dir)                                                         \
  const std::string dir = SharedDataDir();                                               \
  if (dir.empty()) {                                                                     \
    GTEST_SKIP() << "CHOIR_SHARED_DATA is not set; set it to the folder of the public "  \
                    "samples (ctest sets it to <source>/../shared/data)";                \
  }                                                                                      \
  if (!PosixFileSystem()->IsDirectory(JoinPath(dir, "ali-ccp"))) {                       \
    GTEST_SKIP() << "CHOIR_SHARED_DATA=" << dir << " has no ali-ccp/ folder of samples"; \
  }

// A fresh folder on the real file system for this test.
std::string FreshTempDir() {
  const testing::TestInfo* info = testing::UnitTest::GetInstance()->current_test_info();
  std::string name =
      absl::StrCat("convert_test_", getpid(), "_", info->test_suite_name(), "_", info->name());
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const std::string dir = JoinPath(testing::TempDir(), name);
  EXPECT_TRUE(PosixFileSystem()->DeleteRecursively(dir).ok());
  return dir;
}

// All rows of one split, as the blocks the shards hold.
std::vector<RowBlock> ReadSplit(FileSystem* fs, const std::string& dir, const std::string& name) {
  std::vector<RowBlock> blocks;
  absl::StatusOr<DatasetManifest> manifest = ReadManifest(fs, dir);
  EXPECT_TRUE(manifest.ok()) << manifest.status();
  if (!manifest.ok()) return blocks;
  absl::StatusOr<SplitInfo> split = FindSplit(*manifest, name);
  EXPECT_TRUE(split.ok()) << split.status();
  if (!split.ok()) return blocks;
  ErrorCounter errors;
  absl::Status status =
      ForEachBlock(fs, SplitPaths(dir, *split), &errors, [&](const RowBlock& block) {
        blocks.push_back(block);
        return absl::OkStatus();
      });
  EXPECT_TRUE(status.ok()) << status;
  return blocks;
}

// Finds row `r` of a split across its blocks.
struct RowRef {
  const RowBlock* block = nullptr;
  size_t row = 0;
};
RowRef FindRow(const std::vector<RowBlock>& blocks, size_t r) {
  for (const RowBlock& b : blocks) {
    if (r < b.num_rows()) return {&b, r};
    r -= b.num_rows();
  }
  ADD_FAILURE() << "row out of range";
  return {};
}

size_t TotalRows(const std::vector<RowBlock>& blocks) {
  size_t n = 0;
  for (const RowBlock& b : blocks) n += b.num_rows();
  return n;
}

// The lines of a text file (no terminators; a final empty line dropped).
std::vector<std::string> FileLines(FileSystem* fs, const std::string& path) {
  absl::StatusOr<std::string> text = fs->ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return {};
  std::vector<std::string> lines = absl::StrSplit(*text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// Expects the scalar value of field `col` in `ref` to be the number the CSV text `text` holds.
void ExpectScalarIs(const RowRef& ref, int col, absl::string_view text) {
  const Field& field = ref.block->schema().fields(col);
  SCOPED_TRACE(absl::StrCat("field ", field.name(), " text '", text, "'"));
  if (field.type() == INT64) {
    int64_t want;
    ASSERT_TRUE(absl::SimpleAtoi(text, &want));
    EXPECT_EQ(ref.block->Int(col, ref.row), want);
  } else {
    ASSERT_EQ(field.type(), FLOAT);
    float want;
    ASSERT_TRUE(absl::SimpleAtof(text, &want));
    EXPECT_EQ(ref.block->Float(col, ref.row), want);
  }
}

// Name of the schema field holding an Ali-CCP CSV column.
std::string AliccpFieldName(const std::string& column) {
  if (column == "click" || column == "purchase" || absl::StartsWith(column, "D")) return column;
  return "f" + column;
}

int64_t Counter(const DatasetManifest& m, const std::string& name) {
  auto it = m.counters().find(name);
  return it == m.counters().end() ? -1 : it->second;
}

ConvertOptions Options(InputFormat format, std::vector<std::string> inputs, std::string out,
                       Task task = TASK_CVR) {
  ConvertOptions options;
  options.format = format;
  options.inputs = std::move(inputs);
  options.out_dir = std::move(out);
  options.task = task;
  return options;
}

// ---------------------------------------------------------------------------------------
// CSV reader.

TEST(CsvSplitterTest, SplitsPlainAndQuotedFields) {
  CsvSplitter s(',');
  ASSERT_TRUE(s.Split(R"(1,"a,b",,"say ""hi""",x"y)").ok());
  ASSERT_EQ(s.fields().size(), 5u);
  EXPECT_EQ(s.fields()[0], "1");
  EXPECT_EQ(s.fields()[1], "a,b");
  EXPECT_EQ(s.fields()[2], "");
  EXPECT_EQ(s.fields()[3], "say \"hi\"");
  EXPECT_EQ(s.fields()[4], "x\"y");
}

TEST(CsvSplitterTest, EmptyLineAndTrailingDelimiter) {
  CsvSplitter s('\t');
  ASSERT_TRUE(s.Split("").ok());
  EXPECT_EQ(s.fields(), std::vector<absl::string_view>{""});
  ASSERT_TRUE(s.Split("a\t\"\"\t").ok());
  EXPECT_EQ(s.fields(), (std::vector<absl::string_view>{"a", "", ""}));
}

TEST(CsvSplitterTest, UnterminatedQuoteIsInvalidArgument) {
  CsvSplitter s(',');
  absl::Status status = s.Split("1,\"abc,2");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((status.message()), ("unterminated quote in column 2"));
  status = s.Split("\"ab\"c,2");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(LineReaderTest, HandlesCrLfBomAndMissingFinalNewline) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/a.csv", "\xEF\xBB\xBFone\r\ntwo\n\nthree").ok());
  absl::StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(&fs, "/a.csv");
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::pair<int64_t, std::string>> got;
  absl::string_view line;
  while ((*reader)->Next(&line)) got.emplace_back((*reader)->line_number(), std::string(line));
  EXPECT_EQ(got, (std::vector<std::pair<int64_t, std::string>>{
                     {1, "one"}, {2, "two"}, {3, ""}, {4, "three"}}));
}

TEST(LineReaderTest, MissingFileIsNotFoundNamingIt) {
  MemFileSystem fs;
  absl::StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(&fs, "/nope.csv");
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_CONTAINS((reader.status().message()), ("/nope.csv"));
}

TEST(ParseInputFormatTest, KnowsTheFourFormats) {
  EXPECT_EQ(*ParseInputFormat("aliccp-aitm"), InputFormat::kAliccpAitm);
  EXPECT_EQ(*ParseInputFormat("aliccp-rechub"), InputFormat::kAliccpRechub);
  EXPECT_EQ(*ParseInputFormat("taobao-ad"), InputFormat::kTaobaoAd);
  EXPECT_EQ(*ParseInputFormat("csv"), InputFormat::kCsv);
  EXPECT_EQ(ParseInputFormat("parquet").status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------
// Real samples.

TEST(RealDataTest, AitmTrainWithHeaderDropsConversionWithoutClickForCvr) {
  REQUIRE_SHARED_DATA(data);
  FileSystem* fs = PosixFileSystem();
  const std::string out = FreshTempDir();
  absl::StatusOr<ConvertReport> report =
      Convert(fs, Options(InputFormat::kAliccpAitm,
                          {JoinPath(data, "ali-ccp/paddlerec_aitm_train.csv")}, out, TASK_CVR));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 48);
  EXPECT_EQ(report->rows_dropped, 2);
  EXPECT_EQ(report->rows_written, 46);
  EXPECT_EQ(report->rows_rejected, 0);

  absl::StatusOr<DatasetManifest> manifest = ReadManifest(fs, out);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->source(), "aliccp-aitm");
  EXPECT_CONTAINS(manifest->provenance(), ("paddlerec_aitm_train.csv"));
  EXPECT_EQ(Counter(*manifest, "rows_read"), 48);
  EXPECT_EQ(Counter(*manifest, "rows_written"), 46);
  EXPECT_EQ(Counter(*manifest, "rows_rejected"), 0);
  EXPECT_EQ(Counter(*manifest, "dropped_conversion_without_click"), 2);
  ASSERT_EQ(manifest->splits_size(), 1);
  EXPECT_EQ(manifest->splits(0).name(), "train");
  EXPECT_EQ(manifest->splits(0).rows(), 46);
  EXPECT_FALSE(fs->Exists(JoinPath(out, "rejects.tsv")));

  // 3 clicks and 1 purchase with a click remain (README: purchases with click = 1).
  const std::vector<RowBlock> blocks = ReadSplit(fs, out, "train");
  ASSERT_EQ(TotalRows(blocks), 46u);
  int64_t clicks = 0, purchases = 0;
  for (const RowBlock& b : blocks) {
    const int click = b.RoleIndex(LABEL_CLICK), purchase = b.RoleIndex(LABEL_CONVERSION);
    for (size_t r = 0; r < b.num_rows(); ++r) {
      clicks += b.Int(click, r);
      purchases += b.Int(purchase, r);
      EXPECT_FALSE(b.Int(purchase, r) == 1 && b.Int(click, r) == 0);
    }
  }
  EXPECT_EQ(clicks, 3);
  EXPECT_EQ(purchases, 1);
  PosixFileSystem()->DeleteRecursively(out).IgnoreError();
}

TEST(RealDataTest, AitmTestWithoutHeaderGoesToTestSplit) {
  REQUIRE_SHARED_DATA(data);
  FileSystem* fs = PosixFileSystem();
  const std::string out = FreshTempDir();
  absl::StatusOr<ConvertReport> report =
      Convert(fs, Options(InputFormat::kAliccpAitm,
                          {JoinPath(data, "ali-ccp/paddlerec_aitm_test.csv")}, out, TASK_CVR));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 50);
  EXPECT_EQ(report->rows_dropped, 3);
  EXPECT_EQ(report->rows_written, 47);
  absl::StatusOr<DatasetManifest> manifest = ReadManifest(fs, out);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(manifest->splits_size(), 1);
  EXPECT_EQ(manifest->splits(0).name(), "test");
  EXPECT_EQ(manifest->splits(0).rows(), 47);
  PosixFileSystem()->DeleteRecursively(out).IgnoreError();
}

TEST(RealDataTest, AitmRowsReadBackEqualTheCsvText) {
  REQUIRE_SHARED_DATA(data);
  FileSystem* fs = PosixFileSystem();
  const std::string out = FreshTempDir();
  const std::string train = JoinPath(data, "ali-ccp/paddlerec_aitm_train.csv");
  const std::string test = JoinPath(data, "ali-ccp/paddlerec_aitm_test.csv");
  ConvertOptions options = Options(InputFormat::kAliccpAitm, {train, test}, out, TASK_CTR);
  options.rows_per_block = 7;  // several blocks per split
  absl::StatusOr<ConvertReport> report = Convert(fs, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 98);
  EXPECT_EQ(report->rows_dropped, 0);  // TASK_CTR keeps conversions without click
  EXPECT_EQ(report->rows_written, 98);
  absl::StatusOr<DatasetManifest> manifest = ReadManifest(fs, out);
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(Counter(*manifest, "conversion_without_click"), 5);

  const std::vector<std::string> header = absl::StrSplit(FileLines(fs, train)[0], ',');
  ASSERT_EQ(header.size(), 20u);
  struct Case {
    std::string path, split;
    size_t line_index, row;  // 0-based line in the file, row in the split
  };
  for (const Case& c :
       {Case{train, "train", 40, 39}, Case{test, "test", 49, 49}, Case{test, "test", 0, 0}}) {
    SCOPED_TRACE(absl::StrCat(c.path, " line ", c.line_index + 1));
    const std::vector<std::string> cells = absl::StrSplit(FileLines(fs, c.path)[c.line_index], ',');
    ASSERT_EQ(cells.size(), 20u);
    const std::vector<RowBlock> blocks = ReadSplit(fs, out, c.split);
    const RowRef ref = FindRow(blocks, c.row);
    ASSERT_NE(ref.block, nullptr);
    for (size_t i = 0; i < cells.size(); ++i) {
      const int col = ref.block->FieldIndex(AliccpFieldName(header[i]));
      ASSERT_GE(col, 0) << header[i];
      ExpectScalarIs(ref, col, cells[i]);
    }
  }
  // Roles.
  const std::vector<RowBlock> train_blocks = ReadSplit(fs, out, "train");
  ASSERT_FALSE(train_blocks.empty());
  const RowBlock& b = train_blocks[0];
  EXPECT_EQ(b.schema().fields(b.RoleIndex(USER_ID)).name(), "f101");
  EXPECT_EQ(b.schema().fields(b.RoleIndex(ITEM_ID)).name(), "f205");
  EXPECT_EQ(b.schema().fields(b.RoleIndex(LABEL_CLICK)).name(), "click");
  EXPECT_EQ(b.schema().fields(b.RoleIndex(LABEL_CONVERSION)).name(), "purchase");
  PosixFileSystem()->DeleteRecursively(out).IgnoreError();
}

TEST(RealDataTest, RechubSamplesFillThreeSplitsAndReadBack) {
  REQUIRE_SHARED_DATA(data);
  FileSystem* fs = PosixFileSystem();
  const std::string out = FreshTempDir();
  std::map<std::string, std::string> files;
  for (const char* split : {"train", "val", "test"}) {
    files[split] =
        JoinPath(data, absl::StrCat("ali-ccp/torchrechub_ali_ccp_", split, "_sample.csv"));
  }
  absl::StatusOr<ConvertReport> report =
      Convert(fs, Options(InputFormat::kAliccpRechub, {files["train"], files["val"], files["test"]},
                          out, TASK_CVR));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 200);
  EXPECT_EQ(report->rows_dropped, 0);  // torch-rechub's preprocessing already dropped them
  EXPECT_EQ(report->rows_written, 200);

  absl::StatusOr<DatasetManifest> manifest = ReadManifest(fs, out);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(manifest->splits_size(), 3);
  EXPECT_EQ(manifest->splits(0).name(), "train");
  EXPECT_EQ(manifest->splits(1).name(), "val");
  EXPECT_EQ(manifest->splits(2).name(), "test");

  // README table: rows, clicks, purchases per file.
  const std::map<std::string, std::vector<int64_t>> want = {
      {"train", {100, 7, 1}}, {"val", {50, 3, 1}}, {"test", {50, 2, 1}}};
  for (const auto& [split, counts] : want) {
    SCOPED_TRACE(split);
    const std::vector<RowBlock> blocks = ReadSplit(fs, out, split);
    ASSERT_EQ(TotalRows(blocks), static_cast<size_t>(counts[0]));
    int64_t clicks = 0, purchases = 0;
    for (const RowBlock& b : blocks) {
      EXPECT_EQ(b.num_columns(), 33u);
      for (size_t r = 0; r < b.num_rows(); ++r) {
        clicks += b.Int(b.RoleIndex(LABEL_CLICK), r);
        purchases += b.Int(b.RoleIndex(LABEL_CONVERSION), r);
      }
    }
    EXPECT_EQ(clicks, counts[1]);
    EXPECT_EQ(purchases, counts[2]);
  }

  // Line 3 of val (it has a long float "0.11914000000000001") read back field by field.
  const std::vector<std::string> lines = FileLines(fs, files["val"]);
  const std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  const std::vector<std::string> cells = absl::StrSplit(lines[2], ',');
  ASSERT_EQ(header.size(), 33u);
  ASSERT_EQ(cells.size(), 33u);
  const std::vector<RowBlock> blocks = ReadSplit(fs, out, "val");
  const RowRef ref = FindRow(blocks, 1);
  ASSERT_NE(ref.block, nullptr);
  for (size_t i = 0; i < header.size(); ++i) {
    const int col = ref.block->FieldIndex(AliccpFieldName(header[i]));
    ASSERT_GE(col, 0) << header[i];
    ExpectScalarIs(ref, col, cells[i]);
  }
  EXPECT_EQ(ref.block->schema().fields(ref.block->FieldIndex("D853")).type(), FLOAT);
  EXPECT_EQ(ref.block->schema().fields(ref.block->RoleIndex(USER_ID)).name(), "f101");
  EXPECT_EQ(ref.block->schema().fields(ref.block->RoleIndex(ITEM_ID)).name(), "f205");
  PosixFileSystem()->DeleteRecursively(out).IgnoreError();
}

TEST(RealDataTest, TaobaoAdCountsAndMaskedSequences) {
  REQUIRE_SHARED_DATA(data);
  FileSystem* fs = PosixFileSystem();
  const std::string out = FreshTempDir();
  const std::string path =
      JoinPath(data, "taobao-display-ad/paddlerec_dmr_alimama_sampled_train.txt");
  ConvertOptions options = Options(InputFormat::kTaobaoAd, {path}, out, TASK_CTR);
  options.rows_per_block = 128;
  absl::StatusOr<ConvertReport> report = Convert(fs, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 500);
  EXPECT_EQ(report->rows_written, 500);

  absl::StatusOr<DatasetManifest> manifest = ReadManifest(fs, out);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->source(), "taobao-ad");
  EXPECT_EQ(Counter(*manifest, "has_conversion_label"), 0);
  EXPECT_CONTAINS(manifest->provenance(), ("no conversion label"));

  const std::vector<RowBlock> blocks = ReadSplit(fs, out, "train");
  ASSERT_EQ(TotalRows(blocks), 500u);
  int64_t clicks = 0;
  std::set<int64_t> users;
  for (const RowBlock& b : blocks) {
    EXPECT_EQ(b.RoleIndex(LABEL_CONVERSION), -1);
    for (size_t r = 0; r < b.num_rows(); ++r) {
      clicks += b.Int(b.RoleIndex(LABEL_CLICK), r);
      users.insert(b.Int(b.RoleIndex(USER_ID), r));
    }
  }
  EXPECT_EQ(clicks, 210);
  EXPECT_EQ(users.size(), 230u);

  // Read back the first row whose mask has zeros (and row 0) against the text.
  const std::vector<std::string> lines = FileLines(fs, path);
  ASSERT_EQ(lines.size(), 500u);
  size_t masked = lines.size();
  for (size_t i = 0; i < lines.size() && masked == lines.size(); ++i) {
    const std::vector<std::string> cells = absl::StrSplit(lines[i], ',');
    for (int k = 150; k < 200; ++k) {
      if (cells[k] == "0") masked = i;
    }
  }
  ASSERT_LT(masked, lines.size()) << "README: some rows have a partly empty history";
  const std::map<std::string, int> scalar_columns = {{"userid", 250},
                                                     {"cms_segid", 251},
                                                     {"cms_group_id", 252},
                                                     {"final_gender_code", 253},
                                                     {"age_level", 254},
                                                     {"pvalue_level", 255},
                                                     {"shopping_level", 256},
                                                     {"occupation", 257},
                                                     {"new_user_class_level", 258},
                                                     {"adgroup_id", 259},
                                                     {"cate_id", 260},
                                                     {"campaign_id", 261},
                                                     {"customer", 262},
                                                     {"brand", 263},
                                                     {"price", 264},
                                                     {"pid", 265},
                                                     {"clk", 266}};
  for (size_t line : {size_t{0}, masked}) {
    SCOPED_TRACE(absl::StrCat("line ", line + 1));
    const std::vector<std::string> cells = absl::StrSplit(lines[line], ',');
    ASSERT_EQ(cells.size(), 267u);
    const RowRef ref = FindRow(blocks, line);
    ASSERT_NE(ref.block, nullptr);
    for (const auto& [name, column] : scalar_columns) {
      const int col = ref.block->FieldIndex(name);
      ASSERT_GE(col, 0) << name;
      ExpectScalarIs(ref, col, cells[column]);
    }
    EXPECT_EQ(ref.block->schema().fields(ref.block->FieldIndex("price")).type(), FLOAT);
    for (const auto& [name, start] :
         std::map<std::string, int>{{"hist_btag", 0}, {"hist_cate", 50}, {"hist_brand", 100}}) {
      const int col = ref.block->FieldIndex(name);
      ASSERT_GE(col, 0) << name;
      EXPECT_EQ(ref.block->schema().fields(col).role(), SEQUENCE);
      std::vector<int64_t> want;
      for (int k = 0; k < 50; ++k) {
        if (cells[150 + k] != "0") {
          int64_t v;
          ASSERT_TRUE(absl::SimpleAtoi(cells[start + k], &v));
          want.push_back(v);
        }
      }
      std::reverse(want.begin(), want.end());  // the file is oldest first; SEQUENCE is newest first
      const absl::Span<const int64_t> got = ref.block->IntList(col, ref.row);
      EXPECT_EQ(std::vector<int64_t>(got.begin(), got.end()), want) << name;
      if (line == masked) {
        EXPECT_LT(want.size(), 50u);
      }
    }
  }
  PosixFileSystem()->DeleteRecursively(out).IgnoreError();
}

TEST(RealDataTest, TaobaoAdRefusesConversionTasksBeforeWriting) {
  REQUIRE_SHARED_DATA(data);
  FileSystem* fs = PosixFileSystem();
  const std::string out = FreshTempDir();
  const std::string path =
      JoinPath(data, "taobao-display-ad/paddlerec_dmr_alimama_sampled_train.txt");
  for (Task task : {TASK_CVR, TASK_CTCVR}) {
    absl::StatusOr<ConvertReport> report =
        Convert(fs, Options(InputFormat::kTaobaoAd, {path}, out, task));
    EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_CONTAINS(report.status().message(), "taobao-ad has no conversion label; use --task ctr");
  }
  EXPECT_FALSE(fs->Exists(out));
}

// ---------------------------------------------------------------------------------------
// Malformed rows (in memory).

constexpr char kAitmGood1[] = "0,0,85077,60,5,2,5,0,1,2,1,303983,3751,249750,4124,5565,0,0,6260,2";
constexpr char kAitmGood2[] = "1,1,85077,60,5,2,5,0,1,2,1,200850,1005,156972,315,5425,0,0,31950,2";

struct BadRowCase {
  const char* name;
  std::string line;
  const char* reason;
};

class BadRowTest : public testing::TestWithParam<BadRowCase> {};

// Line 3 of the file is bad (line 1 is the header).
std::string AitmFileWithBadLine3(const std::string& bad) {
  return absl::StrCat(
      "click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,216,508,509,702,853,301\n",
      kAitmGood1, "\n", bad, "\n", kAitmGood2, "\n");
}

TEST_P(BadRowTest, FailsNamingFileAndLineByDefault) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/train.csv", AitmFileWithBadLine3(GetParam().line)).ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kAliccpAitm, {"/in/train.csv"}, "/out"));
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()), ("/in/train.csv:3:"));
  EXPECT_CONTAINS((report.status().message()), (GetParam().reason));
  EXPECT_FALSE(fs.Exists("/out/dataset.pbtxt"));
  EXPECT_FALSE(fs.Exists("/out/train"));
}

TEST_P(BadRowTest, SkipsAndKeepsTheLineWithinBudget) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/train.csv", AitmFileWithBadLine3(GetParam().line)).ok());
  ConvertOptions options = Options(InputFormat::kAliccpAitm, {"/in/train.csv"}, "/out");
  options.budget.max_errors = 1;
  absl::StatusOr<ConvertReport> report = Convert(&fs, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 3);
  EXPECT_EQ(report->rows_rejected, 1);
  EXPECT_EQ(report->rows_written, 2);
  ASSERT_EQ(report->reject_messages.size(), 1u);
  EXPECT_CONTAINS(report->reject_messages[0], ("/in/train.csv:3:"));

  absl::StatusOr<std::string> rejects = fs.GetContents("/out/rejects.tsv");
  ASSERT_TRUE(rejects.ok()) << rejects.status();
  const std::vector<std::string> parts = absl::StrSplit(*rejects, absl::MaxSplits('\t', 2));
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0], "/in/train.csv:3");
  EXPECT_CONTAINS(parts[1], (GetParam().reason));
  EXPECT_EQ(parts[2], GetParam().line + "\n");

  absl::StatusOr<DatasetManifest> manifest = ReadManifest(&fs, "/out");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(Counter(*manifest, "rows_rejected"), 1);
  EXPECT_EQ(Counter(*manifest, "rows_read"), 3);
  EXPECT_EQ(Counter(*manifest, "rows_written"), 2);
}

INSTANTIATE_TEST_SUITE_P(
    Aitm, BadRowTest,
    testing::Values(
        BadRowCase{"WrongColumnCount", "0,0,85077,60,5,2", "expected 20 columns, got 6"},
        BadRowCase{"BadInteger",
                   "0,0,85077,60,5,2,5,0,1,2,1,30x983,3751,249750,4124,5565,0,0,6260,2",
                   "column 12 (205): bad integer '30x983'"},
        BadRowCase{"LabelTwo", "2,0,85077,60,5,2,5,0,1,2,1,303983,3751,249750,4124,5565,0,0,6260,2",
                   "column 1 (click): label must be 0 or 1"},
        BadRowCase{"UnterminatedQuote",
                   "0,0,\"85077,60,5,2,5,0,1,2,1,303983,3751,249750,4124,5565,0,0,6260,2",
                   "unterminated quote"}),
    [](const testing::TestParamInfo<BadRowCase>& info) { return info.param.name; });

TEST(ConvertTest, FailsWhenBudgetIsSpentAndKeepsEveryRejectedLine) {
  MemFileSystem fs;
  ASSERT_TRUE(
      fs.SetContents("/in/a_train.csv", absl::StrCat(kAitmGood1, "\n1,2\n", kAitmGood2, "\n3,4\n"))
          .ok());
  ConvertOptions options = Options(InputFormat::kAliccpAitm, {"/in/a_train.csv"}, "/out");
  options.budget.max_errors = 1;
  absl::StatusOr<ConvertReport> report = Convert(&fs, options);
  ASSERT_FALSE(report.ok());
  EXPECT_CONTAINS((report.status().message()), ("/in/a_train.csv:2:"));
  EXPECT_FALSE(fs.Exists("/out/dataset.pbtxt"));
  EXPECT_FALSE(fs.Exists("/out/train"));
  absl::StatusOr<std::string> rejects = fs.GetContents("/out/rejects.tsv");
  ASSERT_TRUE(rejects.ok()) << rejects.status();
  EXPECT_CONTAINS(*rejects, ("/in/a_train.csv:2\t"));
  EXPECT_CONTAINS(*rejects, ("/in/a_train.csv:4\t"));

  // A rerun into the same folder (left by the failed run) works.
  options.budget.max_errors = 2;
  report = Convert(&fs, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_rejected, 2);
  EXPECT_EQ(report->rows_written, 2);
}

TEST(ConvertTest, TruncatedLastLineWithoutNewlineAndCrLfParse) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/x.csv", absl::StrCat(kAitmGood1, "\r\n", kAitmGood2)).ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kAliccpAitm, {"/in/x.csv"}, "/out", TASK_CTR));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 2);
  EXPECT_EQ(report->rows_written, 2);
  const std::vector<RowBlock> blocks = ReadSplit(&fs, "/out", "train");
  const RowRef last = FindRow(blocks, 1);
  ASSERT_NE(last.block, nullptr);
  EXPECT_EQ(last.block->Int(last.block->FieldIndex("f301"), last.row), 2);
  EXPECT_EQ(last.block->Int(last.block->FieldIndex("f853"), last.row), 31950);
}

TEST(ConvertTest, AitmHeaderWithWrongNameIsRefused) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/x.csv",
                             "click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,"
                             "216,508,509,702,999,301\n")
                  .ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kAliccpAitm, {"/in/x.csv"}, "/out"));
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()), ("/in/x.csv:1: header column 19"));
}

TEST(ConvertTest, RechubMissingColumnIsNamed) {
  MemFileSystem fs;
  const std::vector<std::string> header = {
      "click",   "purchase", "101",     "121",     "122",    "124",    "125",    "126",
      "127",     "128",      "129",     "206",     "207",    "210",    "216",    "508",
      "509",     "702",      "853",     "301",     "109_14", "110_14", "127_14", "150_14",
      "D109_14", "D110_14",  "D127_14", "D150_14", "D508",   "D509",   "D702",   "D853"};  // no 205
  ASSERT_TRUE(fs.SetContents("/in/r_train.csv", absl::StrJoin(header, ",") + "\n").ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kAliccpRechub, {"/in/r_train.csv"}, "/out"));
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()), ("/in/r_train.csv"));
  EXPECT_CONTAINS((report.status().message()), ("missing required column '205'"));
  EXPECT_FALSE(fs.Exists("/out"));
}

// ---------------------------------------------------------------------------------------
// Generic CSV/TSV.

TEST(GenericCsvTest, AllTypesRoundTrip) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/events_train.csv",
                             "user_id,item_id,click,conversion,timestamp,city,price:float,"
                             "hist:list,emb:floatlist\n"
                             "7,100,1,1,1700000000,3,9.5,1|2|3,0.25|-1.5\n"
                             "8,101,0,0,1700000001,4,0.125,,\n"
                             "9,102,1,0,1700000002,5,\"1e3\",\"42\",0\n")
                  .ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kCsv, {"/in/events_train.csv"}, "/out", TASK_CTCVR));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_written, 3);
  const std::vector<RowBlock> blocks = ReadSplit(&fs, "/out", "train");
  ASSERT_EQ(blocks.size(), 1u);
  const RowBlock& b = blocks[0];
  const Schema& s = b.schema();
  ASSERT_EQ(s.fields_size(), 9);
  EXPECT_EQ(s.fields(0).role(), USER_ID);
  EXPECT_EQ(s.fields(1).role(), ITEM_ID);
  EXPECT_EQ(s.fields(2).role(), LABEL_CLICK);
  EXPECT_EQ(s.fields(3).role(), LABEL_CONVERSION);
  EXPECT_EQ(s.fields(4).role(), TIMESTAMP);
  EXPECT_EQ(s.fields(5).name(), "city");
  EXPECT_EQ(s.fields(5).type(), INT64);
  EXPECT_EQ(s.fields(5).role(), FEATURE);
  EXPECT_EQ(s.fields(6).name(), "price");
  EXPECT_EQ(s.fields(6).type(), FLOAT);
  EXPECT_EQ(s.fields(7).type(), INT64_LIST);
  EXPECT_EQ(s.fields(8).type(), FLOAT_LIST);

  EXPECT_EQ(b.Int(0, 0), 7);
  EXPECT_EQ(b.Int(4, 0), 1700000000);
  EXPECT_EQ(b.Float(6, 0), 9.5f);
  EXPECT_EQ(b.Float(6, 2), 1000.0f);
  auto ints = [&](size_t r) {
    absl::Span<const int64_t> v = b.IntList(7, r);
    return std::vector<int64_t>(v.begin(), v.end());
  };
  auto floats = [&](size_t r) {
    absl::Span<const float> v = b.FloatList(8, r);
    return std::vector<float>(v.begin(), v.end());
  };
  EXPECT_EQ(ints(0), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(ints(1), std::vector<int64_t>{});
  EXPECT_EQ(ints(2), std::vector<int64_t>{42});
  EXPECT_EQ(floats(0), (std::vector<float>{0.25f, -1.5f}));
  EXPECT_EQ(floats(1), std::vector<float>{});
  EXPECT_EQ(floats(2), std::vector<float>{0.0f});
}

TEST(GenericCsvTest, TsvIsDetectedByExtension) {
  MemFileSystem fs;
  ASSERT_TRUE(
      fs.SetContents("/in/day1_test.tsv", "click\tconversion\tname:list\tuser_id\n1\t0\t5|6\t1\n0\t1\t\t2\n")
          .ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kCsv, {"/in/day1_test.tsv"}, "/out", TASK_CVR));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 2);
  EXPECT_EQ(report->rows_dropped, 1);  // conversion without click
  const std::vector<RowBlock> blocks = ReadSplit(&fs, "/out", "test");
  ASSERT_EQ(TotalRows(blocks), 1u);
  absl::Span<const int64_t> list = blocks[0].IntList(2, 0);
  EXPECT_EQ(std::vector<int64_t>(list.begin(), list.end()), (std::vector<int64_t>{5, 6}));
}

TEST(GenericCsvTest, BadFloatAndBadListValueNameTheLine) {
  MemFileSystem fs;
  ASSERT_TRUE(
      fs.SetContents("/in/a.csv", "click,p:float,l:list,user_id\n1,0.5,1|2,1\n0,nan,3,2\n1,1,4||5,3\n").ok());
  ConvertOptions options = Options(InputFormat::kCsv, {"/in/a.csv"}, "/out", TASK_CTR);
  options.budget.max_errors = 5;
  absl::StatusOr<ConvertReport> report = Convert(&fs, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_rejected, 2);
  ASSERT_EQ(report->reject_messages.size(), 2u);
  EXPECT_CONTAINS(report->reject_messages[0], ("/in/a.csv:3: column 2 (p)"));
  EXPECT_CONTAINS(report->reject_messages[1], ("/in/a.csv:4: column 3 (l): bad integer ''"));
}

TEST(GenericCsvTest, HeaderErrorsAndMissingLabels) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/a.csv", "click,x:blob\n1,2\n").ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kCsv, {"/in/a.csv"}, "/out", TASK_CTR));
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()), ("unknown type"));

  ASSERT_TRUE(fs.SetContents("/in/b.csv", "click:float,x\n1,2\n").ok());
  report = Convert(&fs, Options(InputFormat::kCsv, {"/in/b.csv"}, "/out", TASK_CTR));
  EXPECT_CONTAINS((report.status().message()), ("reserved"));

  ASSERT_TRUE(fs.SetContents("/in/c.csv", "click,x,user_id\n1,2,3\n").ok());
  report = Convert(&fs, Options(InputFormat::kCsv, {"/in/c.csv"}, "/out", TASK_CVR));
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS((report.status().message()), ("no conversion label"));
  report = Convert(&fs, Options(InputFormat::kCsv, {"/in/c.csv"}, "/out", TASK_CTR));
  EXPECT_TRUE(report.ok()) << report.status();

  // Without user ids the dataset would be written and then refused by every reader.
  ASSERT_TRUE(fs.SetContents("/in/d.csv", "item_id,click,conversion\n2,1,0\n").ok());
  report = Convert(&fs, Options(InputFormat::kCsv, {"/in/d.csv"}, "/out_d", TASK_CVR));
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS((report.status().message()), ("/in/d.csv: no user id column (csv: name one 'user_id')"));
  EXPECT_FALSE(fs.Exists("/out_d"));
}

TEST(GenericCsvTest, LaterFilesAreMappedByNameAndMustMatch) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/train.csv", "click,a,b:float,user_id\n1,2,0.5,1\n").ok());
  ASSERT_TRUE(fs.SetContents("/in/test.csv", "b:float,click,a,user_id\n0.25,0,9,2\n").ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kCsv, {"/in/train.csv", "/in/test.csv"}, "/out", TASK_CTR));
  ASSERT_TRUE(report.ok()) << report.status();
  const std::vector<RowBlock> test = ReadSplit(&fs, "/out", "test");
  ASSERT_EQ(TotalRows(test), 1u);
  EXPECT_EQ(test[0].Int(test[0].FieldIndex("a"), 0), 9);
  EXPECT_EQ(test[0].Float(test[0].FieldIndex("b"), 0), 0.25f);

  ASSERT_TRUE(fs.SetContents("/in/test.csv", "b,click,a,user_id\n1,0,9,2\n").ok());
  report = Convert(
      &fs, Options(InputFormat::kCsv, {"/in/train.csv", "/in/test.csv"}, "/out2", TASK_CTR));
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()), ("/in/test.csv:1: column 'b'"));
}

// ---------------------------------------------------------------------------------------
// Split choice.

TEST(SplitFromFileNameTest, MatchesWholeTokensOfTheBaseName) {
  EXPECT_EQ(SplitFromFileName("ali_ccp_test_sample.csv"), "test");
  EXPECT_EQ(SplitFromFileName("/data/ali-ccp/paddlerec_aitm_test.csv"), "test");
  EXPECT_EQ(SplitFromFileName("torchrechub_ali_ccp_val_sample.csv"), "val");
  EXPECT_EQ(SplitFromFileName("ctr_cvr.test"), "test");
  EXPECT_EQ(SplitFromFileName("ctr_cvr.train"), "train");
  EXPECT_EQ(SplitFromFileName("events-Test.tsv"), "test");
  EXPECT_EQ(SplitFromFileName("my val.csv"), "val");
  EXPECT_EQ(SplitFromFileName("Validation.csv"), "val");
  EXPECT_EQ(SplitFromFileName("x_valid.csv"), "val");
  EXPECT_EQ(SplitFromFileName("val_or_test.csv"), "test");
  // Substrings of a token do not count.
  EXPECT_EQ(SplitFromFileName("contest.csv"), "train");
  EXPECT_EQ(SplitFromFileName("latest.csv"), "train");
  EXPECT_EQ(SplitFromFileName("interval.csv"), "train");
  EXPECT_EQ(SplitFromFileName("trainval.csv"), "train");
  EXPECT_EQ(SplitFromFileName("testing.csv"), "train");
  // Only the base name counts, not the folders.
  EXPECT_EQ(SplitFromFileName("/data/test/events.csv"), "train");
  EXPECT_EQ(SplitFromFileName("alimama_sampled.txt"), "train");
}

TEST(ConvertTest, FilesGoToTheSplitTheirNameSaysOrTheOneGiven) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/contest.csv", "click,user_id\n1,1\n0,2\n").ok());
  ASSERT_TRUE(fs.SetContents("/in/latest_test.csv", "click,user_id\n1,3\n").ok());
  ConvertOptions options =
      Options(InputFormat::kCsv, {"/in/contest.csv", "/in/latest_test.csv"}, "/out", TASK_CTR);
  ASSERT_TRUE(Convert(&fs, options).ok());
  absl::StatusOr<DatasetManifest> manifest = ReadManifest(&fs, "/out");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(manifest->splits_size(), 2);
  EXPECT_EQ(manifest->splits(0).name(), "train");
  EXPECT_EQ(manifest->splits(0).rows(), 2);
  EXPECT_EQ(manifest->splits(1).name(), "test");
  EXPECT_EQ(manifest->splits(1).rows(), 1);

  options.split = "val";
  ASSERT_TRUE(Convert(&fs, options).ok());
  manifest = ReadManifest(&fs, "/out");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(manifest->splits_size(), 1);
  EXPECT_EQ(manifest->splits(0).name(), "val");
  EXPECT_EQ(manifest->splits(0).rows(), 3);

  options.split = "dev";
  options.out_dir = "/out2";
  absl::StatusOr<ConvertReport> report = Convert(&fs, options);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()), ("unknown split 'dev'"));
  EXPECT_FALSE(fs.Exists("/out2"));
}

// ---------------------------------------------------------------------------------------
// The public formats on small inputs written by the tests (no ../shared/data needed).

// aliccp-rechub columns: labels, 23 sparse ids, 8 dense values.
const std::vector<std::string>& RechubColumns() {
  static const auto* columns = new std::vector<std::string>{
      "click",   "purchase", "101",  "121",    "122",    "124",    "125",    "126",     "127",
      "128",     "129",      "205",  "206",    "207",    "210",    "216",    "508",     "509",
      "702",     "853",      "301",  "109_14", "110_14", "127_14", "150_14", "D109_14", "D110_14",
      "D127_14", "D150_14",  "D508", "D509",   "D702",   "D853"};
  return *columns;
}

// A rechub file whose header lists the columns in reverse order plus an ignored "extra" one.
// Each row maps column name -> cell; unnamed sparse cells are "3", dense ones "0.5".
std::string RechubFile(const std::vector<std::map<std::string, std::string>>& rows) {
  std::vector<std::string> header(RechubColumns().rbegin(), RechubColumns().rend());
  header.push_back("extra");
  std::string text = absl::StrJoin(header, ",") + "\n";
  for (const auto& row : rows) {
    std::vector<std::string> cells;
    for (const std::string& name : header) {
      auto it = row.find(name);
      if (it != row.end()) {
        cells.push_back(it->second);
      } else if (name == "extra") {
        cells.push_back("not a number");
      } else {
        cells.push_back(absl::StartsWith(name, "D") ? "0.5" : "3");
      }
    }
    absl::StrAppend(&text, absl::StrJoin(cells, ","), "\n");
  }
  return text;
}

TEST(InMemoryFormatTest, RechubMapsColumnsByNameAndRejectsNonFiniteFloats) {
  MemFileSystem fs;
  ASSERT_TRUE(
      fs.SetContents(
            "/in/rechub_train.csv",
            RechubFile(
                {{{"click", "1"}, {"purchase", "1"}, {"101", "7"}, {"205", "42"}, {"D508", "0.75"}},
                 {{"click", "0"}, {"purchase", "0"}, {"D508", "nan"}},
                 {{"click", "1"}, {"purchase", "0"}, {"D702", "-inf"}}}))
          .ok());
  ConvertOptions options = Options(InputFormat::kAliccpRechub, {"/in/rechub_train.csv"}, "/out");
  absl::StatusOr<ConvertReport> report = Convert(&fs, options);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()), ("/in/rechub_train.csv:3: column "));
  EXPECT_CONTAINS((report.status().message()), ("(D508): bad or non-finite float 'nan'"));
  EXPECT_FALSE(fs.Exists("/out/dataset.pbtxt"));

  options.budget.max_errors = 2;
  report = Convert(&fs, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 3);
  EXPECT_EQ(report->rows_written, 1);
  EXPECT_EQ(report->rows_rejected, 2);
  ASSERT_EQ(report->reject_messages.size(), 2u);
  EXPECT_CONTAINS(report->reject_messages[0], ("/in/rechub_train.csv:3: "));
  EXPECT_CONTAINS(report->reject_messages[1], ("/in/rechub_train.csv:4: "));
  EXPECT_CONTAINS(report->reject_messages[1], ("(D702): bad or non-finite float '-inf'"));

  const std::vector<RowBlock> blocks = ReadSplit(&fs, "/out", "train");
  ASSERT_EQ(TotalRows(blocks), 1u);
  const RowBlock& b = blocks[0];
  EXPECT_EQ(b.num_columns(), RechubColumns().size());
  EXPECT_EQ(b.Int(b.RoleIndex(LABEL_CLICK), 0), 1);
  EXPECT_EQ(b.Int(b.RoleIndex(LABEL_CONVERSION), 0), 1);
  EXPECT_EQ(b.Int(b.RoleIndex(USER_ID), 0), 7);
  EXPECT_EQ(b.Int(b.RoleIndex(ITEM_ID), 0), 42);
  EXPECT_EQ(b.Int(b.FieldIndex("f301"), 0), 3);
  EXPECT_EQ(b.Float(b.FieldIndex("D508"), 0), 0.75f);
  EXPECT_EQ(b.Float(b.FieldIndex("D853"), 0), 0.5f);
  EXPECT_EQ(b.FieldIndex("extra"), -1);
}

// The 267 cells of a taobao-ad line. History slots are empty (mask 0) except `filled`, where
// slot k holds btag 1 + k % 4, category 1000 + k, brand 2000 + k and match_mask k % 2. An
// empty slot's cells are 0, but slot 3's category is 77 (to show that the mask decides).
std::vector<std::string> TaobaoCells(const std::vector<int>& filled, int64_t user, int click) {
  std::vector<std::string> cells(267, "0");
  cells[50 + 3] = "77";
  for (int k : filled) {
    cells[k] = absl::StrCat(1 + k % 4);
    cells[50 + k] = absl::StrCat(1000 + k);
    cells[100 + k] = absl::StrCat(2000 + k);
    cells[150 + k] = "1";
    cells[200 + k] = absl::StrCat(k % 2);
  }
  cells[250] = absl::StrCat(user);
  cells[259] = "555";
  cells[264] = "0.25";
  cells[266] = absl::StrCat(click);
  return cells;
}

// `cells` with cell `column` (0-based) replaced by `value`, as a line.
std::string TaobaoLine(std::vector<std::string> cells, int column = -1,
                       const std::string& value = "") {
  if (column >= 0) cells[column] = value;
  return absl::StrJoin(cells, ",") + "\n";
}

TEST(InMemoryFormatTest, TaobaoAdKeepsMaskedSlotsMostRecentFirstAndRejectsBadCells) {
  MemFileSystem fs;
  const std::vector<std::string> row1 = TaobaoCells({20, 47, 49}, 1, 1);
  const std::vector<std::string> row2 = TaobaoCells({}, 2, 0);
  ASSERT_TRUE(fs.SetContents("/in/alimama_sampled.txt",
                             absl::StrCat(TaobaoLine(row1), TaobaoLine(row2),
                                          TaobaoLine(row1, 160, "x"),     // mask
                                          TaobaoLine(row1, 220, "2.5"),   // match_mask
                                          TaobaoLine(row1, 264, "nan")))  // price
                  .ok());
  ConvertOptions options =
      Options(InputFormat::kTaobaoAd, {"/in/alimama_sampled.txt"}, "/out", TASK_CTR);
  absl::StatusOr<ConvertReport> report = Convert(&fs, options);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS((report.status().message()),
                  ("/in/alimama_sampled.txt:3: column 161 (mask): bad integer 'x'"));

  options.budget.max_errors = 3;
  report = Convert(&fs, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->rows_read, 5);
  EXPECT_EQ(report->rows_written, 2);
  EXPECT_EQ(report->rows_rejected, 3);
  ASSERT_EQ(report->reject_messages.size(), 3u);
  EXPECT_EQ(report->reject_messages[0],
            "/in/alimama_sampled.txt:3: column 161 (mask): bad integer 'x'");
  EXPECT_EQ(report->reject_messages[1],
            "/in/alimama_sampled.txt:4: column 221 (match_mask): bad integer '2.5'");
  EXPECT_EQ(report->reject_messages[2],
            "/in/alimama_sampled.txt:5: column 265 (price): bad or non-finite float 'nan'");

  const std::vector<RowBlock> blocks = ReadSplit(&fs, "/out", "train");
  ASSERT_EQ(TotalRows(blocks), 2u);
  const RowBlock& b = blocks[0];
  const auto list = [&](const char* name, size_t row) {
    const absl::Span<const int64_t> span = b.IntList(b.FieldIndex(name), row);
    return std::vector<int64_t>(span.begin(), span.end());
  };
  EXPECT_EQ(list("hist_cate", 0), (std::vector<int64_t>{1049, 1047, 1020}));
  EXPECT_EQ(list("hist_brand", 0), (std::vector<int64_t>{2049, 2047, 2020}));
  EXPECT_EQ(list("hist_btag", 0), (std::vector<int64_t>{2, 4, 1}));
  EXPECT_EQ(b.Int(b.RoleIndex(USER_ID), 0), 1);
  EXPECT_EQ(b.Int(b.RoleIndex(ITEM_ID), 0), 555);
  EXPECT_EQ(b.Int(b.RoleIndex(LABEL_CLICK), 0), 1);
  EXPECT_EQ(b.Float(b.FieldIndex("price"), 0), 0.25f);
  EXPECT_TRUE(list("hist_cate", 1).empty());
  EXPECT_TRUE(list("hist_btag", 1).empty());
  EXPECT_EQ(b.Int(b.RoleIndex(LABEL_CLICK), 1), 0);
}

// ---------------------------------------------------------------------------------------
// Faults while writing.

// Two splits of several blocks each and one rejected line (so rejects.tsv is written too).
void WriteFaultTestInputs(MemFileSystem* fs) {
  std::string train, test;
  for (int i = 0; i < 7; ++i) absl::StrAppend(&train, i % 2 ? kAitmGood1 : kAitmGood2, "\n");
  absl::StrAppend(&train, "1,2\n");
  for (int i = 0; i < 5; ++i) absl::StrAppend(&test, i % 2 ? kAitmGood2 : kAitmGood1, "\n");
  ASSERT_TRUE(fs->SetContents("/in/f_train.csv", train).ok());
  ASSERT_TRUE(fs->SetContents("/in/f_test.csv", test).ok());
}

ConvertOptions FaultTestOptions() {
  ConvertOptions options =
      Options(InputFormat::kAliccpAitm, {"/in/f_train.csv", "/in/f_test.csv"}, "/out", TASK_CTR);
  options.budget.max_errors = 1;
  options.rows_per_block = 2;
  return options;
}

// Paths of the files (not folders) below `dir`.
std::vector<std::string> FilesBelow(FileSystem* fs, const std::string& dir) {
  std::vector<std::string> files;
  absl::StatusOr<std::vector<std::string>> entries = fs->ListDir(dir);
  if (!entries.ok()) return files;
  for (const std::string& entry : *entries) {
    const std::string path = JoinPath(dir, entry);
    if (fs->IsDirectory(path)) {
      for (std::string& f : FilesBelow(fs, path)) files.push_back(std::move(f));
    } else {
      files.push_back(path);
    }
  }
  return files;
}

TEST(ConvertFaultTest, FailedWriteOrRenameLeavesNoManifestNorTemporaryAndARerunWorks) {
  // The bytes a run without faults writes; any smaller write limit makes a run fail.
  int64_t total_bytes = 0;
  int64_t rows_written = 0;
  {
    MemFileSystem fs;
    WriteFaultTestInputs(&fs);
    absl::StatusOr<ConvertReport> report = Convert(&fs, FaultTestOptions());
    ASSERT_TRUE(report.ok()) << report.status();
    rows_written = report->rows_written;
    for (const std::string& file : FilesBelow(&fs, "/out")) total_bytes += *fs.FileSize(file);
  }
  ASSERT_EQ(rows_written, 12);
  ASSERT_GT(total_bytes, 100);

  struct FaultCase {
    int64_t write_limit;  // -1: writes do not fail
    bool fail_rename;
  };
  const FaultCase cases[] = {{0, false},
                             {1, false},
                             {total_bytes / 3, false},
                             {total_bytes / 2, false},
                             {total_bytes - 1, false},  // the manifest's last byte
                             {-1, true}};
  for (const FaultCase& fault : cases) {
    SCOPED_TRACE(
        absl::StrCat("write limit ", fault.write_limit, ", fail rename ", fault.fail_rename));
    MemFileSystem base;
    WriteFaultTestInputs(&base);
    FaultInjectingFileSystem faulty(&base);
    faulty.FailWritesAfterBytes(fault.write_limit);
    if (fault.fail_rename) faulty.FailNextRename();
    absl::StatusOr<ConvertReport> report = Convert(&faulty, FaultTestOptions());
    EXPECT_FALSE(report.ok());
    EXPECT_CONTAINS((report.status().message()), ("injected"));
    EXPECT_GT(faulty.faults_injected(), 0);
    for (const std::string& file : FilesBelow(&base, "/out")) {
      EXPECT_FALSE(absl::EndsWith(file, ".tmp")) << file;
      EXPECT_FALSE(absl::EndsWith(file, kManifestName)) << file;
      EXPECT_FALSE(absl::EndsWith(file, ".shard")) << file;
    }

    report = Convert(&base, FaultTestOptions());
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->rows_written, rows_written);
    absl::StatusOr<DatasetManifest> manifest = ReadManifest(&base, "/out");
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    EXPECT_EQ(manifest->splits_size(), 2);
    EXPECT_EQ(TotalRows(ReadSplit(&base, "/out", "train")), 7u);
    EXPECT_EQ(TotalRows(ReadSplit(&base, "/out", "test")), 5u);
  }
}

// ---------------------------------------------------------------------------------------
// Output folder.

TEST(OutputDirTest, ReplacesAnExistingDataset) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/x_val.csv", "click,conversion,user_id\n1,0,1\n").ok());
  ASSERT_TRUE(fs.SetContents("/in/x_train.csv", "click,conversion,user_id\n1,1,1\n0,0,2\n").ok());
  ASSERT_TRUE(Convert(&fs, Options(InputFormat::kCsv, {"/in/x_val.csv"}, "/out", TASK_CTR)).ok());
  ASSERT_TRUE(fs.Exists("/out/val"));
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kCsv, {"/in/x_train.csv"}, "/out", TASK_CTR));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(fs.Exists("/out/val"));
  absl::StatusOr<DatasetManifest> manifest = ReadManifest(&fs, "/out");
  ASSERT_TRUE(manifest.ok());
  ASSERT_EQ(manifest->splits_size(), 1);
  EXPECT_EQ(manifest->splits(0).name(), "train");
  EXPECT_EQ(manifest->splits(0).rows(), 2);
}

TEST(OutputDirTest, RefusesAFolderThatIsNotADataset) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/in/x.csv", "click,user_id\n1,1\n").ok());
  ASSERT_TRUE(fs.SetContents("/out/notes.txt", "mine").ok());
  absl::StatusOr<ConvertReport> report =
      Convert(&fs, Options(InputFormat::kCsv, {"/in/x.csv"}, "/out", TASK_CTR));
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS((report.status().message()), ("notes.txt"));
  EXPECT_TRUE(fs.Exists("/out/notes.txt"));
}

}  // namespace
}  // namespace choir::data
