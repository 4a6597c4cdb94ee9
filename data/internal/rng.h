// A small deterministic random source for the generator. std::mt19937_64 is bit-exact across
// standard libraries and the transforms below are ours (std::*_distribution is
// implementation-defined), so a seed gives the same data wherever the math library's exp/log/
// cos agree (glibc on x86-64 for the tests).
#ifndef CHOIR_DATA_INTERNAL_RNG_H_
#define CHOIR_DATA_INTERNAL_RNG_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace choir::data::internal {

// SplitMix64: decorrelates nearby seeds (user 7 and user 8 get unrelated streams).
inline uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline constexpr double kPi = 3.14159265358979323846;

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(Mix64(seed)) {}
  Rng(uint64_t seed, uint64_t stream) : engine_(Mix64(Mix64(seed) ^ Mix64(stream + 0x51ED27))) {}

  uint64_t Next() { return engine_(); }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return (engine_() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n).
  uint64_t Below(uint64_t n) { return static_cast<uint64_t>(Uniform() * n); }
  bool Bernoulli(double p) { return Uniform() < p; }
  // Standard normal (Box-Muller; one value per call for simplicity).
  double Normal() {
    double u1 = Uniform();
    while (u1 <= 1e-300) u1 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * Uniform());
  }
  double Exponential() { return -std::log1p(-Uniform()); }
  // Poisson: Knuth's method below 30, a rounded normal approximation above.
  int64_t Poisson(double mean) {
    if (mean <= 0) return 0;
    if (mean < 30) {
      const double limit = std::exp(-mean);
      double p = Uniform();
      int64_t k = 0;
      while (p > limit) {
        p *= Uniform();
        ++k;
      }
      return k;
    }
    return std::max<int64_t>(0, std::llround(mean + std::sqrt(mean) * Normal()));
  }
  // Index drawn from a cumulative weight table (last entry = total).
  size_t FromCumulative(const std::vector<double>& cumulative) {
    const double x = Uniform() * cumulative.back();
    return std::min<size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), x) - cumulative.begin(),
                            cumulative.size() - 1);
  }

 private:
  std::mt19937_64 engine_;
};

inline std::vector<double> Cumulative(const std::vector<double>& w) {
  std::vector<double> c(w.size());
  double s = 0;
  for (size_t i = 0; i < w.size(); ++i) c[i] = (s += w[i]);
  return c;
}

}  // namespace choir::data::internal

#endif  // CHOIR_DATA_INTERNAL_RNG_H_
