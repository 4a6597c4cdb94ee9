#include "models/text/minilm.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "models/text/safetensors.h"
#include "nlohmann/json.hpp"
#include "unsupported/Eigen/SpecialFunctions"

namespace choir {

struct SentenceEncoder::Layer {
  std::vector<float> qkv_w;  // [3*hidden, hidden]: query, key, value rows stacked
  std::vector<float> qkv_b;  // [3*hidden]
  std::vector<float> attn_out_w, attn_out_b;  // [hidden, hidden], [hidden]
  std::vector<float> ln1_gamma, ln1_beta;
  std::vector<float> inter_w, inter_b;  // [intermediate, hidden], [intermediate]
  std::vector<float> out_w, out_b;      // [hidden, intermediate], [hidden]
  std::vector<float> ln2_gamma, ln2_beta;
};

// Per-worker buffers, grown to the largest batch seen.
struct SentenceEncoder::Scratch {
  std::vector<float> x;       // [tokens, hidden]
  std::vector<float> qkv;     // [tokens, 3*hidden]
  std::vector<float> ctx;     // [tokens, hidden]
  std::vector<float> tmp;     // [tokens, hidden]
  std::vector<float> inter;   // [tokens, intermediate]
  std::vector<float> scores;  // [max_len, max_len]
};

namespace {

// BERT's exact GELU, x (1 + erf(x / sqrt(2))) / 2, in place, with Eigen's vectorised erf (a
// rational approximation within 4.2e-7 of std::erf; the GELU within 1e-6 absolute), where the
// scalar loop's erf calls were the largest cost after the matrix products.
void Gelu(float* x, int64_t n) {
  Eigen::Map<Eigen::ArrayXf> v(x, n);
  v = 0.5f * v * (1.0f + (v * static_cast<float>(M_SQRT1_2)).erf());
}

// out[rows, n] = in[rows, k] * w[n, k]^T + b (out may not alias in).
void Linear(const float* in, int rows, int k, const std::vector<float>& w,
            const std::vector<float>& b, int n, float* out) {
  for (int r = 0; r < rows; ++r) std::copy(b.begin(), b.end(), out + static_cast<size_t>(r) * n);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, k, 1.0f, in, k, w.data(), k,
              1.0f, out, n);
}

// x[r] = LayerNorm(x[r] + add[r]) for each row (add may be null).
void AddLayerNorm(float* x, const float* add, int rows, int n, const std::vector<float>& gamma,
                  const std::vector<float>& beta, float eps) {
  for (int r = 0; r < rows; ++r) {
    float* row = x + static_cast<size_t>(r) * n;
    if (add != nullptr) {
      const float* a = add + static_cast<size_t>(r) * n;
      for (int i = 0; i < n; ++i) row[i] += a[i];
    }
    double mean = 0;
    for (int i = 0; i < n; ++i) mean += row[i];
    mean /= n;
    double var = 0;
    for (int i = 0; i < n; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= n;
    const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
    const float m = static_cast<float>(mean);
    for (int i = 0; i < n; ++i) row[i] = (row[i] - m) * inv * gamma[i] + beta[i];
  }
}

absl::StatusOr<nlohmann::json> ReadJson(FileSystem* fs, const std::string& path) {
  auto text = fs->ReadFileToString(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat(path, ": ", text.status().message()));
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

// Reads an integer field into *v when present. INVALID_ARGUMENT when not a positive integer.
absl::Status ReadPositive(const nlohmann::json& j, const char* key, const std::string& path,
                          int* v) {
  if (!j.contains(key)) return absl::OkStatus();
  if (!j[key].is_number_unsigned() || j[key].get<uint64_t>() == 0 ||
      j[key].get<uint64_t>() > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " must be a positive integer"));
  }
  *v = static_cast<int>(j[key].get<uint64_t>());
  return absl::OkStatus();
}

absl::StatusOr<BertConfig> ReadConfig(FileSystem* fs, const std::string& model_dir) {
  const std::string path = JoinPath(model_dir, "config.json");
  auto j = ReadJson(fs, path);
  if (!j.ok()) return j.status();
  BertConfig c;
  for (auto [key, field] : {std::pair<const char*, int*>{"vocab_size", &c.vocab_size},
                            {"hidden_size", &c.hidden},
                            {"num_hidden_layers", &c.layers},
                            {"num_attention_heads", &c.heads},
                            {"intermediate_size", &c.intermediate},
                            {"max_position_embeddings", &c.max_positions},
                            {"type_vocab_size", &c.type_vocab_size}}) {
    absl::Status s = ReadPositive(*j, key, path, field);
    if (!s.ok()) return s;
  }
  if (j->contains("layer_norm_eps") && (*j)["layer_norm_eps"].is_number()) {
    c.layer_norm_eps = (*j)["layer_norm_eps"].get<float>();
  }
  if (j->contains("hidden_act") && (*j)["hidden_act"] != "gelu") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": hidden_act ", (*j)["hidden_act"].dump(), " (only gelu is supported)"));
  }
  if (j->contains("position_embedding_type") && (*j)["position_embedding_type"] != "absolute") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": only absolute position embeddings are supported"));
  }
  if (c.hidden % c.heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": hidden_size ", c.hidden,
                                                   " is not a multiple of ", c.heads, " heads"));
  }
  const std::string st_path = JoinPath(model_dir, "sentence_bert_config.json");
  if (fs->Exists(st_path)) {
    auto st = ReadJson(fs, st_path);
    if (!st.ok()) return st.status();
    absl::Status s = ReadPositive(*st, "max_seq_length", st_path, &c.max_seq_length);
    if (!s.ok()) return s;
  }
  c.max_seq_length = std::min(c.max_seq_length, c.max_positions);
  return c;
}

}  // namespace

