// CUDA embedding-bag pooling and DIN target attention, with the semantics of the CPU versions
// (models/cpu_layers.cc, models/attention.cc).
//
// Sequence lengths arrive on the host: they are validated there, their offsets summed there (one
// pass over the B samples), and both uploaded once per Forward as one int buffer; what is per
// position (the packed list of valid positions, a row's bag) is derived on the GPU. Kernels are
// one thread per output element, or one thread per sample where a sample's positions must be
// combined (softmax, its backward); every sum runs in a fixed order in one thread, so results
// are deterministic and follow the CPU's summation order.
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "glog/logging.h"
#include "models/cuda/cuda.h"
#include "models/cuda/internal/cuda_util.h"
#include "models/layers.h"
#include "models/tensor.h"

namespace choir::models::cuda {
namespace {

using internal::Blocks;
using internal::kThreads;
using internal::Stream;

// Grid-stride loop over [0, n).
#define CHOIR_GRID_STRIDE_LOOP(i, n)                                                     \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// ---------------------------------------------------------------------------------------------
// Pooling kernels.

// out[b, c] = sum_{j < lengths[b]} rows[starts[b] + j, c] (times 1 / lengths[b] for the mean);
// an empty bag gives 0.
template <typename T>
__global__ void PoolForwardKernel(const T* rows, const int* lengths, const int* starts, int bags,
                                  int d, bool mean, T* out) {
  const int64_t n = static_cast<int64_t>(bags) * d;
  CHOIR_GRID_STRIDE_LOOP(i, n) {
    const int b = static_cast<int>(i / d);
    const int c = static_cast<int>(i - static_cast<int64_t>(b) * d);
    const int len = lengths[b];
    const int64_t start = starts[b];
    T sum = 0;
    for (int j = 0; j < len; ++j) sum += rows[(start + j) * d + c];
    if (mean && len > 0) {
      const T inv = T(1) / static_cast<T>(len);
      sum *= inv;
    }
    out[i] = sum;
  }
}

// The bag that owns row r, or -1 for a padded row: padded bags (max_len > 0) hold rows
// [b * max_len, b * max_len + lengths[b]); packed bags (max_len == 0) start at starts[b], in
// increasing order, so the owner is the last bag starting at or before r that is not empty.
__device__ inline int RowBag(int r, const int* lengths, const int* starts, int bags, int max_len) {
  if (max_len > 0) {
    const int b = r / max_len;
    return r - b * max_len < lengths[b] ? b : -1;
  }
  int lo = 0, hi = bags;  // the first bag starting after r is in [lo, hi]
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (starts[mid] <= r) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  // Bags lo - 1, lo - 2, ... start at or before r; empty ones share the next bag's start.
  for (int b = lo - 1; b >= 0; --b) {
    if (lengths[b] > 0) return r < starts[b] + lengths[b] ? b : -1;
  }
  return -1;
}

// drows[r, c] = scale_b * dout[b, c] for the bag b that owns row r, 0 for padded rows.
template <typename T>
__global__ void PoolBackwardKernel(const T* dout, const int* lengths, const int* starts, int bags,
                                   int max_len, int num_rows, int d, bool mean, T* drows) {
  const int64_t n = static_cast<int64_t>(num_rows) * d;
  CHOIR_GRID_STRIDE_LOOP(i, n) {
    const int r = static_cast<int>(i / d);
    const int c = static_cast<int>(i - static_cast<int64_t>(r) * d);
    const int b = RowBag(r, lengths, starts, bags, max_len);
    if (b < 0) {
      drows[i] = T(0);
    } else {
      // A row belongs to a bag only when that bag is non-empty, so lengths[b] > 0 here.
      const T scale = mean ? T(1) / static_cast<T>(lengths[b]) : T(1);
      drows[i] = scale * dout[static_cast<int64_t>(b) * d + c];
    }
  }
}

template <typename T>
class CudaPool : public models::EmbeddingBagPool<T> {
 public:
  explicit CudaPool(models::PoolMode mode) : mode_(mode) {}

