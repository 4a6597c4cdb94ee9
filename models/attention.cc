// CPU DIN target attention. Only the valid (unpadded) positions are packed into the attention
// MLP's input, so padded keys never influence anything (not even Dice's batch statistics) and
// padding costs no MLP work.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "glog/logging.h"
#include "models/internal/cpu.h"
#include "models/layers.h"

namespace choir::models {
namespace {

template <typename T>
class CpuTargetAttention : public TargetAttention<T> {
 public:
  CpuTargetAttention(int dim, const AttentionOptions& options, uint64_t seed)
      : dim_(dim),
        softmax_(options.softmax),
        mlp_(&factory_, 4 * dim,
             MlpOptions{options.hidden, 1, options.activation, ActivationKind::kIdentity,
                        options.dice},
             seed) {
    CHECK_GT(dim, 0);
  }

  void Forward(const Tensor<T>& query, const Tensor<T>& keys, absl::Span<const int> lengths,
               Tensor<T>* out) override {
    const int b_size = query.rows();
    const int d = dim_;
    CHECK_EQ(query.cols(), d) << "attention: query width";
    CHECK_EQ(keys.cols(), d) << "attention: key width";
    CHECK_EQ(static_cast<int>(lengths.size()), b_size) << "attention: one length per sample";
    max_len_ = b_size == 0 ? 0 : keys.rows() / b_size;
    CHECK_EQ(keys.rows(), b_size * max_len_) << "attention: keys must be [B * L, d]";
    query_ = query;
    keys_ = keys;
    lengths_.assign(lengths.begin(), lengths.end());

    // Pack [q, k, q - k, q * k] for every valid position.
    valid_.clear();
    for (int b = 0; b < b_size; ++b) {
      CHECK(lengths[b] >= 0 && lengths[b] <= max_len_)
          << "attention: length " << lengths[b] << " of sample " << b << " outside [0, " << max_len_
          << "]";
      for (int j = 0; j < lengths[b]; ++j) valid_.push_back(b * max_len_ + j);
    }
    const int v = static_cast<int>(valid_.size());
    mlp_in_.ResizeUninitialized(v, 4 * d);
    for (int i = 0; i < v; ++i) {
      const T* q = query.row(valid_[i] / max_len_);
      const T* k = keys.row(valid_[i]);
      T* row = mlp_in_.row(i);
      for (int c = 0; c < d; ++c) {
        row[c] = q[c];
        row[d + c] = k[c];
        row[2 * d + c] = q[c] - k[c];
        row[3 * d + c] = q[c] * k[c];
      }
    }
    if (v > 0) mlp_.Forward(mlp_in_, &scores_);

    weights_.Resize(b_size, max_len_);
    for (int i = 0; i < v; ++i) {
      weights_.data()[valid_[i]] = scores_.at(i, 0);
    }
    if (softmax_) {
      for (int b = 0; b < b_size; ++b) {
        if (lengths[b] == 0) continue;
        T* w = weights_.row(b);
        const T top = *std::max_element(w, w + lengths[b]);
        T sum = 0;
        for (int j = 0; j < lengths[b]; ++j) {
          w[j] = std::exp(w[j] - top);
          sum += w[j];
        }
        for (int j = 0; j < lengths[b]; ++j) w[j] /= sum;
      }
    }

    out->Resize(b_size, d);
    for (int b = 0; b < b_size; ++b) {
      T* o = out->row(b);
      for (int j = 0; j < lengths[b]; ++j) {
        const T w = weights_.at(b, j);
        const T* k = keys.row(b * max_len_ + j);
        for (int c = 0; c < d; ++c) o[c] += w * k[c];
      }
    }
  }

  void Backward(const Tensor<T>& dout, Tensor<T>* dquery, Tensor<T>* dkeys) override {
    const int b_size = query_.rows();
    const int d = dim_;
    CHECK_EQ(dout.rows(), b_size);
    CHECK_EQ(dout.cols(), d);
    const int v = static_cast<int>(valid_.size());
    if (dquery != nullptr) dquery->Resize(b_size, d);
    if (dkeys != nullptr) dkeys->Resize(keys_.rows(), d);

    // dL/dweight for every valid position, then dL/dscore (through the softmax if used).
    Tensor<T> dw(b_size, max_len_);
    for (int b = 0; b < b_size; ++b) {
      const T* g = dout.row(b);
      for (int j = 0; j < lengths_[b]; ++j) {
        const T* k = keys_.row(b * max_len_ + j);
        T dot = 0;
        for (int c = 0; c < d; ++c) dot += g[c] * k[c];
        dw.at(b, j) = dot;
        if (dkeys != nullptr) {
          const T w = weights_.at(b, j);
          T* dk = dkeys->row(b * max_len_ + j);
          for (int c = 0; c < d; ++c) dk[c] = w * g[c];
        }
      }
      if (softmax_ && lengths_[b] > 0) {
        T inner = 0;
        for (int j = 0; j < lengths_[b]; ++j) inner += weights_.at(b, j) * dw.at(b, j);
        for (int j = 0; j < lengths_[b]; ++j) {
          dw.at(b, j) = weights_.at(b, j) * (dw.at(b, j) - inner);
        }
      }
    }
    if (v == 0) return;
    dscores_.ResizeUninitialized(v, 1);
    for (int i = 0; i < v; ++i) dscores_.at(i, 0) = dw.data()[valid_[i]];
    const bool need_input = dquery != nullptr || dkeys != nullptr;
    mlp_.Backward(dscores_, need_input ? &dmlp_in_ : nullptr);
    if (!need_input) return;

    // Chain through [q, k, q - k, q * k].
    for (int i = 0; i < v; ++i) {
      const int b = valid_[i] / max_len_;
      const T* q = query_.row(b);
      const T* k = keys_.row(valid_[i]);
      const T* g = dmlp_in_.row(i);
      if (dquery != nullptr) {
        T* dq = dquery->row(b);
        for (int c = 0; c < d; ++c) dq[c] += g[c] + g[2 * d + c] + g[3 * d + c] * k[c];
      }
      if (dkeys != nullptr) {
        T* dk = dkeys->row(valid_[i]);
        for (int c = 0; c < d; ++c) dk[c] += g[d + c] - g[2 * d + c] + g[3 * d + c] * q[c];
      }
    }
  }

  const Tensor<T>& weights() const override { return weights_; }
  std::vector<Param<T>*> Params() override { return mlp_.Params(); }
  std::vector<Tensor<T>*> Buffers() override { return mlp_.Buffers(); }
  void SetTraining(bool training) override { mlp_.SetTraining(training); }

 private:
  int dim_;
  bool softmax_;
  CpuLayerFactory<T> factory_;  // builds mlp_; declared before it
  Mlp<T> mlp_;
  int max_len_ = 0;
  Tensor<T> query_, keys_;
  std::vector<int> lengths_;
  std::vector<int> valid_;  // flat key-row index of each packed position
  Tensor<T> mlp_in_, scores_, weights_, dscores_, dmlp_in_;
};

}  // namespace

namespace internal {

template <typename T>
std::unique_ptr<TargetAttention<T>> NewCpuTargetAttention(int dim, const AttentionOptions& options,
                                                          uint64_t seed) {
  return std::make_unique<CpuTargetAttention<T>>(dim, options, seed);
}

template std::unique_ptr<TargetAttention<float>> NewCpuTargetAttention<float>(
    int, const AttentionOptions&, uint64_t);
template std::unique_ptr<TargetAttention<double>> NewCpuTargetAttention<double>(
    int, const AttentionOptions&, uint64_t);

}  // namespace internal
}  // namespace choir::models