SentenceEncoder::~SentenceEncoder() = default;

absl::StatusOr<std::unique_ptr<SentenceEncoder>> SentenceEncoder::Load(
    FileSystem* fs, const std::string& model_dir) {
  if (!fs->IsDirectory(model_dir)) {
    return absl::NotFoundError(absl::StrCat(
        "sentence-encoder model directory ", model_dir,
        " does not exist (tools/setup.sh extracts all-MiniLM-L6-v2 into .cache/models)"));
  }
  auto encoder = std::unique_ptr<SentenceEncoder>(new SentenceEncoder());
  encoder->model_dir_ = model_dir;
  auto config = ReadConfig(fs, model_dir);
  if (!config.ok()) return config.status();
  const BertConfig& c = encoder->config_ = *config;

  BertTokenizerOptions topts;
  topts.max_length = c.max_seq_length;
  auto tokenizer = BertTokenizer::Load(fs, JoinPath(model_dir, "vocab.txt"), topts);
  if (!tokenizer.ok()) return tokenizer.status();
  encoder->tokenizer_ = std::move(tokenizer).value();
  if (encoder->tokenizer_->vocab_size() != c.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_dir, ": vocab.txt has ", encoder->tokenizer_->vocab_size(),
                     " tokens but config.json says vocab_size ", c.vocab_size));
  }

  auto st = SafeTensorsFile::Open(fs, JoinPath(model_dir, "model.safetensors"));
  if (!st.ok()) return st.status();
  // Some exports prefix every name with "bert.".
  const std::string prefix = (*st)->Has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  absl::Status status;
  auto read = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float>* dst) {
    if (!status.ok()) return;
    auto t = (*st)->ReadFloat(prefix + name, shape);
    if (!t.ok()) {
      status = t.status();
      return;
    }
    *dst = std::move(t).value();
  };
  const int64_t h = c.hidden;
  read("embeddings.word_embeddings.weight", {c.vocab_size, h}, &encoder->word_emb_);
  read("embeddings.position_embeddings.weight", {c.max_positions, h}, &encoder->pos_emb_);
  read("embeddings.token_type_embeddings.weight", {c.type_vocab_size, h}, &encoder->type_emb_);
  read("embeddings.LayerNorm.weight", {h}, &encoder->emb_ln_gamma_);
  read("embeddings.LayerNorm.bias", {h}, &encoder->emb_ln_beta_);
  encoder->layers_.resize(c.layers);
  for (int l = 0; l < c.layers && status.ok(); ++l) {
    Layer& layer = encoder->layers_[l];
    const std::string p = absl::StrCat("encoder.layer.", l, ".");
    std::vector<float> w[3], b[3];
    const char* kQkv[3] = {"query", "key", "value"};
    for (int i = 0; i < 3; ++i) {
      read(absl::StrCat(p, "attention.self.", kQkv[i], ".weight"), {h, h}, &w[i]);
      read(absl::StrCat(p, "attention.self.", kQkv[i], ".bias"), {h}, &b[i]);
    }
    if (!status.ok()) break;
    for (int i = 0; i < 3; ++i) {
      layer.qkv_w.insert(layer.qkv_w.end(), w[i].begin(), w[i].end());
      layer.qkv_b.insert(layer.qkv_b.end(), b[i].begin(), b[i].end());
    }
    read(p + "attention.output.dense.weight", {h, h}, &layer.attn_out_w);
    read(p + "attention.output.dense.bias", {h}, &layer.attn_out_b);
    read(p + "attention.output.LayerNorm.weight", {h}, &layer.ln1_gamma);
    read(p + "attention.output.LayerNorm.bias", {h}, &layer.ln1_beta);
    read(p + "intermediate.dense.weight", {c.intermediate, h}, &layer.inter_w);
    read(p + "intermediate.dense.bias", {c.intermediate}, &layer.inter_b);
    read(p + "output.dense.weight", {h, c.intermediate}, &layer.out_w);
    read(p + "output.dense.bias", {h}, &layer.out_b);
    read(p + "output.LayerNorm.weight", {h}, &layer.ln2_gamma);
    read(p + "output.LayerNorm.bias", {h}, &layer.ln2_beta);
  }
  if (!status.ok()) return status;
  return encoder;
}