  void Forward(const models::Tensor<T>& rows, absl::Span<const int> lengths, int max_len,
               models::Tensor<T>* out) override {
    // Host-side validation, with the CPU's messages.
    CHECK_GE(max_len, 0);
    internal::CheckOnDevice(rows, "pooling rows");
    const int bags = static_cast<int>(lengths.size());
    const int d = rows.cols();
    std::vector<int64_t> starts(bags);
    int64_t next = 0;
    for (int b = 0; b < bags; ++b) {
      CHECK_GE(lengths[b], 0);
      if (max_len > 0) {
        CHECK_LE(lengths[b], max_len) << "bag " << b;
        starts[b] = static_cast<int64_t>(b) * max_len;
      } else {
        starts[b] = next;
        next += lengths[b];
      }
    }
    const int64_t expected = max_len > 0 ? static_cast<int64_t>(bags) * max_len : next;
    CHECK_EQ(rows.rows(), expected) << "pooling: rows do not match the lengths";
    bags_ = bags;
    max_len_ = max_len;
    in_rows_ = rows.rows();
    in_cols_ = d;

    // index_ = [lengths (bags) | starts (bags)]. Every start is at most rows.rows() (an int)
    // once the check above has passed.
    // index_ is ordinary (pageable) memory: the upload has copied it when the call returns, so
    // the next Forward may refill it at once. Pinned memory would need an event first.
    index_.resize(2 * static_cast<size_t>(bags));
    for (int b = 0; b < bags; ++b) {
      index_[b] = lengths[b];
      index_[bags + b] = static_cast<int>(starts[b]);
    }
    const int* device_index = internal::Upload(index_, &index_buffer_);
    lengths_d_ = device_index;
    starts_d_ = device_index + bags;

    out->SetDevice(models::Device::kCuda);
    out->ResizeUninitialized(bags, d);
    const int64_t n = static_cast<int64_t>(bags) * d;
    if (n == 0) return;
    PoolForwardKernel<T><<<Blocks(n), kThreads, 0, Stream()>>>(
        rows.data(), lengths_d_, starts_d_, bags, d, mode_ == models::PoolMode::kMean, out->data());
    CHOIR_CUDA_CHECK_LAUNCH();
  }

  void Backward(const models::Tensor<T>& dout, models::Tensor<T>* drows) override {
    CHECK_EQ(dout.rows(), bags_);
    CHECK_EQ(dout.cols(), in_cols_);
    internal::CheckOnDevice(dout, "pooling dout");
    drows->SetDevice(models::Device::kCuda);
    drows->ResizeUninitialized(in_rows_, in_cols_);
    const int64_t n = static_cast<int64_t>(in_rows_) * in_cols_;
    if (n == 0) return;
    PoolBackwardKernel<T><<<Blocks(n), kThreads, 0, Stream()>>>(
        dout.data(), lengths_d_, starts_d_, bags_, max_len_, in_rows_, in_cols_,
        mode_ == models::PoolMode::kMean, drows->data());
    CHOIR_CUDA_CHECK_LAUNCH();
  }

