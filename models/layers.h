// The dense layer library: forward and backward passes of the pieces the dnn, din and ChoirRec
// towers are built from. See docs/models.md for shapes, contracts and tolerances.
//
// Contracts shared by every piece:
//  - Tensors are row-major [batch, features]. Outputs are resized by the callee.
//  - Forward caches what Backward needs; Backward refers to the most recent Forward.
//  - Backward ACCUMULATES parameter gradients into Param::grad (call ZeroGrad() between
//    steps) and OVERWRITES input gradients (dx, dquery, ...). A null input-gradient pointer
//    skips that computation.
//  - Initialisation is a deterministic function of the seed (same seed, same values on every
//    platform).
//
// Backend seam: model code creates every layer through a LayerFactory<T>. CpuLayerFactory
// builds the OpenBLAS implementations; a CUDA factory can return its own implementations of
// the same interfaces without any change to model code.
#ifndef CHOIR_MODELS_LAYERS_H_
#define CHOIR_MODELS_LAYERS_H_

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "models/tensor.h"

namespace choir::models {

// A trainable parameter: value and gradient of the same shape.
template <typename T>
struct Param {
  std::string name;
  Tensor<T> value;
  Tensor<T> grad;
};

// Sets every gradient in `params` to zero.
template <typename T>
void ZeroGrads(const std::vector<Param<T>*>& params) {
  for (Param<T>* p : params) p->grad.Zero();
}

// Total number of scalars in `params`.
template <typename T>
int64_t ParamCount(const std::vector<Param<T>*>& params);
// Flat copies in the order of `params` (for allreduce, broadcast and checkpoints). `dst` and
// `src` hold ParamCount(params) elements.
template <typename T>
void CopyGradsTo(const std::vector<Param<T>*>& params, T* dst);
template <typename T>
void CopyGradsFrom(const std::vector<Param<T>*>& params, const T* src);
template <typename T>
void CopyValuesTo(const std::vector<Param<T>*>& params, T* dst);
template <typename T>
void CopyValuesFrom(const std::vector<Param<T>*>& params, const T* src);

// A single-input, single-output layer.
template <typename T>
class Layer {
 public:
  virtual ~Layer() = default;

  // y = f(x); x is [B, in], y is resized to [B, out].
  virtual void Forward(const Tensor<T>& x, Tensor<T>* y) = 0;
  // Given dy = dL/dy for the last Forward: accumulates parameter gradients and, when dx is not
  // null, writes dx = dL/dx ([B, in]).
  virtual void Backward(const Tensor<T>& dy, Tensor<T>* dx) = 0;
  // The trainable parameters (stable pointers, stable order). Default: none.
  virtual std::vector<Param<T>*> Params() { return {}; }
  // Non-trainable state that a checkpoint must keep (Dice's running mean and variance).
  // Default: none.
  virtual std::vector<Tensor<T>*> Buffers() { return {}; }
  // Training mode (batch statistics) versus evaluation mode (running statistics). Only layers
  // with batch statistics (Dice) behave differently. Default: training.
  virtual void SetTraining(bool training) {}

