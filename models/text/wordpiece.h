// BERT WordPiece tokenizer, matching Hugging Face's BertTokenizerFast (the `tokenizers` Rust
// BertNormalizer + BertPreTokenizer + WordPiece) for uncased models such as all-MiniLM-L6-v2:
//   1. clean: drop NUL, U+FFFD and control/format/unassigned characters (tab, CR and LF are
//      whitespace), map every whitespace character (White_Space: Zs, Zl, Zp, \t\n\r) to ' ';
//   2. surround each CJK ideograph with spaces;
//   3. (lower_case) NFD, drop non-spacing marks (Mn) -- accent stripping -- then lower-case;
//   4. split on whitespace and isolate every punctuation character (Unicode P* and the ASCII
//      symbol ranges !-/ :-@ [-` {-~);
//   5. WordPiece: greedy longest match, continuations prefixed "##"; a word longer than
//      100 characters or with no match becomes [UNK];
//   6. [CLS] tokens [SEP], truncated so that the whole is at most max_length ids.
// As in Hugging Face, the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] written literally in
// the raw text are matched before normalisation and kept as their own ids.
// Invalid UTF-8 bytes are read as U+FFFD and therefore dropped. Thread-safe after Load.
#ifndef CHOIR_MODELS_TEXT_WORDPIECE_H_
#define CHOIR_MODELS_TEXT_WORDPIECE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/fs.h"

namespace choir {

struct BertTokenizerOptions {
  // Lower-case and strip accents (the model's do_lower_case). Default true (uncased models).
  bool lower_case = true;
  // Most ids per text, [CLS] and [SEP] included. Default 256 (all-MiniLM-L6-v2's
  // max_seq_length); at most the model's position count.
  int max_length = 256;
  // Words with more characters than this become [UNK]. Default 100 (BERT's).
  int max_chars_per_word = 100;
};

class BertTokenizer {
 public:
  // Reads a vocab.txt (one token per line, id = line number). NOT_FOUND when absent,
  // INVALID_ARGUMENT when the special tokens [UNK], [CLS], [SEP], [PAD] are missing.
  static absl::StatusOr<std::unique_ptr<BertTokenizer>> Load(FileSystem* fs,
                                                             const std::string& vocab_path,
                                                             const BertTokenizerOptions& options);
  // Same, from the vocabulary's text (for tests).
  static absl::StatusOr<std::unique_ptr<BertTokenizer>> FromVocabText(
      absl::string_view vocab_text, const BertTokenizerOptions& options);

  // Ids of `text`: [CLS], word pieces, [SEP], at most options.max_length in all.
  std::vector<int32_t> Encode(absl::string_view text) const;
  // The word pieces of `text` without special tokens or truncation.
  std::vector<std::string> Tokenize(absl::string_view text) const;

  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  const BertTokenizerOptions& options() const { return options_; }

 private:
  BertTokenizer() = default;

  // Normalises and splits `text` into words (steps 1-4), each a UTF-8 string.
  std::vector<std::string> SplitWords(absl::string_view text) const;
  // Appends the ids of `text` (special tokens, then steps 1-5 on the text between them).
  void AppendIds(absl::string_view text, std::vector<int32_t>* ids,
                 std::vector<std::string>* pieces) const;
  // Appends the WordPiece ids of one word (step 5); `pieces`, when not null, gets the strings.
  void WordPieceIds(const std::string& word, std::vector<int32_t>* ids,
                    std::vector<std::string>* pieces) const;

  BertTokenizerOptions options_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  // The literal special tokens present in the vocabulary, with their ids.
  std::vector<std::pair<std::string, int32_t>> specials_;
  int32_t cls_id_ = -1;
  int32_t sep_id_ = -1;
  int32_t pad_id_ = -1;
  int32_t unk_id_ = -1;
};

}  // namespace choir

#endif  // CHOIR_MODELS_TEXT_WORDPIECE_H_