 private:
  models::PoolMode mode_;
  int bags_ = 0;
  int max_len_ = 0;
  int in_rows_ = 0;
  int in_cols_ = 0;
  std::vector<int> index_;  // host copy of index_buffer_ (see Forward)
  models::Tensor<int> index_buffer_{models::Device::kCuda};
  // Views into index_buffer_, valid after Forward.
  const int* lengths_d_ = nullptr;
  const int* starts_d_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Attention kernels. Notation: B samples, L positions per sample, d features, v valid positions
// in total. valid[i] is the flat key row (b * L + j) of packed position i, in (b, j) order, so
// position j < lengths[b] of sample b is packed position offsets[b] + j.

// valid[offsets[b] + j] = b * L + j for every j < lengths[b] (one thread per (b, j) pair).
__global__ void ValidPositionsKernel(const int* lengths, const int* offsets, int b_size, int max_len,
                                     int* valid) {
  const int64_t n = static_cast<int64_t>(b_size) * max_len;
  CHOIR_GRID_STRIDE_LOOP(i, n) {
    const int b = static_cast<int>(i / max_len);
    const int j = static_cast<int>(i - static_cast<int64_t>(b) * max_len);
    if (j < lengths[b]) valid[offsets[b] + j] = static_cast<int>(i);
  }
}

// mlp_in[i] = [q_b, k_bj, q_b - k_bj, q_b * k_bj] for packed position i (valid[i] = b * L + j).
template <typename T>
__global__ void PackKernel(const T* query, const T* keys, const int* valid, int v, int max_len,
                           int d, T* mlp_in) {
  const int width = 4 * d;
  const int64_t n = static_cast<int64_t>(v) * width;
  CHOIR_GRID_STRIDE_LOOP(e, n) {
    const int i = static_cast<int>(e / width);
    const int col = static_cast<int>(e - static_cast<int64_t>(i) * width);
    const int part = col / d;
    const int c = col - part * d;
    const int64_t row = valid[i];
    const int64_t b = row / max_len;
    const T q = query[b * d + c];
    const T k = keys[row * d + c];
    T value;
    if (part == 0) {
      value = q;
    } else if (part == 1) {
      value = k;
    } else if (part == 2) {
      value = q - k;
    } else {
      value = q * k;
    }
    mlp_in[e] = value;
  }
}

// One thread per sample: weights[b, j] = score (or its softmax over the valid j) for
// j < lengths[b], 0 on padded positions. scores is [v, 1] and only read when v > 0.
template <typename T>
__global__ void WeightsKernel(const T* scores, const int* lengths, const int* offsets, int b_size,
                              int max_len, bool softmax, T* weights) {
  CHOIR_GRID_STRIDE_LOOP(b, b_size) {
    const int len = lengths[b];
    const T* s = scores + (len > 0 ? offsets[b] : 0);
    T* w = weights + b * static_cast<int64_t>(max_len);
    if (softmax && len > 0) {
      T top = s[0];
      for (int j = 1; j < len; ++j) {
        if (s[j] > top) top = s[j];
      }
      T sum = 0;
      for (int j = 0; j < len; ++j) {
        const T e = exp(s[j] - top);
        w[j] = e;
        sum += e;
      }
      for (int j = 0; j < len; ++j) w[j] /= sum;
    } else {
      for (int j = 0; j < len; ++j) w[j] = s[j];
    }
    for (int j = len; j < max_len; ++j) w[j] = T(0);
  }
}

// out[b, c] = sum_{j < lengths[b]} weights[b, j] * keys[b * L + j, c].
template <typename T>
__global__ void WeightedSumKernel(const T* weights, const T* keys, const int* lengths, int b_size,
                                  int max_len, int d, T* out) {
  const int64_t n = static_cast<int64_t>(b_size) * d;
  CHOIR_GRID_STRIDE_LOOP(i, n) {
    const int64_t b = i / d;
    const int c = static_cast<int>(i - b * d);
    const int len = lengths[b];
    T sum = 0;
    for (int j = 0; j < len; ++j) {
      const int64_t row = b * max_len + j;
      sum += weights[row] * keys[row * d + c];
    }
    out[i] = sum;
  }
}

// One thread per sample: dscores[offsets[b] + j] = dL/dscore_bj for j < lengths[b], from
// dL/dweight_bj = <dout_b, k_bj> (through the softmax when used).
template <typename T>
__global__ void ScoreGradKernel(const T* dout, const T* keys, const T* weights, const int* lengths,
                                const int* offsets, int b_size, int max_len, int d, bool softmax,
                                T* dscores) {
  CHOIR_GRID_STRIDE_LOOP(b, b_size) {
    const int len = lengths[b];
    if (len == 0) continue;
    const T* g = dout + b * d;
    const T* w = weights + b * static_cast<int64_t>(max_len);
    T* ds = dscores + offsets[b];
    for (int j = 0; j < len; ++j) {
      const T* k = keys + (b * static_cast<int64_t>(max_len) + j) * d;
      T dot = 0;
      for (int c = 0; c < d; ++c) dot += g[c] * k[c];
      ds[j] = dot;
    }
    if (softmax) {
      T inner = 0;
      for (int j = 0; j < len; ++j) inner += w[j] * ds[j];
      for (int j = 0; j < len; ++j) ds[j] = w[j] * (ds[j] - inner);
    }
  }
}

// dquery[b, c] = sum_{j < lengths[b]} g[c] + g[2d + c] + g[3d + c] * k_bj[c], with g the MLP
// input gradient of packed position offsets[b] + j. dmlp_in is only read when some length > 0.
template <typename T>
__global__ void QueryGradKernel(const T* dmlp_in, const T* keys, const int* lengths,
                                const int* offsets, int b_size, int max_len, int d, T* dquery) {
  const int64_t n = static_cast<int64_t>(b_size) * d;
  CHOIR_GRID_STRIDE_LOOP(i, n) {
    const int64_t b = i / d;
    const int c = static_cast<int>(i - b * d);
    const int len = lengths[b];
    T sum = 0;
    for (int j = 0; j < len; ++j) {
      const T* g = dmlp_in + static_cast<int64_t>(offsets[b] + j) * (4 * d);
      const T k = keys[(b * max_len + j) * d + c];
      sum += g[c] + g[2 * d + c] + g[3 * d + c] * k;
    }
    dquery[i] = sum;
  }
}

// dkeys[b * L + j, c] = w_bj * dout[b, c] + (g[d + c] - g[2d + c] + g[3d + c] * q_b[c]) for
// j < lengths[b] (g as above; the MLP term only when dmlp_in is not null), 0 on padded rows.
template <typename T>
__global__ void KeyGradKernel(const T* dout, const T* weights, const T* dmlp_in, const T* query,
                              const int* lengths, const int* offsets, int b_size, int max_len,
                              int d, T* dkeys) {
  const int64_t n = static_cast<int64_t>(b_size) * max_len * d;
  CHOIR_GRID_STRIDE_LOOP(i, n) {
    const int64_t row = i / d;
    const int c = static_cast<int>(i - row * d);
    const int64_t b = row / max_len;
    const int j = static_cast<int>(row - b * max_len);
    if (j >= lengths[b]) {
      dkeys[i] = T(0);
      continue;
    }
    T dk = weights[row] * dout[b * d + c];
    if (dmlp_in != nullptr) {
      const T* g = dmlp_in + static_cast<int64_t>(offsets[b] + j) * (4 * d);
      dk += g[d + c] - g[2 * d + c] + g[3 * d + c] * query[b * d + c];
    }
    dkeys[i] = dk;
  }
}

#undef CHOIR_GRID_STRIDE_LOOP

template <typename T>
class CudaTargetAttention : public models::TargetAttention<T> {
 public:
  CudaTargetAttention(int dim, const models::AttentionOptions& options, uint64_t seed)
      : dim_(dim),
        softmax_(options.softmax),
        mlp_(&factory_, 4 * dim,
             models::MlpOptions{options.hidden, 1, options.activation,
                                models::ActivationKind::kIdentity, options.dice},
             seed) {
    CHECK_GT(dim, 0);
  }