void SentenceEncoder::EncodeBatch(const std::vector<std::vector<int32_t>>& ids, Scratch* s,
                                  float* out) const {
  const int h = config_.hidden;
  const int heads = config_.heads;
  const int hd = h / heads;
  const int inter = config_.intermediate;
  // The texts are packed one after another without padding: projections and the FFN run on
  // all tokens at once, attention per text.
  std::vector<int> offsets(ids.size() + 1, 0);
  int max_len = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    offsets[i + 1] = offsets[i] + static_cast<int>(ids[i].size());
    max_len = std::max(max_len, static_cast<int>(ids[i].size()));
  }
  const int tokens = offsets.back();
  const size_t th = static_cast<size_t>(tokens) * h;
  s->x.resize(th);
  s->qkv.resize(th * 3);
  s->ctx.resize(th);
  s->tmp.resize(th);
  s->inter.resize(static_cast<size_t>(tokens) * inter);
  s->scores.resize(static_cast<size_t>(max_len) * max_len);

  for (size_t i = 0; i < ids.size(); ++i) {
    for (size_t p = 0; p < ids[i].size(); ++p) {
      float* row = s->x.data() + static_cast<size_t>(offsets[i] + p) * h;
      const float* we = word_emb_.data() + static_cast<size_t>(ids[i][p]) * h;
      const float* pe = pos_emb_.data() + p * h;
      const float* te = type_emb_.data();
      for (int k = 0; k < h; ++k) row[k] = we[k] + pe[k] + te[k];
    }
  }
  AddLayerNorm(s->x.data(), nullptr, tokens, h, emb_ln_gamma_, emb_ln_beta_,
               config_.layer_norm_eps);

  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (const Layer& layer : layers_) {
    Linear(s->x.data(), tokens, h, layer.qkv_w, layer.qkv_b, 3 * h, s->qkv.data());
    for (size_t i = 0; i < ids.size(); ++i) {
      const int len = offsets[i + 1] - offsets[i];
      const float* base = s->qkv.data() + static_cast<size_t>(offsets[i]) * 3 * h;
      for (int hh = 0; hh < heads; ++hh) {
        const float* q = base + hh * hd;
        const float* k = base + h + hh * hd;
        const float* v = base + 2 * h + hh * hd;
        float* sc = s->scores.data();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, len, hd, scale, q, 3 * h, k,
                    3 * h, 0.0f, sc, len);
        for (int r = 0; r < len; ++r) {
          Eigen::Map<Eigen::ArrayXf> row(sc + static_cast<size_t>(r) * len, len);
          row = (row - row.maxCoeff()).exp();
          row *= 1.0f / row.sum();
        }
        float* ctx = s->ctx.data() + static_cast<size_t>(offsets[i]) * h + hh * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, hd, len, 1.0f, sc, len, v,
                    3 * h, 0.0f, ctx, h);
      }
    }
    Linear(s->ctx.data(), tokens, h, layer.attn_out_w, layer.attn_out_b, h, s->tmp.data());
    AddLayerNorm(s->x.data(), s->tmp.data(), tokens, h, layer.ln1_gamma, layer.ln1_beta,
                 config_.layer_norm_eps);
    Linear(s->x.data(), tokens, h, layer.inter_w, layer.inter_b, inter, s->inter.data());
    Gelu(s->inter.data(), static_cast<int64_t>(s->inter.size()));
    Linear(s->inter.data(), tokens, inter, layer.out_w, layer.out_b, h, s->tmp.data());
    AddLayerNorm(s->x.data(), s->tmp.data(), tokens, h, layer.ln2_gamma, layer.ln2_beta,
                 config_.layer_norm_eps);
  }

  // Mean pooling over each text's tokens (all of them are unmasked), then L2 normalisation
  // with sentence-transformers' floor of 1e-12 on the norm.
  for (size_t i = 0; i < ids.size(); ++i) {
    float* o = out + i * h;
    std::vector<double> acc(h, 0.0);
    for (int t = offsets[i]; t < offsets[i + 1]; ++t) {
      const float* row = s->x.data() + static_cast<size_t>(t) * h;
      for (int k = 0; k < h; ++k) acc[k] += row[k];
    }
    const double n = offsets[i + 1] - offsets[i];
    double norm = 0;
    for (int k = 0; k < h; ++k) {
      acc[k] /= n;
      norm += acc[k] * acc[k];
    }
    const double inv = 1.0 / std::max(std::sqrt(norm), 1e-12);
    for (int k = 0; k < h; ++k) o[k] = static_cast<float>(acc[k] * inv);
  }
}

