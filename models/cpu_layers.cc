// CPU implementations of the single-input layers and of embedding-bag pooling, and the
// CpuLayerFactory that hands them out. gemm goes to OpenBLAS, the sigmoid's exp to Eigen's
// vectorised arrays; everything else is plain loops (written so that they vectorise at -O3).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "Eigen/Core"
#include "glog/logging.h"
#include "models/internal/blas.h"
#include "models/internal/cpu.h"
#include "models/layers.h"

namespace choir::models {
namespace {

using internal::Gemm;

// Uniform in [-limit, limit) from a seeded mt19937_64 with our own transform, so values do not
// depend on the standard library's distributions.
template <typename T>
void UniformFill(uint64_t seed, double limit, Tensor<T>* t) {
  std::mt19937_64 rng(seed);
  T* p = t->data();
  for (int64_t i = 0; i < t->size(); ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;  // [0, 1)
    p[i] = static_cast<T>(-limit + 2.0 * limit * u);
  }
}

template <typename T>
void CheckCols(const Tensor<T>& x, int cols, const char* what) {
  CHECK_EQ(x.cols(), cols) << what << ": input has " << x.cols() << " features, layer expects "
                           << cols;
}

// out[i] = Sigmoid(in[i]) (layers.h's formula, (x >= 0 ? 1 : e) / (1 + e) with e = exp(-|x|)),
// with Eigen's vectorised exp: within a few ulp of std::exp, except that it clamps its argument
// (float: at -88.7), so results below the smallest normal number come out near it instead of
// smaller or 0. The scalar loop's libm calls were most of the attention MLP's time. In blocks:
// e goes to a buffer in L1, then a plain loop the compiler vectorises (at -O3) combines it
// with x; in may equal out.
template <typename T>
void SigmoidArray(const T* in, int64_t n, T* out) {
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  constexpr int64_t kBlock = 1024;
  T e[kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t m = std::min(kBlock, n - start);
    const T* x = in + start;
    Eigen::Map<Array>(e, m) = (-Eigen::Map<const Array>(x, m).abs()).exp();
    T* y = out + start;
    for (int64_t i = 0; i < m; ++i) y[i] = (x[i] >= 0 ? T(1) : e[i]) / (T(1) + e[i]);
  }
}

template <typename T>
class Linear : public Layer<T> {
 public:
  Linear(int in, int out, uint64_t seed) : in_(in), out_(out) {
    CHECK_GT(in, 0);
    CHECK_GT(out, 0);
    w_.name = "w";
    w_.value.Resize(in, out);
    w_.grad.Resize(in, out);
    UniformFill(seed, std::sqrt(6.0 / (in + out)), &w_.value);
    b_.name = "b";
    b_.value.Resize(1, out);
    b_.grad.Resize(1, out);
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckCols(x, in_, "Linear");
    x_ = x;
    const int n = x.rows();
    y->ResizeUninitialized(n, out_);
    for (int r = 0; r < n; ++r) {
      std::copy(b_.value.data(), b_.value.data() + out_, y->row(r));
    }
    Gemm(false, false, n, out_, in_, T(1), x.data(), w_.value.data(), T(1), y->data());
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    const int n = x_.rows();
    CHECK_EQ(dy.rows(), n);
    CheckCols(dy, out_, "Linear backward");
    Gemm(true, false, in_, out_, n, T(1), x_.data(), dy.data(), T(1), w_.grad.data());
    T* db = b_.grad.data();
    for (int r = 0; r < n; ++r) {
      const T* g = dy.row(r);
      for (int c = 0; c < out_; ++c) db[c] += g[c];
    }
    if (dx != nullptr) {
      dx->ResizeUninitialized(n, in_);
      Gemm(false, true, n, in_, out_, T(1), dy.data(), w_.value.data(), T(0), dx->data());
    }
  }

  std::vector<Param<T>*> Params() override { return {&w_, &b_}; }