  void Forward(const models::Tensor<T>& query, const models::Tensor<T>& keys,
               absl::Span<const int> lengths, models::Tensor<T>* out) override {
    const int b_size = query.rows();
    const int d = dim_;
    CHECK_EQ(query.cols(), d) << "attention: query width";
    CHECK_EQ(keys.cols(), d) << "attention: key width";
    CHECK_EQ(static_cast<int>(lengths.size()), b_size) << "attention: one length per sample";
    max_len_ = b_size == 0 ? 0 : keys.rows() / b_size;
    CHECK_EQ(keys.rows(), b_size * max_len_) << "attention: keys must be [B * L, d]";
    internal::CheckOnDevice(query, "attention query");
    internal::CheckOnDevice(keys, "attention keys");
    query_ = query;
    keys_ = keys;

    // index_ = [lengths (B) | offsets (B)], then valid (v) filled on the GPU; see the kernels'
    // notation.
    index_.resize(2 * static_cast<size_t>(b_size));
    int v = 0;
    for (int b = 0; b < b_size; ++b) {
      CHECK(lengths[b] >= 0 && lengths[b] <= max_len_)
          << "attention: length " << lengths[b] << " of sample " << b << " outside [0, " << max_len_
          << "]";
      index_[b] = lengths[b];
      index_[b_size + b] = v;
      v += lengths[b];  // at most keys.rows(), an int
    }
    num_valid_ = v;
    index_buffer_.SetDevice(models::Device::kCuda);
    index_buffer_.ResizeUninitialized(1, 2 * b_size + v);
    int* device_index = index_buffer_.data();
    if (b_size > 0) {
      CHOIR_CUDA_CHECK(cudaMemcpyAsync(device_index, index_.data(), index_.size() * sizeof(int),
                                       cudaMemcpyHostToDevice, Stream()));
    }
    lengths_d_ = device_index;
    offsets_d_ = device_index + b_size;
    int* valid_d = device_index + 2 * static_cast<int64_t>(b_size);
    if (v > 0) {
      const int64_t positions = static_cast<int64_t>(b_size) * max_len_;
      ValidPositionsKernel<<<Blocks(positions), kThreads, 0, Stream()>>>(lengths_d_, offsets_d_, b_size,
                                                                         max_len_, valid_d);
      CHOIR_CUDA_CHECK_LAUNCH();
    }

    // The attention MLP on the packed valid positions only.
    mlp_in_.SetDevice(models::Device::kCuda);
    mlp_in_.ResizeUninitialized(v, 4 * d);
    if (v > 0) {
      const int64_t n = static_cast<int64_t>(v) * 4 * d;
      PackKernel<T><<<Blocks(n), kThreads, 0, Stream()>>>(query.data(), keys.data(), valid_d, v,
                                                          max_len_, d, mlp_in_.data());
      CHOIR_CUDA_CHECK_LAUNCH();
      mlp_.Forward(mlp_in_, &scores_);
      CHECK(scores_.device() == models::Device::kCuda && scores_.rows() == v && scores_.cols() == 1)
          << "attention: the MLP gave a " << scores_.rows() << "x" << scores_.cols() << " "
          << models::DeviceName(scores_.device()) << " score tensor for " << v << " positions";
    }

    weights_.SetDevice(models::Device::kCuda);
    weights_.ResizeUninitialized(b_size, max_len_);
    if (b_size > 0) {
      WeightsKernel<T><<<Blocks(b_size), kThreads, 0, Stream()>>>(
          v > 0 ? scores_.data() : nullptr, lengths_d_, offsets_d_, b_size, max_len_, softmax_,
          weights_.data());
      CHOIR_CUDA_CHECK_LAUNCH();
    }

    out->SetDevice(models::Device::kCuda);
    out->ResizeUninitialized(b_size, d);
    const int64_t n_out = static_cast<int64_t>(b_size) * d;
    if (n_out > 0) {
      WeightedSumKernel<T><<<Blocks(n_out), kThreads, 0, Stream()>>>(
          weights_.data(), keys.data(), lengths_d_, b_size, max_len_, d, out->data());
      CHOIR_CUDA_CHECK_LAUNCH();
    }
  }