  void ZeroGrad() { ZeroGrads(Params()); }
};

enum class ActivationKind {
  kIdentity,
  kRelu,
  kSigmoid,
  kTanh,
  kPrelu,  // y = x for x > 0, a_c * x otherwise; a_c learned per feature, initialised to 0.25
  kDice,   // DIN's data-adaptive activation; see Dice below
};

// Parses "identity", "relu", "sigmoid", "tanh", "prelu", "dice"; false when unknown.
bool ParseActivationKind(const std::string& text, ActivationKind* kind);
const char* ActivationKindName(ActivationKind kind);

// Dice (DIN paper): p = sigmoid((x - mean_c) / sqrt(var_c + eps)), y = p * x + (1 - p) * a_c * x,
// with the per-feature mean and (biased) variance of the batch in training mode and running
// averages (running = momentum * running + (1 - momentum) * batch, updated in Forward while
// training) in evaluation mode. a_c is learned, initialised to 0. Backward in training mode
// differentiates through the batch statistics.
struct DiceOptions {
  double eps = 1e-8;
  double momentum = 0.99;
};

struct MlpOptions {
  // Hidden layer widths; each hidden Linear is followed by `activation`.
  std::vector<int> hidden;
  // Width of the final Linear.
  int out = 1;
  ActivationKind activation = ActivationKind::kRelu;
  // Applied after the final Linear (kIdentity: the MLP ends in logits).
  ActivationKind output_activation = ActivationKind::kIdentity;
  DiceOptions dice;  // when either activation is kDice
};

enum class PoolMode {
  kSum,
  kMean,  // an empty bag pools to zeros
};

// Sum or mean of the embedding rows of each bag: [N, d] rows -> [B, d].
template <typename T>
class EmbeddingBagPool {
 public:
  virtual ~EmbeddingBagPool() = default;
  // `lengths` has B entries. With max_len == 0 the rows are packed: bag b owns the next
  // lengths[b] rows and rows.rows() == sum(lengths). With max_len > 0 the rows are padded:
  // bag b owns rows [b * max_len, b * max_len + lengths[b]), rows.rows() == B * max_len and
  // lengths[b] <= max_len; padded rows are ignored. out is resized to [B, d].
  virtual void Forward(const Tensor<T>& rows, absl::Span<const int> lengths, int max_len,
                       Tensor<T>* out) = 0;
  // Writes drows (shape of rows; padded rows get 0) from dout [B, d].
  virtual void Backward(const Tensor<T>& dout, Tensor<T>* drows) = 0;
};

struct AttentionOptions {
  // Hidden widths of the attention MLP over [q, k, q - k, q * k] (output width 1).
  std::vector<int> hidden = {36};
  ActivationKind activation = ActivationKind::kSigmoid;
  DiceOptions dice;  // when activation is kDice
  // false (DIN): weights are the raw MLP scores, masked positions get 0.
  // true: softmax over the valid positions (masked positions get -inf, i.e. weight 0; an
  // all-masked row gives output 0).
  bool softmax = false;
};

// DIN target attention: for sample b with query q_b and keys k_b0..k_b(L-1), of which the
// first lengths[b] are valid, out_b = sum_{j < lengths[b]} w_bj k_bj with
// w_bj = MLP([q_b, k_bj, q_b - k_bj, q_b * k_bj]) (or its softmax over j, see options).
template <typename T>
class TargetAttention {
 public:
  virtual ~TargetAttention() = default;
  // query [B, d]; keys [B * L, d] padded, row b * L + j is position j of sample b; lengths has
  // B entries in [0, L]. out is resized to [B, d].
  virtual void Forward(const Tensor<T>& query, const Tensor<T>& keys, absl::Span<const int> lengths,
                       Tensor<T>* out) = 0;
  // Accumulates the attention MLP's gradients; writes dquery [B, d] and dkeys [B * L, d]
  // (zeros on padded rows) when not null.
  virtual void Backward(const Tensor<T>& dout, Tensor<T>* dquery, Tensor<T>* dkeys) = 0;
  // Attention weights of the last Forward, [B, L] (0 on padded positions).
  virtual const Tensor<T>& weights() const = 0;
  virtual std::vector<Param<T>*> Params() = 0;
  virtual std::vector<Tensor<T>*> Buffers() = 0;
  virtual void SetTraining(bool training) = 0;

  void ZeroGrad() { ZeroGrads(Params()); }
};

// Creates layers for one backend. Model code holds a LayerFactory<float>& and never names a
// concrete layer class, so a CUDA factory can slot in.
template <typename T>
class LayerFactory {
 public:
  virtual ~LayerFactory() = default;
  virtual Device device() const = 0;

  // y = x W + b, W [in, out] Xavier-uniform from `seed`, b = 0. Params "w", "b" ([1, out]).
  virtual std::unique_ptr<Layer<T>> MakeLinear(int in, int out, uint64_t seed) = 0;
  // Element-wise activation over `dim` features (dim matters for PReLU/Dice parameters).
  virtual std::unique_ptr<Layer<T>> MakeActivation(ActivationKind kind, int dim,
                                                   const DiceOptions& dice) = 0;
  // Per-row normalisation over the features: y = gamma * (x - mean) / sqrt(var + eps) + beta,
  // gamma = 1, beta = 0 initially. Params "gamma", "beta" ([1, dim]).
  // eps: 1e-5 is the usual choice.
  virtual std::unique_ptr<Layer<T>> MakeLayerNorm(int dim, double eps) = 0;
  virtual std::unique_ptr<EmbeddingBagPool<T>> MakePool(PoolMode mode) = 0;
  virtual std::unique_ptr<TargetAttention<T>> MakeAttention(int dim,
                                                            const AttentionOptions& options,
                                                            uint64_t seed) = 0;
  // An Mlp (below) whose pieces come from this factory.
  std::unique_ptr<Layer<T>> MakeMlp(int in, const MlpOptions& options, uint64_t seed);
};

// The OpenBLAS implementations.
template <typename T>
class CpuLayerFactory : public LayerFactory<T> {
 public:
  Device device() const override { return Device::kCpu; }
  std::unique_ptr<Layer<T>> MakeLinear(int in, int out, uint64_t seed) override;
  std::unique_ptr<Layer<T>> MakeActivation(ActivationKind kind, int dim,
                                           const DiceOptions& dice) override;
  std::unique_ptr<Layer<T>> MakeLayerNorm(int dim, double eps) override;
  std::unique_ptr<EmbeddingBagPool<T>> MakePool(PoolMode mode) override;
  std::unique_ptr<TargetAttention<T>> MakeAttention(int dim, const AttentionOptions& options,
                                                    uint64_t seed) override;
};

// Linear -> activation -> ... -> Linear(out) [-> output activation], built from a factory, so it
// runs on whichever backend made its pieces. Layer i is seeded with a value derived from
// `seed` and i. Param names are prefixed "l<i>." ("l0.w", "l0.b", "l1.alpha", ...).
template <typename T>
class Mlp : public Layer<T> {
 public:
  Mlp(LayerFactory<T>* factory, int in, const MlpOptions& options, uint64_t seed);

