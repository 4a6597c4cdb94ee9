// Backend-neutral pieces of the layer library: parameter helpers, Mlp, concat/split and the
// loss.
#include "models/layers.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "glog/logging.h"
#include "models/internal/cpu.h"

namespace choir::models {

template <typename T>
int64_t ParamCount(const std::vector<Param<T>*>& params) {
  int64_t n = 0;
  for (const Param<T>* p : params) n += p->value.size();
  return n;
}

namespace {
// Copies n values between a host buffer and a tensor's storage on any device.
template <typename T>
void ToHostBuffer(const Tensor<T>& t, T* dst) {
  if (t.on_host()) {
    std::copy_n(t.data(), t.size(), dst);
  } else if (t.size() > 0) {
    GetDeviceBackend(t.device())->CopyToHost(dst, t.data(), t.size() * sizeof(T));
  }
}
template <typename T>
void FromHostBuffer(const T* src, Tensor<T>* t) {
  if (t->on_host()) {
    std::copy_n(src, t->size(), t->data());
  } else if (t->size() > 0) {
    GetDeviceBackend(t->device())->CopyToDevice(t->data(), src, t->size() * sizeof(T));
  }
}
}  // namespace

template <typename T>
void CopyGradsTo(const std::vector<Param<T>*>& params, T* dst) {
  for (const Param<T>* p : params) {
    ToHostBuffer(p->grad, dst);
    dst += p->grad.size();
  }
}

template <typename T>
void CopyGradsFrom(const std::vector<Param<T>*>& params, const T* src) {
  for (Param<T>* p : params) {
    FromHostBuffer(src, &p->grad);
    src += p->grad.size();
  }
}

template <typename T>
void CopyValuesTo(const std::vector<Param<T>*>& params, T* dst) {
  for (const Param<T>* p : params) {
    ToHostBuffer(p->value, dst);
    dst += p->value.size();
  }
}

template <typename T>
void CopyValuesFrom(const std::vector<Param<T>*>& params, const T* src) {
  for (Param<T>* p : params) {
    FromHostBuffer(src, &p->value);
    src += p->value.size();
  }
}

namespace {
constexpr struct {
  ActivationKind kind;
  const char* name;
} kActivationNames[] = {
    {ActivationKind::kIdentity, "identity"}, {ActivationKind::kRelu, "relu"},
    {ActivationKind::kSigmoid, "sigmoid"},   {ActivationKind::kTanh, "tanh"},
    {ActivationKind::kPrelu, "prelu"},       {ActivationKind::kDice, "dice"},
};
}  // namespace

bool ParseActivationKind(const std::string& text, ActivationKind* kind) {
  for (const auto& entry : kActivationNames) {
    if (text == entry.name) {
      *kind = entry.kind;
      return true;
    }
  }
  return false;
}

const char* ActivationKindName(ActivationKind kind) {
  for (const auto& entry : kActivationNames) {
    if (kind == entry.kind) return entry.name;
  }
  return "unknown";
}

template <typename T>
std::unique_ptr<Layer<T>> LayerFactory<T>::MakeMlp(int in, const MlpOptions& options,
                                                   uint64_t seed) {
  return std::make_unique<Mlp<T>>(this, in, options, seed);
}

template <typename T>
Mlp<T>::Mlp(LayerFactory<T>* factory, int in, const MlpOptions& options, uint64_t seed)
    : in_(in), out_(options.out) {
  CHECK_GT(in, 0);
  CHECK_GT(options.out, 0);
  int width = in;
  int linear_index = 0;
  for (int h : options.hidden) {
    CHECK_GT(h, 0);
    layers_.push_back(factory->MakeLinear(width, h, internal::MixSeed(seed, linear_index++)));
    layers_.push_back(factory->MakeActivation(options.activation, h, options.dice));
    width = h;
  }
  layers_.push_back(
      factory->MakeLinear(width, options.out, internal::MixSeed(seed, linear_index++)));
  if (options.output_activation != ActivationKind::kIdentity) {
    layers_.push_back(
        factory->MakeActivation(options.output_activation, options.out, options.dice));
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    for (Param<T>* p : layers_[i]->Params()) p->name = "l" + std::to_string(i) + "." + p->name;
  }
  acts_.resize(layers_.size());
  grads_.resize(layers_.size());
}

template <typename T>
void Mlp<T>::ForwardFrom(size_t first, const Tensor<T>& x, Tensor<T>* y) {
  const size_t n = layers_.size();
  if (first == n) {  // nothing after the first Linear
    *y = x;
    return;
  }
  for (size_t i = first; i < n; ++i) {
    const Tensor<T>& in = i == first ? x : acts_[i - 1];
    layers_[i]->Forward(in, i + 1 == n ? y : &acts_[i]);
  }
}

template <typename T>
void Mlp<T>::BackwardTo(size_t first, const Tensor<T>& dy, Tensor<T>* dx) {
  const size_t n = layers_.size();
  if (first == n) {
    if (dx != nullptr) *dx = dy;
    return;
  }
  for (size_t i = n; i-- > first;) {
    const Tensor<T>& g = i + 1 == n ? dy : grads_[i + 1];
    layers_[i]->Backward(g, i == first ? dx : &grads_[i]);
  }
}

template <typename T>
std::vector<Param<T>*> Mlp<T>::Params() {
  std::vector<Param<T>*> all;
  for (auto& layer : layers_) {
    for (Param<T>* p : layer->Params()) all.push_back(p);
  }
  return all;
}

template <typename T>
std::vector<Tensor<T>*> Mlp<T>::Buffers() {
  std::vector<Tensor<T>*> all;
  for (auto& layer : layers_) {
    for (Tensor<T>* b : layer->Buffers()) all.push_back(b);
  }
  return all;
}

template <typename T>
void Mlp<T>::SetTraining(bool training) {
  for (auto& layer : layers_) layer->SetTraining(training);
}

template <typename T>
void ConcatCols(const std::vector<const Tensor<T>*>& xs, Tensor<T>* y) {
  CHECK(!xs.empty());
  const Device device = xs[0]->device();
  for (const Tensor<T>* x : xs) CHECK(x->device() == device) << "ConcatCols: inputs on two devices";
  y->SetDevice(device);
  if (device != Device::kCpu) return GetDeviceBackend(device)->ConcatCols(xs, y);
  const int n = xs[0]->rows();
  int width = 0;
  for (const Tensor<T>* x : xs) {
    CHECK_EQ(x->rows(), n) << "ConcatCols: inputs differ in batch size";
    width += x->cols();
  }
  y->ResizeUninitialized(n, width);
  for (int r = 0; r < n; ++r) {
    T* out = y->row(r);
    for (const Tensor<T>* x : xs) out = std::copy(x->row(r), x->row(r) + x->cols(), out);
  }
}

template <typename T>
void SplitCols(const Tensor<T>& y, const std::vector<int>& widths,
               const std::vector<Tensor<T>*>& outs) {
  CHECK_EQ(widths.size(), outs.size());
  int total = 0;
  for (int w : widths) total += w;
  CHECK_EQ(total, y.cols()) << "SplitCols: widths do not add up to the input width";
  for (Tensor<T>* out : outs) {
    if (out != nullptr) out->SetDevice(y.device());
  }
  if (y.device() != Device::kCpu) return GetDeviceBackend(y.device())->SplitCols(y, widths, outs);
  const int n = y.rows();
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i] != nullptr) outs[i]->ResizeUninitialized(n, widths[i]);
  }
  for (int r = 0; r < n; ++r) {
    const T* in = y.row(r);
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i] != nullptr) std::copy(in, in + widths[i], outs[i]->row(r));
      in += widths[i];
    }
  }
}