  void Backward(const models::Tensor<T>& dout, models::Tensor<T>* dquery,
                models::Tensor<T>* dkeys) override {
    const int b_size = query_.rows();
    const int d = dim_;
    CHECK_EQ(dout.rows(), b_size);
    CHECK_EQ(dout.cols(), d);
    internal::CheckOnDevice(dout, "attention dout");
    const int v = num_valid_;

    // dL/dscore of every valid position, then the MLP's backward (parameter gradients, and the
    // gradient of its input when an input gradient is wanted).
    const bool need_input = dquery != nullptr || dkeys != nullptr;
    if (v > 0) {
      dscores_.SetDevice(models::Device::kCuda);
      dscores_.ResizeUninitialized(v, 1);
      ScoreGradKernel<T><<<Blocks(b_size), kThreads, 0, Stream()>>>(
          dout.data(), keys_.data(), weights_.data(), lengths_d_, offsets_d_, b_size, max_len_, d,
          softmax_, dscores_.data());
      CHOIR_CUDA_CHECK_LAUNCH();
      dmlp_in_.SetDevice(models::Device::kCuda);
      mlp_.Backward(dscores_, need_input ? &dmlp_in_ : nullptr);
      if (need_input) {
        CHECK(dmlp_in_.device() == models::Device::kCuda && dmlp_in_.rows() == v &&
              dmlp_in_.cols() == 4 * d)
            << "attention: the MLP gave a " << dmlp_in_.rows() << "x" << dmlp_in_.cols() << " "
            << models::DeviceName(dmlp_in_.device()) << " input gradient for " << v << " positions";
      }
    }
    // With v == 0 every length is 0: the kernels below write zeros and never read dmlp_in.
    const T* dmlp_in = v > 0 ? dmlp_in_.data() : nullptr;

    if (dquery != nullptr) {
      dquery->SetDevice(models::Device::kCuda);
      dquery->ResizeUninitialized(b_size, d);
      const int64_t n = static_cast<int64_t>(b_size) * d;
      if (n > 0) {
        QueryGradKernel<T><<<Blocks(n), kThreads, 0, Stream()>>>(
            dmlp_in, keys_.data(), lengths_d_, offsets_d_, b_size, max_len_, d, dquery->data());
        CHOIR_CUDA_CHECK_LAUNCH();
      }
    }
    if (dkeys != nullptr) {
      dkeys->SetDevice(models::Device::kCuda);
      dkeys->ResizeUninitialized(keys_.rows(), d);
      const int64_t n = static_cast<int64_t>(keys_.rows()) * d;
      if (n > 0) {
        KeyGradKernel<T><<<Blocks(n), kThreads, 0, Stream()>>>(
            dout.data(), weights_.data(), dmlp_in, query_.data(), lengths_d_, offsets_d_, b_size,
            max_len_, d, dkeys->data());
        CHOIR_CUDA_CHECK_LAUNCH();
      }
    }
  }

