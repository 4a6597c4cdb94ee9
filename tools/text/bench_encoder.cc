// Sentences per second and peak memory of the built-in sentence encoder.
//
//   bench_encoder --model_dir .cache/models/all-MiniLM-L6-v2 --in profiles.tsv
//                 [--texts 1000] [--batch 64] [--threads 1]
//
// Encodes the first --texts distinct texts of --in (`user_id TAB text` lines, as `choir groups
// profile` writes; without --in, generated profile-like texts) with --threads workers, each on
// single-threaded OpenBLAS. Prints one JSON object; tools/text/bench_encoder_torch.py prints
// the same fields for the PyTorch reference, so tools/bench/run.sh encoder compares them.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/fs.h"
#include "core/sysinfo.h"
#include "gflags/gflags.h"
#include "models/text/minilm.h"
#include "nlohmann/json.hpp"

DEFINE_string(model_dir, ".cache/models/all-MiniLM-L6-v2", "all-MiniLM-L6-v2 directory");
DEFINE_string(in, "", "profiles.tsv to take the texts from (default: generated texts)");
DEFINE_int32(texts, 1000, "number of distinct texts");
DEFINE_int32(batch, 64, "texts per forward pass");
DEFINE_int32(threads, 1, "encoder threads");

namespace {

std::vector<std::string> GeneratedTexts(int n) {
  const char* cats[] = {"Women's Clothing", "Mobile Phones", "Baby & Maternity", "Books",
                        "Outdoor Sports", "Beauty & Skincare", "Pet Supplies", "Kitchenware"};
  std::mt19937 rng(7);
  std::vector<std::string> texts;
  for (int i = 0; i < n; ++i) {
    texts.push_back("Core identity: a " + std::to_string(18 + rng() % 50) + "-year-old shopper in a tier-" +
                    std::to_string(1 + rng() % 4) + " city. Primary interests: " + cats[rng() % 8] + " (" +
                    std::to_string(1 + rng() % 30) + " purchases, price tier 0." + std::to_string(rng() % 10) +
                    "); secondary: " + cats[rng() % 8] + ". Recent: " + cats[rng() % 8] +
                    ". Consumption philosophy: value-conscious, compares prices carefully.");
  }
  return texts;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  openblas_set_num_threads(1);
  choir::FileSystem* fs = choir::PosixFileSystem();
  std::vector<std::string> texts;
  if (FLAGS_in.empty()) {
    texts = GeneratedTexts(FLAGS_texts);
  } else {
    absl::StatusOr<std::string> tsv = fs->ReadFileToString(FLAGS_in);
    if (!tsv.ok()) {
      std::fprintf(stderr, "%s\n", tsv.status().ToString().c_str());
      return 1;
    }
    std::unordered_set<std::string> seen;
    for (absl::string_view line : absl::StrSplit(*tsv, '\n')) {
      const size_t tab = line.find('\t');
      if (tab == absl::string_view::npos) continue;
      std::string text(line.substr(tab + 1));
      if (seen.insert(text).second) texts.push_back(std::move(text));
      if (static_cast<int>(texts.size()) == FLAGS_texts) break;
    }
  }
  auto encoder = choir::SentenceEncoder::Load(fs, FLAGS_model_dir);
  if (!encoder.ok()) {
    std::fprintf(stderr, "%s\n", encoder.status().ToString().c_str());
    return 1;
  }
  std::vector<float> out(texts.size() * (*encoder)->dim());
  const auto start = std::chrono::steady_clock::now();
  auto status = (*encoder)->Encode(texts, FLAGS_batch, FLAGS_threads, out.data());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  nlohmann::ordered_json j;
  j["bench"] = "encoder";
  j["impl"] = "choir";
  j["texts"] = texts.size();
  j["batch"] = FLAGS_batch;
  j["threads"] = FLAGS_threads;
  j["seconds"] = s;
  j["sentences_per_s"] = texts.size() / s;
  j["peak_rss_mb"] = choir::PeakRssMb();
  j["openblas_core"] = openblas_get_corename();
  j["cpu"] = choir::CpuModel();
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