template <typename T>
T BinaryCrossEntropy(const Tensor<T>& logits, absl::Span<const T> labels,
                     absl::Span<const T> weights, Tensor<T>* dlogits, std::vector<T>* per_sample) {
  CHECK_EQ(logits.cols(), 1) << "BinaryCrossEntropy: logits must be [B, 1]";
  const int n = logits.rows();
  CHECK_EQ(static_cast<int>(labels.size()), n);
  CHECK(weights.empty() || static_cast<int>(weights.size()) == n);
  if (dlogits != nullptr) dlogits->SetDevice(logits.device());
  if (logits.device() != Device::kCpu) {
    return GetDeviceBackend(logits.device())
        ->BinaryCrossEntropy(logits, labels, weights, dlogits, per_sample);
  }
  if (dlogits != nullptr) dlogits->ResizeUninitialized(n, 1);
  if (per_sample != nullptr) per_sample->resize(n);
  if (n == 0) return T(0);
  const T inv_n = T(1) / n;
  T total = 0;
  for (int i = 0; i < n; ++i) {
    const T z = logits.at(i, 0);
    const T y = labels[i];
    const T w = weights.empty() ? T(1) : weights[i];
    const T bce = std::max(z, T(0)) - z * y + std::log1p(std::exp(-std::abs(z)));
    total += w * bce;
    if (per_sample != nullptr) (*per_sample)[i] = bce;
    if (dlogits != nullptr) dlogits->at(i, 0) = w * (Sigmoid(z) - y) * inv_n;
  }
  return total * inv_n;
}