  void Forward(const Tensor<T>& x, Tensor<T>* y) override { ForwardFrom(0, x, y); }
  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override { BackwardTo(0, dy, dx); }
  std::vector<Param<T>*> Params() override;
  std::vector<Tensor<T>*> Buffers() override;
  void SetTraining(bool training) override;

  int in() const { return in_; }
  int out() const { return out_; }

  // For a caller that computes the first Linear itself (the CPU attention does, in a factored
  // form): the first Linear's Params {w, b}; Forward of the layers after it, from that Linear's
  // output x; and Backward through them, writing dx, the gradient of that output. Backward
  // needs the last forward to have been ForwardAfterFirst.
  std::vector<Param<T>*> FirstLinearParams() { return layers_[0]->Params(); }
  void ForwardAfterFirst(const Tensor<T>& x, Tensor<T>* y) { ForwardFrom(1, x, y); }
  void BackwardAfterFirst(const Tensor<T>& dy, Tensor<T>* dx) { BackwardTo(1, dy, dx); }

 private:
  // Layers first.. (Forward) or ..first (Backward, dx: the gradient of layer first's input).
  void ForwardFrom(size_t first, const Tensor<T>& x, Tensor<T>* y);
  void BackwardTo(size_t first, const Tensor<T>& dy, Tensor<T>* dx);

  int in_;
  int out_;
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::vector<Tensor<T>> acts_;  // acts_[i] = output of layers_[i]
  std::vector<Tensor<T>> grads_;
};

// The free functions below run on the device of their inputs (outputs move there); see
// device.h.
//
// Column-wise concatenation: inputs [B, d_i] -> y [B, sum d_i]. All inputs share B.
template <typename T>
void ConcatCols(const std::vector<const Tensor<T>*>& xs, Tensor<T>* y);
// The inverse (and the backward of ConcatCols): splits dy [B, sum widths] into outs[i]
// [B, widths[i]]. A null outs[i] skips that block.
template <typename T>
void SplitCols(const Tensor<T>& y, const std::vector<int>& widths,
               const std::vector<Tensor<T>*>& outs);

// y[:, offset : offset + x.cols()] += x (same rows, same device).
template <typename T>
void AddToCols(const Tensor<T>& x, int offset, Tensor<T>* y);
// dst [B, width] = src[:, offset : offset + width], on src's device.
template <typename T>
void CopyCols(const Tensor<T>& src, int offset, int width, Tensor<T>* dst);

// Weighted binary cross-entropy on logits, numerically stable:
//   bce_i = max(z_i, 0) - z_i * y_i + log(1 + exp(-|z_i|)),
//   loss  = sum_i w_i * bce_i / B   (averaged over the batch size B, not over sum(w)).
// logits [B, 1]; labels B values in [0, 1]; weights B values or empty (all 1). Writes
// dlogits [B, 1] = w_i * (sigmoid(z_i) - y_i) / B when not null, and the unweighted bce_i to
// per_sample when not null (for per-bucket loss statistics). Returns the loss.
template <typename T>
T BinaryCrossEntropy(const Tensor<T>& logits, absl::Span<const T> labels,
                     absl::Span<const T> weights, Tensor<T>* dlogits,
                     std::vector<T>* per_sample = nullptr);

// Numerically stable logistic function: 1 / (1 + e) for x >= 0 and e / (1 + e) otherwise, with
// e = exp(-|x|). Written without a branch: the sign of an activation is a coin toss, and a
// mispredicted branch per element cost more than the exp.
template <typename T>
inline T Sigmoid(T x) {
  const T e = std::exp(-std::abs(x));
  return (x >= 0 ? T(1) : e) / (T(1) + e);
}

}  // namespace choir::models

#endif  // CHOIR_MODELS_LAYERS_H_