 private:
  int in_;
  int out_;
  Param<T> w_;
  Param<T> b_;
  Tensor<T> x_;
};

// Element-wise activations without parameters; `y_` or `x_` is cached, whichever the
// derivative needs.
template <typename T>
class Pointwise : public Layer<T> {
 public:
  Pointwise(ActivationKind kind, int dim) : kind_(kind), dim_(dim) {}

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckCols(x, dim_, ActivationKindName(kind_));
    y->ResizeUninitialized(x.rows(), x.cols());
    const T* in = x.data();
    T* out = y->data();
    const int64_t n = x.size();
    switch (kind_) {
      case ActivationKind::kIdentity:
        std::copy(in, in + n, out);
        break;
      case ActivationKind::kRelu:
        for (int64_t i = 0; i < n; ++i) out[i] = in[i] > 0 ? in[i] : T(0);
        break;
      case ActivationKind::kSigmoid:
        SigmoidArray(in, n, out);
        break;
      case ActivationKind::kTanh:
        for (int64_t i = 0; i < n; ++i) out[i] = std::tanh(in[i]);
        break;
      default:
        LOG(FATAL) << "not a pointwise activation";
    }
    y_ = *y;
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CHECK(dy.SameShape(y_)) << "activation backward: dy shape differs from the forward output";
    if (dx == nullptr) return;
    dx->ResizeUninitialized(dy.rows(), dy.cols());
    const T* g = dy.data();
    const T* y = y_.data();
    T* out = dx->data();
    const int64_t n = dy.size();
    switch (kind_) {
      case ActivationKind::kIdentity:
        std::copy(g, g + n, out);
        break;
      case ActivationKind::kRelu:
        for (int64_t i = 0; i < n; ++i) {
          const T gi = g[i];  // read unconditionally, so the loop vectorises
          out[i] = y[i] > 0 ? gi : T(0);
        }
        break;
      case ActivationKind::kSigmoid:
        for (int64_t i = 0; i < n; ++i) out[i] = g[i] * y[i] * (T(1) - y[i]);
        break;
      case ActivationKind::kTanh:
        for (int64_t i = 0; i < n; ++i) out[i] = g[i] * (T(1) - y[i] * y[i]);
        break;
      default:
        LOG(FATAL) << "not a pointwise activation";
    }
  }

 private:
  ActivationKind kind_;
  int dim_;
  Tensor<T> y_;
};

// y = x (x > 0), alpha_c * x otherwise.
template <typename T>
class Prelu : public Layer<T> {
 public:
  explicit Prelu(int dim) : dim_(dim) {
    alpha_.name = "alpha";
    alpha_.value.Resize(1, dim, T(0.25));
    alpha_.grad.Resize(1, dim);
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckCols(x, dim_, "prelu");
    x_ = x;
    y->ResizeUninitialized(x.rows(), dim_);
    const T* a = alpha_.value.data();
    for (int r = 0; r < x.rows(); ++r) {
      const T* in = x.row(r);
      T* out = y->row(r);
      for (int c = 0; c < dim_; ++c) out[c] = in[c] > 0 ? in[c] : a[c] * in[c];
    }
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CHECK(dy.SameShape(x_)) << "prelu backward: dy shape differs from the forward input";
    const T* a = alpha_.value.data();
    T* da = alpha_.grad.data();
    if (dx != nullptr) dx->ResizeUninitialized(dy.rows(), dim_);
    for (int r = 0; r < dy.rows(); ++r) {
      const T* in = x_.row(r);
      const T* g = dy.row(r);
      for (int c = 0; c < dim_; ++c) {
        if (in[c] <= 0) da[c] += g[c] * in[c];
      }
      if (dx != nullptr) {
        T* out = dx->row(r);
        for (int c = 0; c < dim_; ++c) out[c] = in[c] > 0 ? g[c] : a[c] * g[c];
      }
    }
  }

  std::vector<Param<T>*> Params() override { return {&alpha_}; }