template <typename T>
void AddToCols(const Tensor<T>& x, int offset, Tensor<T>* y) {
  CHECK(x.rows() == y->rows() && offset >= 0 && offset + x.cols() <= y->cols())
      << "AddToCols: a " << x.rows() << "x" << x.cols() << " block at column " << offset
      << " of a " << y->rows() << "x" << y->cols() << " tensor";
  CHECK(x.device() == y->device()) << "AddToCols: tensors on two devices";
  if (x.device() != Device::kCpu) return GetDeviceBackend(x.device())->AddToCols(x, offset, y);
  for (int b = 0; b < x.rows(); ++b) {
    const T* src = x.row(b);
    T* dst = y->row(b) + offset;
    for (int k = 0; k < x.cols(); ++k) dst[k] += src[k];
  }
}

template <typename T>
void CopyCols(const Tensor<T>& src, int offset, int width, Tensor<T>* dst) {
  CHECK(offset >= 0 && width >= 0 && offset + width <= src.cols())
      << "CopyCols: columns [" << offset << ", " << offset + width << ") of a " << src.cols()
      << "-column tensor";
  dst->SetDevice(src.device());
  if (src.device() != Device::kCpu) {
    return GetDeviceBackend(src.device())->CopyCols(src, offset, width, dst);
  }
  dst->ResizeUninitialized(src.rows(), width);
  for (int b = 0; b < src.rows(); ++b) std::copy_n(src.row(b) + offset, width, dst->row(b));
}

#define CHOIR_INSTANTIATE(T)                                                                   \
  template int64_t ParamCount<T>(const std::vector<Param<T>*>&);                               \
  template void CopyGradsTo<T>(const std::vector<Param<T>*>&, T*);                             \
  template void CopyGradsFrom<T>(const std::vector<Param<T>*>&, const T*);                     \
  template void CopyValuesTo<T>(const std::vector<Param<T>*>&, T*);                            \
  template void CopyValuesFrom<T>(const std::vector<Param<T>*>&, const T*);                    \
  template class LayerFactory<T>;                                                              \
  template class Mlp<T>;                                                                       \
  template void ConcatCols<T>(const std::vector<const Tensor<T>*>&, Tensor<T>*);               \
  template void SplitCols<T>(const Tensor<T>&, const std::vector<int>&,                        \
                             const std::vector<Tensor<T>*>&);                                  \
  template T BinaryCrossEntropy<T>(const Tensor<T>&, absl::Span<const T>, absl::Span<const T>, \
                                   Tensor<T>*, std::vector<T>*);                                \
  template void AddToCols<T>(const Tensor<T>&, int, Tensor<T>*);                                  \
  template void CopyCols<T>(const Tensor<T>&, int, int, Tensor<T>*);

CHOIR_INSTANTIATE(float)
CHOIR_INSTANTIATE(double)
#undef CHOIR_INSTANTIATE

}  // namespace choir::models
