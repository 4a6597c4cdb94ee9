// The taxonomy and personas the synthetic generator reads (data/proto/taxonomy.proto), loaded,
// validated and compiled into dense per-leaf tables.
#ifndef CHOIR_DATA_TAXONOMY_H_
#define CHOIR_DATA_TAXONOMY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"
#include "data/proto/taxonomy.pb.h"

namespace choir::data {

// The default taxonomy (configs/taxonomy_default.pbtxt, compiled into the binary).
absl::string_view DefaultTaxonomyText();

// Reads a taxonomy in protobuf text format; an empty path gives the default.
absl::StatusOr<Taxonomy> LoadTaxonomy(FileSystem* fs, const std::string& path);

// Dense form. Leaf ids used in data are index + 1 in file order (0 means "none"); L1 ids
// likewise.
struct CompiledTaxonomy {
  struct Leaf {
    std::string name;
    int l1 = 0;  // index into l1_names
    double weight = 1, median_price = 100, price_sigma = 0.6;
    int brands = 12;
  };
  struct Persona {
    std::string name, description;
    double weight = 1, female_prob = 0.5, price_tier = 0.5, price_sensitivity = 1, activity = 1;
    std::vector<double> age_weights;        // 6 buckets
    std::vector<double> city_tier_weights;  // 5 tiers
    std::vector<double> interest;           // per leaf, sums to 1
  };
  Taxonomy proto;
  std::vector<std::string> l1_names;
  std::vector<Leaf> leaves;
  std::vector<Persona> personas;
};

// INVALID_ARGUMENT naming the offending entry: no leaves or personas, duplicate names, an
// interest naming no category, non-positive weights, age/city weights of the wrong length.
absl::StatusOr<CompiledTaxonomy> CompileTaxonomy(const Taxonomy& taxonomy);

}  // namespace choir::data

#endif  // CHOIR_DATA_TAXONOMY_H_
