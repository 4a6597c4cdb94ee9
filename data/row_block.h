// RowBlock: a batch of rows of one schema, stored column by column. The unit that shard files
// store (one block per RowBlock written) and that readers return.
#ifndef CHOIR_DATA_ROW_BLOCK_H_
#define CHOIR_DATA_ROW_BLOCK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "data/proto/shard.pb.h"

namespace choir::data {

// One column. Scalar columns hold one value per row in `ints` (INT64) or `floats` (FLOAT).
// List columns hold all rows' values back to back in `ints`/`floats` and `offsets` with
// num_rows + 1 entries (offsets[0] == 0; row r is [offsets[r], offsets[r+1])).
struct Column {
  FieldType type = FIELD_TYPE_UNSPECIFIED;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::vector<uint32_t> offsets{0};

  bool is_list() const { return type == INT64_LIST || type == FLOAT_LIST; }
  // True when the values live in `ints` (INT64, INT64_LIST), false for `floats`.
  bool is_int() const { return type == INT64 || type == INT64_LIST; }
  void Clear();
};

class RowBlock {
 public:
  RowBlock() = default;
  explicit RowBlock(const Schema& schema);

  const Schema& schema() const { return schema_; }
  size_t num_columns() const { return columns_.size(); }
  size_t num_rows() const { return num_rows_; }
  // Index of the field named `name`, or -1.
  int FieldIndex(absl::string_view name) const;
  // Index of the first field with `role`, or -1.
  int RoleIndex(FieldRole role) const;

  Column& column(int i) { return columns_[i]; }
  const Column& column(int i) const { return columns_[i]; }

  // Row-wise appending: set every column's value for the new row, then FinishRow().
  void AppendInt(int col, int64_t v) { columns_[col].ints.push_back(v); }
  void AppendFloat(int col, float v) { columns_[col].floats.push_back(v); }
  // Appends one list value to the current row of a list column.
  void AppendListInt(int col, int64_t v) { columns_[col].ints.push_back(v); }
  void AppendListFloat(int col, float v) { columns_[col].floats.push_back(v); }
  // Closes the current row: list columns record their offsets. CHECK-fails when a scalar
  // column did not get exactly one value (a bug in the caller).
  void FinishRow();

  int64_t Int(int col, size_t row) const { return columns_[col].ints[row]; }
  float Float(int col, size_t row) const { return columns_[col].floats[row]; }
  absl::Span<const int64_t> IntList(int col, size_t row) const;
  absl::Span<const float> FloatList(int col, size_t row) const;

  // Checks internal consistency (sizes and offsets) of a block built from untrusted bytes.
  absl::Status Validate() const;
  // Removes all rows, keeps the schema and capacity.
  void Clear();
  // Exact equality of schema and contents (floats compared bitwise).
  bool operator==(const RowBlock& other) const;

 private:
  friend class ShardReader;  // decodes columns in place and sets num_rows_, then Validate()s

  Schema schema_;
  std::vector<Column> columns_;
  size_t num_rows_ = 0;
};

// Schema helpers.
Field MakeField(absl::string_view name, FieldType type, FieldRole role = FEATURE,
                absl::string_view doc = "");
// INVALID_ARGUMENT on an empty or duplicate name, an unspecified type, or a duplicated
// unique role.
absl::Status ValidateSchema(const Schema& schema);

}  // namespace choir::data

#endif  // CHOIR_DATA_ROW_BLOCK_H_
