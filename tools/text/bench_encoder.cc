// Sentences per second of the built-in sentence encoder on profile-like texts.
//
//   bench_encoder --model_dir .cache/models/all-MiniLM-L6-v2 [--texts 1000] [--batch 64]
//
// Prints one line per thread count (1 and 2) with the OpenBLAS kernel in use. OpenBLAS runs
// single-threaded here so that the thread count is ours.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gflags/gflags.h"
#include "models/text/minilm.h"

DEFINE_string(model_dir, ".cache/models/all-MiniLM-L6-v2", "all-MiniLM-L6-v2 directory");
DEFINE_int32(texts, 1000, "number of profile-like texts");
DEFINE_int32(batch, 64, "texts per forward pass");

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  openblas_set_num_threads(1);
  auto encoder = choir::SentenceEncoder::Load(choir::PosixFileSystem(), FLAGS_model_dir);
  if (!encoder.ok()) {
    std::fprintf(stderr, "%s\n", encoder.status().ToString().c_str());
    return 1;
  }
  const char* cats[] = {"Women's Clothing", "Mobile Phones", "Baby & Maternity", "Books",
                        "Outdoor Sports", "Beauty & Skincare", "Pet Supplies", "Kitchenware"};
  std::mt19937 rng(7);
  std::vector<std::string> texts;
  for (int i = 0; i < FLAGS_texts; ++i) {
    texts.push_back("Core identity: a " + std::to_string(18 + rng() % 50) +
                    "-year-old shopper in a tier-" + std::to_string(1 + rng() % 4) +
                    " city. Primary interests: " + cats[rng() % 8] + " (" +
                    std::to_string(1 + rng() % 30) + " purchases, price tier 0." +
                    std::to_string(rng() % 10) + "); secondary: " + cats[rng() % 8] +
                    ". Recent: " + cats[rng() % 8] +
                    ". Consumption philosophy: value-conscious, compares prices carefully.");
  }
  std::vector<float> out(texts.size() * (*encoder)->dim());
  for (int threads : {1, 2}) {
    const auto start = std::chrono::steady_clock::now();
    auto status = (*encoder)->Encode(texts, FLAGS_batch, threads, out.data());
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", status.ToString().c_str());
      return 1;
    }
    std::printf("{\"texts\": %d, \"batch\": %d, \"threads\": %d, \"seconds\": %.3f, "
                "\"sentences_per_s\": %.1f, \"openblas_core\": \"%s\"}\n",
                FLAGS_texts, FLAGS_batch, threads, s, FLAGS_texts / s, openblas_get_corename());
  }
  return 0;
}
