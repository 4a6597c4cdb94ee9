#include "models/optimizer.h"

#include <algorithm>
#include <cmath>

#include "glog/logging.h"

namespace choir::models {

double LrSchedule::At(int64_t step) const {
  if (decay_steps <= 0) return lr0;
  const double f = decay_steps == 1 ? 1.0
                                    : static_cast<double>(std::min(step, decay_steps - 1)) /
                                          static_cast<double>(decay_steps - 1);
  if (f >= 1.0) return lr_end;  // exact at and after the last decay step
  switch (kind) {
    case Kind::kLinear:
      return lr0 + (lr_end - lr0) * f;
    case Kind::kExponential:
      return lr0 * std::pow(lr_end / lr0, f);
  }
  return lr0;
}

template <typename T>
void Sgd<T>::Step(const std::vector<Param<T>*>& params) {
  const T lr = static_cast<T>(this->current_lr());
  for (Param<T>* p : params) {
    CHECK(p->value.SameShape(p->grad)) << p->name;
    CHECK(p->value.device() == p->grad.device()) << p->name << ": value and grad on two devices";
    T* w = p->value.data();
    const T* g = p->grad.data();
    if (!p->value.on_host()) {
      GetDeviceBackend(p->value.device())->SgdUpdate(w, g, p->value.size(), lr);
      continue;
    }
    for (int64_t i = 0; i < p->value.size(); ++i) w[i] -= lr * g[i];
  }
  ++this->step_;
}

template <typename T>
void Adagrad<T>::Step(const std::vector<Param<T>*>& params) {
  if (acc_.empty()) {
    for (const Param<T>* p : params) {
      acc_.emplace_back(p->value.device());
      acc_.back().Resize(p->value.rows(), p->value.cols(),
                         static_cast<T>(options_.initial_accumulator));
    }
  }
  CHECK_EQ(acc_.size(), params.size()) << "Adagrad: the parameter list changed between steps";
  const T lr = static_cast<T>(this->current_lr());
  const T eps = static_cast<T>(options_.eps);
  for (size_t i = 0; i < params.size(); ++i) {
    Param<T>* p = params[i];
    CHECK(p->value.SameShape(p->grad)) << p->name;
    CHECK(acc_[i].SameShape(p->value)) << "Adagrad: shape of " << p->name << " changed";
    T* w = p->value.data();
    T* a = acc_[i].data();
    const T* g = p->grad.data();
    CHECK(p->value.device() == p->grad.device() && acc_[i].device() == p->value.device())
        << p->name << ": value, grad and accumulator on two devices";
    if (!p->value.on_host()) {
      GetDeviceBackend(p->value.device())->AdagradUpdate(w, g, a, p->value.size(), lr, eps);
      continue;
    }
    for (int64_t j = 0; j < p->value.size(); ++j) {
      a[j] += g[j] * g[j];
      w[j] -= lr * g[j] / (std::sqrt(a[j]) + eps);
    }
  }
  ++this->step_;
}

template class Sgd<float>;
template class Sgd<double>;
template class Adagrad<float>;
template class Adagrad<double>;

}  // namespace choir::models
