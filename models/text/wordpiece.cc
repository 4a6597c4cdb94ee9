#include "models/text/wordpiece.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "utf8proc.h"

namespace choir {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

bool IsBertWhitespace(char32_t c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return true;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
         cat == UTF8PROC_CATEGORY_ZP;
}

// Control in the tokenizers sense: any "Other" category (Cc, Cf, Cs, Co, Cn) except \t\n\r.
bool IsBertControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
      return true;
    default:
      return false;
  }
}

bool IsBertPunctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideographs blocks BERT treats as single-character words.
bool IsCjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void AppendUtf8(char32_t c, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// Decodes UTF-8; each invalid byte becomes U+FFFD.
std::vector<char32_t> DecodeUtf8(absl::string_view text) {
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n <= 0) {
      cps.push_back(kReplacement);
      ++p;
      --left;
    } else {
      cps.push_back(static_cast<char32_t>(c));
      p += n;
      left -= n;
    }
  }
  return cps;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BertTokenizer>> BertTokenizer::Load(
    FileSystem* fs, const std::string& vocab_path, const BertTokenizerOptions& options) {
  auto text = fs->ReadFileToString(vocab_path);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("tokenizer vocabulary ", vocab_path,
                                                           ": ", text.status().message()));
  }
  auto tokenizer = FromVocabText(*text, options);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(vocab_path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<BertTokenizer>> BertTokenizer::FromVocabText(
    absl::string_view vocab_text, const BertTokenizerOptions& options) {
  if (options.max_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_length ", options.max_length, " leaves no room for [CLS] and [SEP]"));
  }
  auto tokenizer = std::unique_ptr<BertTokenizer>(new BertTokenizer());
  tokenizer->options_ = options;
  std::vector<absl::string_view> lines = absl::StrSplit(vocab_text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  for (absl::string_view line : lines) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto id = static_cast<int32_t>(tokenizer->id_to_token_.size());
    tokenizer->id_to_token_.emplace_back(line);
    tokenizer->token_to_id_[std::string(line)] = id;  // A repeated token keeps its last id.
  }
  auto special = [&](const char* name, int32_t* id) -> absl::Status {
    auto it = tokenizer->token_to_id_.find(name);
    if (it == tokenizer->token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary lacks ", name));
    }
    *id = it->second;
    return absl::OkStatus();
  };
  for (auto [name, id] : {std::pair<const char*, int32_t*>{"[UNK]", &tokenizer->unk_id_},
                          {"[CLS]", &tokenizer->cls_id_},
                          {"[SEP]", &tokenizer->sep_id_},
                          {"[PAD]", &tokenizer->pad_id_}}) {
    absl::Status s = special(name, id);
    if (!s.ok()) return s;
  }
  for (const char* name : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    auto it = tokenizer->token_to_id_.find(name);
    if (it != tokenizer->token_to_id_.end()) tokenizer->specials_.emplace_back(name, it->second);
  }
  return tokenizer;
}

std::vector<std::string> BertTokenizer::SplitWords(absl::string_view text) const {
  // Steps 1-3: one pass producing normalised code points; spaces separate words.
  std::vector<char32_t> norm;
  norm.reserve(text.size() + 8);
  utf8proc_int32_t decomposed[32];
  for (char32_t c : DecodeUtf8(text)) {
    if (c == 0 || c == kReplacement || IsBertControl(c)) continue;
    if (IsBertWhitespace(c)) {
      norm.push_back(' ');
      continue;
    }
    if (IsCjk(c)) {
      norm.push_back(' ');
      norm.push_back(c);
      norm.push_back(' ');
      continue;
    }
    if (!options_.lower_case) {
      norm.push_back(c);
      continue;
    }
    int last_boundclass = 0;
    const utf8proc_ssize_t n = utf8proc_decompose_char(
        static_cast<utf8proc_int32_t>(c), decomposed, 32, UTF8PROC_DECOMPOSE, &last_boundclass);
    if (n <= 0 || n > 32) {  // Cannot happen for a valid code point; keep it as is.
      norm.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
      continue;
    }
    for (utf8proc_ssize_t i = 0; i < n; ++i) {
      if (utf8proc_category(decomposed[i]) == UTF8PROC_CATEGORY_MN) continue;
      norm.push_back(static_cast<char32_t>(utf8proc_tolower(decomposed[i])));
    }
  }
  // Step 4: split on spaces, isolate punctuation.
  std::vector<std::string> words;
  std::string current;
  auto flush = [&]() {
    if (!current.empty()) words.push_back(std::move(current));
    current.clear();
  };
  for (char32_t c : norm) {
    if (IsBertWhitespace(c)) {
      flush();
    } else if (IsBertPunctuation(c)) {
      flush();
      AppendUtf8(c, &current);
      flush();
    } else {
      AppendUtf8(c, &current);
    }
  }
  flush();
  return words;
}

void BertTokenizer::WordPieceIds(const std::string& word, std::vector<int32_t>* ids,
                                 std::vector<std::string>* pieces) const {
  // Byte offsets of the code-point boundaries of `word`.
  std::vector<size_t> bounds;
  for (size_t i = 0; i < word.size(); ++i) {
    if ((static_cast<unsigned char>(word[i]) & 0xC0) != 0x80) bounds.push_back(i);
  }
  bounds.push_back(word.size());
  const size_t chars = bounds.size() - 1;
  auto unknown = [&]() {
    ids->push_back(unk_id_);
    if (pieces != nullptr) pieces->push_back(id_to_token_[unk_id_]);
  };
  if (chars > static_cast<size_t>(options_.max_chars_per_word)) {
    unknown();
    return;
  }
  const size_t first = ids->size();
  std::vector<std::string> found;
  std::string candidate;
  size_t start = 0;
  while (start < chars) {
    size_t end = chars;
    int32_t match = -1;
    for (; end > start; --end) {
      candidate.clear();
      if (start > 0) candidate = "##";
      candidate.append(word, bounds[start], bounds[end] - bounds[start]);
      auto it = token_to_id_.find(candidate);
      if (it != token_to_id_.end()) {
        match = it->second;
        break;
      }
    }
    if (match < 0) {
      ids->resize(first);
      unknown();
      return;
    }
    ids->push_back(match);
    if (pieces != nullptr) found.push_back(candidate);
    start = end;
  }
  if (pieces != nullptr) {
    for (auto& p : found) pieces->push_back(std::move(p));
  }
}

void BertTokenizer::AppendIds(absl::string_view text, std::vector<int32_t>* ids,
                              std::vector<std::string>* pieces) const {
  while (!text.empty()) {
    // The leftmost special token, the longest one at that position.
    size_t at = absl::string_view::npos;
    const std::pair<std::string, int32_t>* found = nullptr;
    for (const auto& special : specials_) {
      const size_t pos = text.find(special.first);
      if (pos == absl::string_view::npos) continue;
      if (pos < at || (pos == at && special.first.size() > found->first.size())) {
        at = pos;
        found = &special;
      }
    }
    for (const std::string& word : SplitWords(text.substr(0, at))) {
      WordPieceIds(word, ids, pieces);
    }
    if (found == nullptr) return;
    ids->push_back(found->second);
    if (pieces != nullptr) pieces->push_back(found->first);
    text.remove_prefix(at + found->first.size());
  }
}

std::vector<int32_t> BertTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.push_back(cls_id_);
  AppendIds(text, &ids, nullptr);
  const size_t limit = static_cast<size_t>(options_.max_length) - 1;  // Room for [SEP].
  if (ids.size() > limit) ids.resize(limit);
  ids.push_back(sep_id_);
  return ids;
}

std::vector<std::string> BertTokenizer::Tokenize(absl::string_view text) const {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  AppendIds(text, &ids, &pieces);
  return pieces;
}

}  // namespace choir
