#include "data/taxonomy.h"

#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/status.h"

namespace choir::data {
namespace internal {
extern const char kDefaultTaxonomyText[];
}  // namespace internal

absl::string_view DefaultTaxonomyText() { return internal::kDefaultTaxonomyText; }

absl::StatusOr<Taxonomy> LoadTaxonomy(FileSystem* fs, const std::string& path) {
  Taxonomy taxonomy;
  if (path.empty()) {
    RETURN_IF_ERROR(ParseTextProto(DefaultTaxonomyText(), "<default taxonomy>", &taxonomy));
    return taxonomy;
  }
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  RETURN_IF_ERROR(ParseTextProto(text, path, &taxonomy));
  return taxonomy;
}

namespace {

constexpr int kMaxBrandsPerLeaf = 100000;

bool Positive(double x) { return x > 0 && std::isfinite(x); }

absl::Status CheckWeights(const std::vector<double>& w, size_t want, absl::string_view what) {
  if (w.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected ", want, " values, got ", w.size()));
  }
  double sum = 0;
  for (double x : w) {
    if (!(x >= 0) || !std::isfinite(x)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": weights must be finite and >= 0"));
    }
    sum += x;
  }
  if (sum <= 0) return absl::InvalidArgumentError(absl::StrCat(what, ": all weights are zero"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompiledTaxonomy> CompileTaxonomy(const Taxonomy& taxonomy) {
  CompiledTaxonomy out;
  out.proto = taxonomy;
  absl::flat_hash_map<std::string, int> leaf_index;
  absl::flat_hash_map<std::string, int> l1_index;
  for (const L1Category& l1 : taxonomy.categories()) {
    if (l1.name().empty()) return absl::InvalidArgumentError("taxonomy: an L1 category has no name");
    if (l1.leaves_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat("taxonomy: L1 '", l1.name(), "' has no leaves"));
    }
    if (!l1_index.emplace(l1.name(), out.l1_names.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("taxonomy: duplicate L1 '", l1.name(), "'"));
    }
    out.l1_names.push_back(l1.name());
    for (const LeafCategory& leaf : l1.leaves()) {
      if (leaf.name().empty() || leaf_index.contains(leaf.name()) || l1_index.contains(leaf.name()) ||
          (leaf.name() == l1.name())) {
        return absl::InvalidArgumentError(
            absl::StrCat("taxonomy: leaf '", leaf.name(), "' in '", l1.name(),
                         "' is empty or not unique among category names"));
      }
      if (!Positive(leaf.weight()) || !Positive(leaf.median_price()) || !Positive(leaf.price_sigma()) ||
          leaf.price_sigma() > 5 || leaf.brands() < 1 || leaf.brands() > kMaxBrandsPerLeaf) {
        return absl::InvalidArgumentError(absl::StrCat(
            "taxonomy: leaf '", leaf.name(), "' needs finite weight and median_price > 0, price_sigma in (0, 5] and brands in [1, ",
            kMaxBrandsPerLeaf, "]"));
      }
      leaf_index[leaf.name()] = out.leaves.size();
      CompiledTaxonomy::Leaf l;
      l.name = leaf.name();
      l.l1 = out.l1_names.size() - 1;
      l.weight = leaf.weight();
      l.median_price = leaf.median_price();
      l.price_sigma = leaf.price_sigma();
      l.brands = leaf.brands();
      out.leaves.push_back(l);
    }
  }
  if (out.leaves.empty()) return absl::InvalidArgumentError("taxonomy: no categories");
  if (taxonomy.personas_size() == 0) return absl::InvalidArgumentError("taxonomy: no personas");

  absl::flat_hash_set<std::string> persona_names;
  for (const Persona& p : taxonomy.personas()) {
    const std::string where = absl::StrCat("taxonomy: persona '", p.name(), "'");
    if (p.name().empty() || !persona_names.insert(p.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": empty or duplicate name"));
    }
    CompiledTaxonomy::Persona c;
    c.name = p.name();
    c.description = p.description();
    c.weight = p.weight();
    c.female_prob = p.female_prob();
    c.price_tier = p.price_tier();
    c.price_sensitivity = p.price_sensitivity();
    c.activity = p.activity();
    if (!Positive(c.weight) || !Positive(c.activity) || !std::isfinite(c.price_sensitivity) || !(c.female_prob >= 0 && c.female_prob <= 1) ||
        !(c.price_tier >= 0 && c.price_tier <= 1) || !(c.price_sensitivity >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": weight and activity must be > 0, female_prob and price_tier in [0,1], "
                 "price_sensitivity >= 0"));
    }
    c.age_weights.assign(p.age_weights().begin(), p.age_weights().end());
    RETURN_IF_ERROR(CheckWeights(c.age_weights, 6, absl::StrCat(where, " age_weights")));
    c.city_tier_weights.assign(p.city_tier_weights().begin(), p.city_tier_weights().end());
    if (c.city_tier_weights.empty()) c.city_tier_weights.assign(5, 1.0);
    RETURN_IF_ERROR(CheckWeights(c.city_tier_weights, 5, absl::StrCat(where, " city_tier_weights")));
    if (p.interests_size() == 0) return absl::InvalidArgumentError(absl::StrCat(where, ": no interests"));
    c.interest.assign(out.leaves.size(), 0.0);
    for (const Interest& in : p.interests()) {
      if (!Positive(in.weight())) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": interest '", in.category(), "' needs weight > 0"));
      }
      if (auto it = leaf_index.find(in.category()); it != leaf_index.end()) {
        c.interest[it->second] += in.weight();
      } else if (auto l1 = l1_index.find(in.category()); l1 != l1_index.end()) {
        int n = 0;
        for (const auto& leaf : out.leaves) n += leaf.l1 == l1->second;
        for (size_t i = 0; i < out.leaves.size(); ++i) {
          if (out.leaves[i].l1 == l1->second) c.interest[i] += in.weight() / n;
        }
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": interest '", in.category(), "' names no category"));
      }
    }
    double sum = 0;
    for (double x : c.interest) sum += x;
    for (double& x : c.interest) x /= sum;
    out.personas.push_back(std::move(c));
  }
  return out;
}

}  // namespace choir::data
