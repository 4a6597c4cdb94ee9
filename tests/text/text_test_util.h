// Where the text-encoder tests find the model and the committed reference.
#ifndef CHOIR_TESTS_TEXT_TEXT_TEST_UTIL_H_
#define CHOIR_TESTS_TEXT_TEXT_TEST_UTIL_H_

#include <cstdlib>
#include <string>

#include "core/fs.h"
#include "nlohmann/json.hpp"

namespace choir {
namespace text_test {

inline std::string SourceDir() {
  const char* s = std::getenv("CHOIR_SOURCE_DIR");
  return s != nullptr ? s : ".";
}

// $CHOIR_MODEL_DIR, else where tools/setup.sh extracts the weights: $CHOIR_MODEL_CACHE (as
// `choir embed` reads it) or <source>/.cache/models, then all-MiniLM-L6-v2.
inline std::string ModelDir() {
  const char* m = std::getenv("CHOIR_MODEL_DIR");
  if (m != nullptr && *m != '\0') return m;
  const char* cache = std::getenv("CHOIR_MODEL_CACHE");
  if (cache != nullptr && *cache != '\0') return JoinPath(cache, "all-MiniLM-L6-v2");
  return JoinPath(SourceDir(), ".cache/models/all-MiniLM-L6-v2");
}

inline bool HaveModel() {
  return PosixFileSystem()->Exists(JoinPath(ModelDir(), "model.safetensors")) &&
         PosixFileSystem()->Exists(JoinPath(ModelDir(), "vocab.txt"));
}

inline std::string SkipMessage() {
  return "all-MiniLM-L6-v2 weights not found in " + ModelDir() +
         " (run tools/setup.sh without --no-model, or set CHOIR_MODEL_DIR or CHOIR_MODEL_CACHE)";
}

// The committed reference written by tools/text/make_encoder_reference.py.
inline nlohmann::json LoadReference() {
  const std::string path = JoinPath(SourceDir(), "tests/text/testdata/minilm_reference.json");
  auto text = PosixFileSystem()->ReadFileToString(path);
  if (!text.ok()) return nlohmann::json();
  return nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
}

}  // namespace text_test
}  // namespace choir

#endif  // CHOIR_TESTS_TEXT_TEXT_TEST_UTIL_H_