 private:
  int dim_;
  Param<T> alpha_;
  Tensor<T> x_;
};

// DIN's Dice: y = x * (alpha + (1 - alpha) * p), p = sigmoid((x - mean) / sqrt(var + eps)).
template <typename T>
class Dice : public Layer<T> {
 public:
  Dice(int dim, const DiceOptions& options) : dim_(dim), options_(options) {
    alpha_.name = "alpha";
    alpha_.value.Resize(1, dim);
    alpha_.grad.Resize(1, dim);
    running_mean_.Resize(1, dim);
    running_var_.Resize(1, dim, T(1));
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckCols(x, dim_, "dice");
    const int n = x.rows();
    x_ = x;
    used_batch_stats_ = training_ && n > 0;
    mean_.Resize(1, dim_);
    inv_std_.Resize(1, dim_);
    if (used_batch_stats_) {
      Tensor<T> var(1, dim_);
      for (int r = 0; r < n; ++r) {
        for (int c = 0; c < dim_; ++c) mean_.at(0, c) += x.at(r, c);
      }
      for (int c = 0; c < dim_; ++c) mean_.at(0, c) /= n;
      for (int r = 0; r < n; ++r) {
        for (int c = 0; c < dim_; ++c) {
          const T d = x.at(r, c) - mean_.at(0, c);
          var.at(0, c) += d * d;
        }
      }
      const T m = static_cast<T>(options_.momentum);
      for (int c = 0; c < dim_; ++c) {
        var.at(0, c) /= n;
        inv_std_.at(0, c) = T(1) / std::sqrt(var.at(0, c) + static_cast<T>(options_.eps));
        running_mean_.at(0, c) = m * running_mean_.at(0, c) + (T(1) - m) * mean_.at(0, c);
        running_var_.at(0, c) = m * running_var_.at(0, c) + (T(1) - m) * var.at(0, c);
      }
    } else {
      for (int c = 0; c < dim_; ++c) {
        mean_.at(0, c) = running_mean_.at(0, c);
        inv_std_.at(0, c) = T(1) / std::sqrt(running_var_.at(0, c) + static_cast<T>(options_.eps));
      }
    }
    xhat_.ResizeUninitialized(n, dim_);
    p_.ResizeUninitialized(n, dim_);
    y->ResizeUninitialized(n, dim_);
    const T* a = alpha_.value.data();
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < dim_; ++c) {
        const T xh = (x.at(r, c) - mean_.at(0, c)) * inv_std_.at(0, c);
        const T p = Sigmoid(xh);
        xhat_.at(r, c) = xh;
        p_.at(r, c) = p;
        y->at(r, c) = x.at(r, c) * (a[c] + (T(1) - a[c]) * p);
      }
    }
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CHECK(dy.SameShape(x_)) << "dice backward: dy shape differs from the forward input";
    const int n = dy.rows();
    const T* a = alpha_.value.data();
    T* da = alpha_.grad.data();
    // h = dL/dxhat; the batch-norm style reduction turns it into dL/dx through the statistics.
    Tensor<T> h(n, dim_);
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < dim_; ++c) {
        const T g = dy.at(r, c);
        const T x = x_.at(r, c);
        const T p = p_.at(r, c);
        da[c] += g * x * (T(1) - p);
        h.at(r, c) = g * x * (T(1) - a[c]) * p * (T(1) - p);
      }
    }
    if (dx == nullptr) return;
    dx->ResizeUninitialized(n, dim_);
    std::vector<T> mean_h(dim_, T(0));
    std::vector<T> mean_hx(dim_, T(0));
    if (used_batch_stats_) {
      for (int r = 0; r < n; ++r) {
        for (int c = 0; c < dim_; ++c) {
          mean_h[c] += h.at(r, c);
          mean_hx[c] += h.at(r, c) * xhat_.at(r, c);
        }
      }
      for (int c = 0; c < dim_; ++c) {
        mean_h[c] /= n;
        mean_hx[c] /= n;
      }
    }
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < dim_; ++c) {
        const T direct = dy.at(r, c) * (a[c] + (T(1) - a[c]) * p_.at(r, c));
        const T via_hat =
            (h.at(r, c) - mean_h[c] - xhat_.at(r, c) * mean_hx[c]) * inv_std_.at(0, c);
        dx->at(r, c) = direct + via_hat;
      }
    }
  }

  std::vector<Param<T>*> Params() override { return {&alpha_}; }
  std::vector<Tensor<T>*> Buffers() override { return {&running_mean_, &running_var_}; }
  void SetTraining(bool training) override { training_ = training; }

 private:
  int dim_;
  DiceOptions options_;
  bool training_ = true;
  bool used_batch_stats_ = true;
  Param<T> alpha_;
  Tensor<T> running_mean_;
  Tensor<T> running_var_;
  Tensor<T> x_, xhat_, p_, mean_, inv_std_;
};

