#include "data/row_block.h"

#include <cstring>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "google/protobuf/util/message_differencer.h"

namespace choir::data {
namespace {

bool IsKnownType(FieldType type) {
  return type == INT64 || type == FLOAT || type == INT64_LIST || type == FLOAT_LIST;
}

// Roles that may appear on at most one field.
bool IsUniqueRole(FieldRole role) { return role != FEATURE && role != SEQUENCE; }

// Bitwise equality of two float vectors (so NaNs and -0.0 compare as stored).
bool SameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

void Column::Clear() {
  ints.clear();
  floats.clear();
  offsets.assign(1, 0);
}

RowBlock::RowBlock(const Schema& schema) : schema_(schema) {
  columns_.resize(schema_.fields_size());
  for (int i = 0; i < schema_.fields_size(); ++i) columns_[i].type = schema_.fields(i).type();
}

int RowBlock::FieldIndex(absl::string_view name) const {
  for (int i = 0; i < schema_.fields_size(); ++i) {
    if (schema_.fields(i).name() == name) return i;
  }
  return -1;
}

int RowBlock::RoleIndex(FieldRole role) const {
  for (int i = 0; i < schema_.fields_size(); ++i) {
    if (schema_.fields(i).role() == role) return i;
  }
  return -1;
}

void RowBlock::FinishRow() {
  for (size_t i = 0; i < columns_.size(); ++i) {
    Column& c = columns_[i];
    if (c.is_list()) {
      const size_t n = c.is_int() ? c.ints.size() : c.floats.size();
      CHECK_LE(n, std::numeric_limits<uint32_t>::max())
          << "list column " << schema_.fields(i).name() << " exceeds 2^32 values in one block";
      c.offsets.push_back(static_cast<uint32_t>(n));
    } else {
      const size_t n = c.type == INT64 ? c.ints.size() : c.floats.size();
      CHECK_EQ(n, num_rows_ + 1) << "scalar column " << schema_.fields(i).name()
                                 << " must get exactly one value per row";
    }
  }
  ++num_rows_;
}

absl::Span<const int64_t> RowBlock::IntList(int col, size_t row) const {
  const Column& c = columns_[col];
  return absl::Span<const int64_t>(c.ints.data() + c.offsets[row],
                                   c.offsets[row + 1] - c.offsets[row]);
}

absl::Span<const float> RowBlock::FloatList(int col, size_t row) const {
  const Column& c = columns_[col];
  return absl::Span<const float>(c.floats.data() + c.offsets[row],
                                 c.offsets[row + 1] - c.offsets[row]);
}

absl::Status RowBlock::Validate() const {
  if (columns_.size() != static_cast<size_t>(schema_.fields_size())) {
    return absl::InvalidArgumentError(absl::StrCat("block has ", columns_.size(),
                                                   " columns but its schema has ",
                                                   schema_.fields_size(), " fields"));
  }
  for (size_t i = 0; i < columns_.size(); ++i) {
    const Column& c = columns_[i];
    const std::string& name = schema_.fields(i).name();
    if (c.type != schema_.fields(i).type()) {
      return absl::InvalidArgumentError(
          absl::StrCat("column ", name, " has type ", FieldType_Name(c.type),
                       " but the schema says ", FieldType_Name(schema_.fields(i).type())));
    }
    const bool is_int = c.is_int();
    const size_t values = is_int ? c.ints.size() : c.floats.size();
    const size_t other = is_int ? c.floats.size() : c.ints.size();
    if (other != 0) {
      return absl::DataLossError(
          absl::StrCat("column ", name, " holds ", other, " values of the wrong kind"));
    }
    if (!c.is_list()) {
      if (values != num_rows_) {
        return absl::DataLossError(
            absl::StrCat("column ", name, " has ", values, " values for ", num_rows_, " rows"));
      }
      continue;
    }
    if (c.offsets.size() != num_rows_ + 1) {
      return absl::DataLossError(absl::StrCat("list column ", name, " has ", c.offsets.size(),
                                              " offsets for ", num_rows_, " rows"));
    }
    if (c.offsets[0] != 0) {
      return absl::DataLossError(
          absl::StrCat("list column ", name, " starts at offset ", c.offsets[0], ", not 0"));
    }
    for (size_t r = 0; r < num_rows_; ++r) {
      if (c.offsets[r + 1] < c.offsets[r]) {
        return absl::DataLossError(absl::StrCat("list column ", name, ": offset of row ", r + 1,
                                                " (", c.offsets[r + 1], ") is below row ", r,
                                                "'s (", c.offsets[r], ")"));
      }
    }
    if (c.offsets.back() != values) {
      return absl::DataLossError(absl::StrCat("list column ", name, ": last offset ",
                                              c.offsets.back(), " but ", values, " values"));
    }
  }
  return absl::OkStatus();
}

void RowBlock::Clear() {
  for (Column& c : columns_) c.Clear();
  num_rows_ = 0;
}

bool RowBlock::operator==(const RowBlock& other) const {
  if (num_rows_ != other.num_rows_ || columns_.size() != other.columns_.size()) return false;
  if (!google::protobuf::util::MessageDifferencer::Equals(schema_, other.schema_)) return false;
  for (size_t i = 0; i < columns_.size(); ++i) {
    const Column& a = columns_[i];
    const Column& b = other.columns_[i];
    if (a.type != b.type || a.ints != b.ints || a.offsets != b.offsets ||
        !SameFloats(a.floats, b.floats)) {
      return false;
    }
  }
  return true;
}

Field MakeField(absl::string_view name, FieldType type, FieldRole role, absl::string_view doc) {
  Field field;
  field.set_name(std::string(name));
  field.set_type(type);
  field.set_role(role);
  if (!doc.empty()) field.set_doc(std::string(doc));
  return field;
}

absl::Status ValidateSchema(const Schema& schema) {
  absl::flat_hash_set<std::string> names;
  absl::flat_hash_set<int> roles;
  for (int i = 0; i < schema.fields_size(); ++i) {
    const Field& f = schema.fields(i);
    if (f.name().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("schema field ", i, " has no name"));
    }
    if (!names.insert(f.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("schema has two fields named '", f.name(), "'"));
    }
    if (!IsKnownType(f.type())) {
      return absl::InvalidArgumentError(
          absl::StrCat("schema field '", f.name(), "' has no (or an unknown) type"));
    }
    if (IsUniqueRole(f.role()) && !roles.insert(f.role()).second) {
      return absl::InvalidArgumentError(absl::StrCat("schema has more than one field with role ",
                                                     FieldRole_Name(f.role()), " (second: '",
                                                     f.name(), "')"));
    }
  }
  return absl::OkStatus();
}

}  // namespace choir::data