  // A GPU tensor: callers that read it on the host copy it first (weights().To(Device::kCpu)).
  const models::Tensor<T>& weights() const override { return weights_; }
  std::vector<models::Param<T>*> Params() override { return mlp_.Params(); }
  std::vector<models::Tensor<T>*> Buffers() override { return mlp_.Buffers(); }
  void SetTraining(bool training) override { mlp_.SetTraining(training); }

 private:
  int dim_;
  bool softmax_;
  CudaLayerFactory<T> factory_;  // builds mlp_; declared before it
  models::Mlp<T> mlp_;
  int max_len_ = 0;
  int num_valid_ = 0;
  std::vector<int> index_;  // host copy of index_buffer_ (see Forward)
  models::Tensor<int> index_buffer_{models::Device::kCuda};
  // Views into index_buffer_, valid after Forward.
  const int* lengths_d_ = nullptr;
  const int* offsets_d_ = nullptr;
  models::Tensor<T> query_{models::Device::kCuda};
  models::Tensor<T> keys_{models::Device::kCuda};
  models::Tensor<T> mlp_in_{models::Device::kCuda};
  models::Tensor<T> scores_{models::Device::kCuda};
  models::Tensor<T> weights_{models::Device::kCuda};
  models::Tensor<T> dscores_{models::Device::kCuda};
  models::Tensor<T> dmlp_in_{models::Device::kCuda};
};

}  // namespace

template <typename T>
std::unique_ptr<models::EmbeddingBagPool<T>> CudaLayerFactory<T>::MakePool(models::PoolMode mode) {
  return std::make_unique<CudaPool<T>>(mode);
}

template <typename T>
std::unique_ptr<models::TargetAttention<T>> CudaLayerFactory<T>::MakeAttention(
    int dim, const models::AttentionOptions& options, uint64_t seed) {
  return std::make_unique<CudaTargetAttention<T>>(dim, options, seed);
}

template std::unique_ptr<models::EmbeddingBagPool<float>> CudaLayerFactory<float>::MakePool(
    models::PoolMode);
template std::unique_ptr<models::EmbeddingBagPool<double>> CudaLayerFactory<double>::MakePool(
    models::PoolMode);
template std::unique_ptr<models::TargetAttention<float>> CudaLayerFactory<float>::MakeAttention(
    int, const models::AttentionOptions&, uint64_t);
template std::unique_ptr<models::TargetAttention<double>> CudaLayerFactory<double>::MakeAttention(
    int, const models::AttentionOptions&, uint64_t);

}  // namespace choir::models::cuda
