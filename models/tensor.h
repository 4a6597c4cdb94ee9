// A small dense tensor for the layer library: row-major 2-D [rows, cols] (batch x features),
// owning its storage. T is float for training and double for gradient checks.
//
// Only host memory exists today (Device::kCpu). The tag lets a CUDA tensor be added later
// without changing the layer interfaces: a layer checks the device of what it is handed.
#ifndef CHOIR_MODELS_TENSOR_H_
#define CHOIR_MODELS_TENSOR_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "glog/logging.h"

namespace choir::models {

enum class Device { kCpu };

template <typename T>
class Tensor {
 public:
  Tensor() = default;
  // A rows x cols tensor with every element `fill`.
  Tensor(int rows, int cols, T fill = T(0)) { Resize(rows, cols, fill); }

  int rows() const { return rows_; }
  int cols() const { return cols_; }
  int64_t size() const { return static_cast<int64_t>(rows_) * cols_; }
  bool empty() const { return size() == 0; }
  Device device() const { return Device::kCpu; }

  T* data() { return data_.data(); }
  const T* data() const { return data_.data(); }
  T* row(int r) { return data_.data() + static_cast<int64_t>(r) * cols_; }
  const T* row(int r) const { return data_.data() + static_cast<int64_t>(r) * cols_; }
  // Bounds are checked in debug builds only.
  T& at(int r, int c) {
    DCHECK(r >= 0 && r < rows_ && c >= 0 && c < cols_) << r << "," << c;
    return data_[static_cast<int64_t>(r) * cols_ + c];
  }
  const T& at(int r, int c) const {
    DCHECK(r >= 0 && r < rows_ && c >= 0 && c < cols_) << r << "," << c;
    return data_[static_cast<int64_t>(r) * cols_ + c];
  }

  // Changes the shape, keeping the allocation when it is large enough; every element becomes
  // `fill`.
  void Resize(int rows, int cols, T fill = T(0)) {
    CHECK_GE(rows, 0);
    CHECK_GE(cols, 0);
    rows_ = rows;
    cols_ = cols;
    // Product of the unsigned values: the compiler then sees a bound below the maximum object
    // size (GCC 12 -O3 warns on the signed product otherwise).
    data_.assign(static_cast<size_t>(static_cast<unsigned>(rows)) * static_cast<unsigned>(cols), fill);
  }
  // Changes the shape without initialising: values are whatever the storage held. For outputs
  // that the caller overwrites completely.
  void ResizeUninitialized(int rows, int cols) {
    CHECK_GE(rows, 0);
    CHECK_GE(cols, 0);
    rows_ = rows;
    cols_ = cols;
    data_.resize(static_cast<size_t>(static_cast<unsigned>(rows)) * static_cast<unsigned>(cols));
  }
  void Fill(T value) { std::fill(data_.begin(), data_.end(), value); }
  void Zero() { Fill(T(0)); }
  bool SameShape(const Tensor& other) const { return rows_ == other.rows_ && cols_ == other.cols_; }

 private:
  int rows_ = 0;
  int cols_ = 0;
  std::vector<T> data_;
};

}  // namespace choir::models

#endif  // CHOIR_MODELS_TENSOR_H_
