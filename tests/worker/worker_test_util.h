// Helpers shared by the trainer's tests: small synthetic datasets and their rows read straight
// from the shards (the reference the reader and the trainer are checked against).
#ifndef CHOIR_TESTS_WORKER_WORKER_TEST_UTIL_H_
#define CHOIR_TESTS_WORKER_WORKER_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "core/crc32c.h"
#include "core/error_budget.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "data/dataset.h"
#include "data/generator.h"
#include "data/row_block.h"
#include "data/shard.h"
#include "data/taxonomy.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace choir::worker::testing {

// Rewrites the meta of the committed checkpoint (or bundle) in `dir` with `edit`, keeping the
// manifest's checksum valid: a manifest a buggy writer could produce, not one damaged on disk.
// With `whole`, `edit` gets the whole manifest (format, version, files, meta).
template <typename Edit>
void EditManifestMeta(FileSystem* fs, const std::string& dir, Edit edit, bool whole = false) {
  const std::string path = dir + "/MANIFEST.json";
  absl::StatusOr<std::string> text = fs->ReadFileToString(path);
  ASSERT_TRUE(text.ok()) << text.status();
  nlohmann::json manifest = nlohmann::json::parse(text->substr(0, text->rfind("crc32c ")));
  edit(whole ? manifest : manifest["meta"]);
  const std::string body = manifest.dump(1) + "\n";
  ASSERT_TRUE(fs->WriteStringToFileAtomic(path, absl::StrFormat("%scrc32c %08x\n", body, crc32c::Value(body))).ok());
}

inline data::CompiledTaxonomy DefaultTaxonomy() {
  absl::StatusOr<data::Taxonomy> t = data::LoadTaxonomy(nullptr, "");
  EXPECT_TRUE(t.ok()) << t.status();
  absl::StatusOr<data::CompiledTaxonomy> c = data::CompileTaxonomy(*t);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// Generates a synthetic dataset of `users` users into `dir`. `users_per_chunk` sets how many
// blocks the splits get (one block per chunk); `rows_per_file` how many files.
inline data::GeneratorReport Generate(FileSystem* fs, const std::string& dir, int64_t users,
                                      uint64_t seed, int users_per_chunk = 2048,
                                      int64_t rows_per_file = 1 << 22) {
  data::GeneratorOptions options;
  options.users = users;
  options.seed = seed;
  options.threads = 2;
  options.users_per_chunk = users_per_chunk;
  options.rows_per_file = rows_per_file;
  absl::StatusOr<data::GeneratorReport> r = GenerateDataset(fs, DefaultTaxonomy(), options, dir);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : data::GeneratorReport{};
}

inline std::vector<std::string> SplitFiles(FileSystem* fs, const std::string& dir,
                                           const std::string& split) {
  absl::StatusOr<data::DatasetManifest> m = data::ReadManifest(fs, dir);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  absl::StatusOr<data::SplitInfo> s = data::FindSplit(*m, split);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return {};
  return data::SplitPaths(dir, *s);
}

// Every block of `files`, in file order, read with data::ForEachBlock.
inline std::vector<data::RowBlock> ReadBlocks(FileSystem* fs, const std::vector<std::string>& files) {
  std::vector<data::RowBlock> blocks;
  ErrorCounter errors;
  absl::Status st = data::ForEachBlock(fs, files, &errors, [&](const data::RowBlock& b) {
    blocks.push_back(b);
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
  return blocks;
}

// Rows of `blocks` whose INT64 field `field` equals `value`.
inline int64_t CountRowsWhere(const std::vector<data::RowBlock>& blocks, const std::string& field,
                              int64_t value) {
  int64_t n = 0;
  for (const data::RowBlock& b : blocks) {
    const int col = b.FieldIndex(field);
    EXPECT_GE(col, 0) << field;
    if (col < 0) return -1;
    for (size_t r = 0; r < b.num_rows(); ++r) n += b.Int(col, r) == value;
  }
  return n;
}

inline int64_t CountRows(const std::vector<data::RowBlock>& blocks) {
  int64_t n = 0;
  for (const data::RowBlock& b : blocks) n += b.num_rows();
  return n;
}

// A small dnn job: embedding 8, tower [32, 16], 20 steps of 256 samples, shuffle buffer 4096,
// on the dataset in `dir`, writing into `out_dir`.
inline JobConfig SmallJob(const std::string& dir, const std::string& out_dir, uint64_t seed) {
  JobConfig job;
  job.set_name("trainer_test");
  job.mutable_data()->set_dir(dir);
  ModelConfig* model = job.mutable_model();
  model->set_type("dnn");
  model->set_embedding_dim(8);
  model->add_hidden(32);
  model->add_hidden(16);
  TrainerConfig* tc = job.mutable_trainer();
  tc->set_batch_size(256);
  tc->set_max_steps(20);
  tc->set_shuffle_buffer(4096);
  tc->set_seed(seed);
  tc->set_out_dir(out_dir);
  return job;
}

}  // namespace choir::worker::testing

#endif  // CHOIR_TESTS_WORKER_WORKER_TEST_UTIL_H_