template <typename T>
class LayerNorm : public Layer<T> {
 public:
  LayerNorm(int dim, double eps) : dim_(dim), eps_(static_cast<T>(eps)) {
    CHECK_GT(dim, 0);
    gamma_.name = "gamma";
    gamma_.value.Resize(1, dim, T(1));
    gamma_.grad.Resize(1, dim);
    beta_.name = "beta";
    beta_.value.Resize(1, dim);
    beta_.grad.Resize(1, dim);
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckCols(x, dim_, "LayerNorm");
    const int n = x.rows();
    xhat_.ResizeUninitialized(n, dim_);
    inv_std_.assign(n, T(0));
    y->ResizeUninitialized(n, dim_);
    for (int r = 0; r < n; ++r) {
      const T* in = x.row(r);
      T mean = 0;
      for (int c = 0; c < dim_; ++c) mean += in[c];
      mean /= dim_;
      T var = 0;
      for (int c = 0; c < dim_; ++c) var += (in[c] - mean) * (in[c] - mean);
      var /= dim_;
      const T inv = T(1) / std::sqrt(var + eps_);
      inv_std_[r] = inv;
      T* xh = xhat_.row(r);
      T* out = y->row(r);
      for (int c = 0; c < dim_; ++c) {
        xh[c] = (in[c] - mean) * inv;
        out[c] = gamma_.value.at(0, c) * xh[c] + beta_.value.at(0, c);
      }
    }
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CHECK(dy.SameShape(xhat_)) << "LayerNorm backward: dy shape differs from the forward input";
    const int n = dy.rows();
    if (dx != nullptr) dx->ResizeUninitialized(n, dim_);
    std::vector<T> dxhat(dim_);
    for (int r = 0; r < n; ++r) {
      const T* g = dy.row(r);
      const T* xh = xhat_.row(r);
      T mean_d = 0;
      T mean_dx = 0;
      for (int c = 0; c < dim_; ++c) {
        gamma_.grad.at(0, c) += g[c] * xh[c];
        beta_.grad.at(0, c) += g[c];
        dxhat[c] = g[c] * gamma_.value.at(0, c);
        mean_d += dxhat[c];
        mean_dx += dxhat[c] * xh[c];
      }
      if (dx == nullptr) continue;
      mean_d /= dim_;
      mean_dx /= dim_;
      T* out = dx->row(r);
      for (int c = 0; c < dim_; ++c) {
        out[c] = (dxhat[c] - mean_d - xh[c] * mean_dx) * inv_std_[r];
      }
    }
  }

  std::vector<Param<T>*> Params() override { return {&gamma_, &beta_}; }

 private:
  int dim_;
  T eps_;
  Param<T> gamma_;
  Param<T> beta_;
  Tensor<T> xhat_;
  std::vector<T> inv_std_;
};

template <typename T>
class CpuPool : public EmbeddingBagPool<T> {
 public:
  explicit CpuPool(PoolMode mode) : mode_(mode) {}

