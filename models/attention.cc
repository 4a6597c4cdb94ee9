// CPU DIN target attention. Only the valid (unpadded) positions are packed into the attention
// MLP's input, so padded keys never influence anything (not even Dice's batch statistics) and
// padding costs no MLP work. The MLP's first Linear is computed in a factored form (see
// Forward) with the same parameters, so a checkpoint does not know the difference.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "glog/logging.h"
#include "models/internal/blas.h"
#include "models/internal/cpu.h"
#include "models/layers.h"

namespace choir::models {
namespace {

using internal::Gemm;

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
    const std::vector<Param<T>*> first = mlp_.FirstLinearParams();
    CHECK_EQ(first.size(), 2u);
    w_ = first[0];
    b_ = first[1];
    CHECK_EQ(w_->value.rows(), 4 * dim);
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
    key_rows_ = keys.rows();
    lengths_.assign(lengths.begin(), lengths.end());

    valid_.clear();
    for (int b = 0; b < b_size; ++b) {
      CHECK(lengths[b] >= 0 && lengths[b] <= max_len_)
          << "attention: length " << lengths[b] << " of sample " << b << " outside [0, " << max_len_
          << "]";
      for (int j = 0; j < lengths[b]; ++j) valid_.push_back(b * max_len_ + j);
    }
    const int v = static_cast<int>(valid_.size());
    // The first layer, [q, k, q - k, q * k] W + b, as q (Wq + Wd) + [k, q * k] [Wk - Wd; Wp] + b:
    // the query's part once per sample, and half the width per key.
    SplitFirstLayer();
    const int h = w_->value.cols();
    pairs_.ResizeUninitialized(v, 2 * d);
    for (int i = 0; i < v; ++i) {
      const T* q = query.row(valid_[i] / max_len_);
      const T* k = keys.row(valid_[i]);
      T* row = pairs_.row(i);
      for (int c = 0; c < d; ++c) {
        row[c] = k[c];
        row[d + c] = q[c] * k[c];
      }
    }
    if (v > 0) {
      query_part_.ResizeUninitialized(b_size, h);
      Gemm(false, false, b_size, h, d, T(1), query.data(), w_query_.data(), T(0),
           query_part_.data());
      hidden_.ResizeUninitialized(v, h);
      Gemm(false, false, v, h, 2 * d, T(1), pairs_.data(), w_pairs_.data(), T(0), hidden_.data());
      const T* bias = b_->value.data();
      for (int i = 0; i < v; ++i) {
        const T* qp = query_part_.row(valid_[i] / max_len_);
        T* row = hidden_.row(i);
        for (int c = 0; c < h; ++c) row[c] += qp[c] + bias[c];
      }
      mlp_.ForwardAfterFirst(hidden_, &scores_);
    }

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
    for (int i = 0; i < v; ++i) {
      const T w = weights_.data()[valid_[i]];
      const T* k = pairs_.row(i);
      T* o = out->row(valid_[i] / max_len_);
      for (int c = 0; c < d; ++c) o[c] += w * k[c];
    }
  }

