// Dense optimisers for the tower parameters (the sparse embeddings are updated on the
// parameter servers). Step() reads Param::grad and updates Param::value in place; it never
// zeroes the gradients.
#ifndef CHOIR_MODELS_OPTIMIZER_H_
#define CHOIR_MODELS_OPTIMIZER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "models/layers.h"
#include "models/tensor.h"

namespace choir::models {

// Learning rate as a function of the step index t = 0, 1, 2, ... (the t-th call of Step):
//   decay_steps == 0: lr0 at every step (no decay);
//   otherwise, with N = decay_steps and f = min(t, N - 1) / (N - 1) (f = 1 when N == 1):
//     kLinear:      lr0 + (lr_end - lr0) * f
//     kExponential: lr0 * (lr_end / lr0)^f
//   so step 0 uses lr0, step N - 1 uses exactly lr_end, later steps stay at lr_end.
// The paper's schedule is lr0 = 0.01 -> lr_end = 0.001.
struct LrSchedule {
  enum class Kind { kLinear, kExponential };
  double lr0 = 0.01;
  double lr_end = 0.001;
  int64_t decay_steps = 0;
  Kind kind = Kind::kLinear;

  double At(int64_t step) const;
};

template <typename T>
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update of every param from its grad with the learning rate lr(step()), then step()++.
  // Every call must pass the same params in the same order (state is kept by position).
  virtual void Step(const std::vector<Param<T>*>& params) = 0;

  // Number of Step calls so far; settable to resume from a checkpoint.
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }
  const LrSchedule& schedule() const { return schedule_; }
  // The learning rate the next Step will use.
  double current_lr() const { return schedule_.At(step_); }

 protected:
  explicit Optimizer(const LrSchedule& schedule) : schedule_(schedule) {}
  LrSchedule schedule_;
  int64_t step_ = 0;
};

// w -= lr * g.
template <typename T>
class Sgd : public Optimizer<T> {
 public:
  explicit Sgd(const LrSchedule& schedule) : Optimizer<T>(schedule) {}
  void Step(const std::vector<Param<T>*>& params) override;
};

struct AdagradOptions {
  LrSchedule schedule;
  // Starting value of every accumulator (TensorFlow's default, which DIN-era code used).
  double initial_accumulator = 0.1;
  // Added to sqrt(acc) in the denominator.
  double eps = 1e-10;
};

// acc += g * g;  w -= lr * g / (sqrt(acc) + eps).
template <typename T>
class Adagrad : public Optimizer<T> {
 public:
  explicit Adagrad(const AdagradOptions& options)
      : Optimizer<T>(options.schedule), options_(options) {}
  void Step(const std::vector<Param<T>*>& params) override;

  // Accumulators, one per param in Step's order (empty before the first Step); mutable for
  // checkpoint restore (then shapes must match the params).
  std::vector<Tensor<T>>& accumulators() { return acc_; }

 private:
  AdagradOptions options_;
  std::vector<Tensor<T>> acc_;
};

}  // namespace choir::models

#endif  // CHOIR_MODELS_OPTIMIZER_H_