absl::Status SentenceEncoder::Encode(const std::vector<std::string>& texts, int batch_size,
                                     int threads, float* out) const {
  if (batch_size < 1 || threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Encode: batch_size (", batch_size,
                                                   ") and threads (", threads,
                                                   ") must be positive"));
  }
  const size_t n = texts.size();
  const size_t batches = (n + batch_size - 1) / batch_size;
  std::atomic<size_t> next{0};
  // Each worker takes whole batches in turn; rows land at their texts' positions, so the
  // output order does not depend on scheduling.
  auto work = [&]() {
    Scratch scratch;
    std::vector<std::vector<int32_t>> ids;
    for (size_t b = next.fetch_add(1); b < batches; b = next.fetch_add(1)) {
      const size_t begin = b * batch_size;
      const size_t end = std::min(n, begin + batch_size);
      ids.clear();
      for (size_t i = begin; i < end; ++i) ids.push_back(tokenizer_->Encode(texts[i]));
      EncodeBatch(ids, &scratch, out + begin * config_.hidden);
    }
  };
  const int workers = static_cast<int>(std::min<size_t>(threads, batches));
  if (workers <= 1) {
    work();
    return absl::OkStatus();
  }
  std::vector<std::thread> pool;
  pool.reserve(workers);
  for (int t = 0; t < workers; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  return absl::OkStatus();
}

std::string SentenceEncoder::Identity() const { return absl::StrCat("minilm:", model_dir_); }

absl::StatusOr<EmbeddingMatrix> SentenceEncoder::Embed(const std::vector<std::string>& texts) {
  EmbeddingMatrix m;
  m.rows = static_cast<int64_t>(texts.size());
  m.dim = dim();
  m.values.resize(texts.size() * static_cast<size_t>(m.dim));
  const int batch = static_cast<int>(std::max<size_t>(1, texts.size()));
  absl::Status status = Encode(texts, batch, /*threads=*/1, m.values.data());
  if (!status.ok()) return status;
  return m;
}

}  // namespace choir