  void Backward(const Tensor<T>& dout, Tensor<T>* dquery, Tensor<T>* dkeys) override {
    const int b_size = query_.rows();
    const int d = dim_;
    CHECK_EQ(dout.rows(), b_size);
    CHECK_EQ(dout.cols(), d);
    const int v = static_cast<int>(valid_.size());
    if (dquery != nullptr) dquery->Resize(b_size, d);
    if (dkeys != nullptr) dkeys->Resize(key_rows_, d);

    // dL/dweight for every valid position, then dL/dscore (through the softmax if used).
    Tensor<T> dw(b_size, max_len_);
    for (int i = 0; i < v; ++i) {
      const T* g = dout.row(valid_[i] / max_len_);
      const T* k = pairs_.row(i);
      T dot = 0;
      for (int c = 0; c < d; ++c) dot += g[c] * k[c];
      dw.data()[valid_[i]] = dot;
      if (dkeys != nullptr) {
        const T w = weights_.data()[valid_[i]];
        T* dk = dkeys->row(valid_[i]);
        for (int c = 0; c < d; ++c) dk[c] = w * g[c];
      }
    }
    if (softmax_) {
      for (int b = 0; b < b_size; ++b) {
        if (lengths_[b] == 0) continue;
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
    mlp_.BackwardAfterFirst(dscores_, &dhidden_);

    // The first layer's gradients. With G = dL/dhidden and S_b = sum over sample b's positions
    // of G: dWq = Q^T S, dWk = K^T G, dWd = Q^T S - K^T G, dWp = (Q * K)^T G, db = sum G.
    const int h = w_->value.cols();
    query_sums_.Resize(b_size, h);
    T* db = b_->grad.data();
    for (int i = 0; i < v; ++i) {
      const T* g = dhidden_.row(i);
      T* sum = query_sums_.row(valid_[i] / max_len_);
      for (int c = 0; c < h; ++c) {
        sum[c] += g[c];
        db[c] += g[c];
      }
    }
    query_grad_.ResizeUninitialized(d, h);
    Gemm(true, false, d, h, b_size, T(1), query_.data(), query_sums_.data(), T(0),
         query_grad_.data());
    pairs_grad_.ResizeUninitialized(2 * d, h);
    Gemm(true, false, 2 * d, h, v, T(1), pairs_.data(), dhidden_.data(), T(0), pairs_grad_.data());
    for (int r = 0; r < d; ++r) {
      const T* qs = query_grad_.row(r);
      const T* ks = pairs_grad_.row(r);
      const T* ps = pairs_grad_.row(d + r);
      T* gq = w_->grad.row(r);
      T* gk = w_->grad.row(d + r);
      T* gd = w_->grad.row(2 * d + r);
      T* gp = w_->grad.row(3 * d + r);
      for (int c = 0; c < h; ++c) {
        gq[c] += qs[c];
        gk[c] += ks[c];
        gd[c] += qs[c] - ks[c];
        gp[c] += ps[c];
      }
    }
    if (dquery == nullptr && dkeys == nullptr) return;

    // Inputs: dq_b = S_b (Wq + Wd)^T + sum_j (G_bj Wp^T) * k_bj and
    // dk_bj = G_bj (Wk - Wd)^T + (G_bj Wp^T) * q_b, from dpairs = G [Wk - Wd; Wp]^T.
    dpairs_.ResizeUninitialized(v, 2 * d);
    Gemm(false, true, v, 2 * d, h, T(1), dhidden_.data(), w_pairs_.data(), T(0), dpairs_.data());
    if (dquery != nullptr) {
      Gemm(false, true, b_size, d, h, T(1), query_sums_.data(), w_query_.data(), T(0),
           dquery->data());
    }
    for (int i = 0; i < v; ++i) {
      const int b = valid_[i] / max_len_;
      const T* q = query_.row(b);
      const T* k = pairs_.row(i);
      const T* g = dpairs_.row(i);
      if (dquery != nullptr) {
        T* dq = dquery->row(b);
        for (int c = 0; c < d; ++c) dq[c] += g[d + c] * k[c];
      }
      if (dkeys != nullptr) {
        T* dk = dkeys->row(valid_[i]);
        for (int c = 0; c < d; ++c) dk[c] += g[c] + g[d + c] * q[c];
      }
    }
  }

  const Tensor<T>& weights() const override { return weights_; }
  std::vector<Param<T>*> Params() override { return mlp_.Params(); }
  std::vector<Tensor<T>*> Buffers() override { return mlp_.Buffers(); }
  void SetTraining(bool training) override { mlp_.SetTraining(training); }

 private:
  // w_query_ = Wq + Wd [d, h] and w_pairs_ = [Wk - Wd; Wp] [2d, h] from W's four row blocks
  // [Wq; Wk; Wd; Wp] (the rows that multiply q, k, q - k and q * k).
  void SplitFirstLayer() {
    const int d = dim_;
    const int h = w_->value.cols();
    w_query_.ResizeUninitialized(d, h);
    w_pairs_.ResizeUninitialized(2 * d, h);
    for (int r = 0; r < d; ++r) {
      const T* wq = w_->value.row(r);
      const T* wk = w_->value.row(d + r);
      const T* wd = w_->value.row(2 * d + r);
      const T* wp = w_->value.row(3 * d + r);
      T* a = w_query_.row(r);
      T* ck = w_pairs_.row(r);
      T* cp = w_pairs_.row(d + r);
      for (int c = 0; c < h; ++c) {
        a[c] = wq[c] + wd[c];
        ck[c] = wk[c] - wd[c];
        cp[c] = wp[c];
      }
    }
  }

  int dim_;
  bool softmax_;
  CpuLayerFactory<T> factory_;  // builds mlp_; declared before it
  Mlp<T> mlp_;
  Param<T>* w_ = nullptr;  // mlp_'s first Linear, [4d, h] and [1, h]
  Param<T>* b_ = nullptr;
  int max_len_ = 0;
  int key_rows_ = 0;
  Tensor<T> query_;
  std::vector<int> lengths_;
  std::vector<int> valid_;  // flat key-row index of each packed position
  Tensor<T> w_query_, w_pairs_;
  Tensor<T> pairs_;  // [k, q * k] per valid position
  Tensor<T> query_part_, hidden_, scores_, weights_, dscores_, dhidden_;
  Tensor<T> query_sums_, query_grad_, pairs_grad_, dpairs_;
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