  void Forward(const Tensor<T>& rows, absl::Span<const int> lengths, int max_len,
               Tensor<T>* out) override {
    CHECK_GE(max_len, 0);
    const int bags = static_cast<int>(lengths.size());
    const int d = rows.cols();
    starts_.resize(bags);
    lengths_.assign(lengths.begin(), lengths.end());
    int64_t next = 0;
    for (int b = 0; b < bags; ++b) {
      CHECK_GE(lengths[b], 0);
      if (max_len > 0) {
        CHECK_LE(lengths[b], max_len) << "bag " << b;
        starts_[b] = static_cast<int64_t>(b) * max_len;
      } else {
        starts_[b] = next;
        next += lengths[b];
      }
    }
    const int64_t expected = max_len > 0 ? static_cast<int64_t>(bags) * max_len : next;
    CHECK_EQ(rows.rows(), expected) << "pooling: rows do not match the lengths";
    in_rows_ = rows.rows();
    in_cols_ = d;
    out->Resize(bags, d);
    for (int b = 0; b < bags; ++b) {
      T* o = out->row(b);
      for (int j = 0; j < lengths[b]; ++j) {
        const T* in = rows.row(static_cast<int>(starts_[b] + j));
        for (int c = 0; c < d; ++c) o[c] += in[c];
      }
      if (mode_ == PoolMode::kMean && lengths[b] > 0) {
        const T inv = T(1) / lengths[b];
        for (int c = 0; c < d; ++c) o[c] *= inv;
      }
    }
  }

  void Backward(const Tensor<T>& dout, Tensor<T>* drows) override {
    const int bags = static_cast<int>(lengths_.size());
    CHECK_EQ(dout.rows(), bags);
    CHECK_EQ(dout.cols(), in_cols_);
    drows->Resize(in_rows_, in_cols_);
    for (int b = 0; b < bags; ++b) {
      if (lengths_[b] == 0) continue;
      const T scale = mode_ == PoolMode::kMean ? T(1) / lengths_[b] : T(1);
      const T* g = dout.row(b);
      for (int j = 0; j < lengths_[b]; ++j) {
        T* o = drows->row(static_cast<int>(starts_[b] + j));
        for (int c = 0; c < in_cols_; ++c) o[c] = scale * g[c];
      }
    }
  }

 private:
  PoolMode mode_;
  std::vector<int64_t> starts_;
  std::vector<int> lengths_;
  int in_rows_ = 0;
  int in_cols_ = 0;
};

}  // namespace

template <typename T>
std::unique_ptr<Layer<T>> CpuLayerFactory<T>::MakeLinear(int in, int out, uint64_t seed) {
  return std::make_unique<Linear<T>>(in, out, seed);
}

template <typename T>
std::unique_ptr<Layer<T>> CpuLayerFactory<T>::MakeActivation(ActivationKind kind, int dim,
                                                             const DiceOptions& dice) {
  switch (kind) {
    case ActivationKind::kPrelu:
      return std::make_unique<Prelu<T>>(dim);
    case ActivationKind::kDice:
      return std::make_unique<Dice<T>>(dim, dice);
    default:
      return std::make_unique<Pointwise<T>>(kind, dim);
  }
}

template <typename T>
std::unique_ptr<Layer<T>> CpuLayerFactory<T>::MakeLayerNorm(int dim, double eps) {
  return std::make_unique<LayerNorm<T>>(dim, eps);
}

template <typename T>
std::unique_ptr<EmbeddingBagPool<T>> CpuLayerFactory<T>::MakePool(PoolMode mode) {
  return std::make_unique<CpuPool<T>>(mode);
}

template <typename T>
std::unique_ptr<TargetAttention<T>> CpuLayerFactory<T>::MakeAttention(
    int dim, const AttentionOptions& options, uint64_t seed) {
  return internal::NewCpuTargetAttention<T>(dim, options, seed);
}

template class CpuLayerFactory<float>;
template class CpuLayerFactory<double>;

}  // namespace choir::models
