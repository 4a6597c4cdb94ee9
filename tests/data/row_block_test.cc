#include "data/row_block.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

Schema TestSchema() {
  Schema schema;
  *schema.add_fields() = MakeField("user", INT64, USER_ID, "the user");
  *schema.add_fields() = MakeField("price", FLOAT);
  *schema.add_fields() = MakeField("seq", INT64_LIST, SEQUENCE);
  *schema.add_fields() = MakeField("dense", FLOAT_LIST);
  return schema;
}

// Two rows: (7, 1.5, [1, 2, 3], []) and (8, -2, [], [0.25]).
RowBlock TwoRows() {
  RowBlock b(TestSchema());
  b.AppendInt(0, 7);
  b.AppendFloat(1, 1.5f);
  b.AppendListInt(2, 1);
  b.AppendListInt(2, 2);
  b.AppendListInt(2, 3);
  b.FinishRow();
  b.AppendInt(0, 8);
  b.AppendFloat(1, -2.0f);
  b.AppendListFloat(3, 0.25f);
  b.FinishRow();
  return b;
}

TEST(RowBlockTest, MakeFieldSetsEveryAttribute) {
  Field f = MakeField("ts", INT64, TIMESTAMP, "seconds");
  EXPECT_EQ(f.name(), "ts");
  EXPECT_EQ(f.type(), INT64);
  EXPECT_EQ(f.role(), TIMESTAMP);
  EXPECT_EQ(f.doc(), "seconds");
  EXPECT_FALSE(MakeField("x", FLOAT).has_doc());
}

TEST(RowBlockTest, ConstructorMakesOneTypedColumnPerField) {
  RowBlock b(TestSchema());
  ASSERT_EQ(b.num_columns(), 4u);
  EXPECT_EQ(b.num_rows(), 0u);
  EXPECT_EQ(b.column(0).type, INT64);
  EXPECT_EQ(b.column(3).type, FLOAT_LIST);
  EXPECT_TRUE(b.column(2).is_list());
  EXPECT_FALSE(b.column(1).is_list());
  EXPECT_TRUE(b.Validate().ok());
}

TEST(RowBlockTest, FieldAndRoleIndex) {
  RowBlock b(TestSchema());
  EXPECT_EQ(b.FieldIndex("seq"), 2);
  EXPECT_EQ(b.FieldIndex("nope"), -1);
  EXPECT_EQ(b.RoleIndex(USER_ID), 0);
  EXPECT_EQ(b.RoleIndex(FEATURE), 1);
  EXPECT_EQ(b.RoleIndex(ITEM_ID), -1);
}

TEST(RowBlockTest, RowWiseAppendRecordsOffsetsAndValues) {
  RowBlock b = TwoRows();
  ASSERT_EQ(b.num_rows(), 2u);
  EXPECT_EQ(b.Int(0, 0), 7);
  EXPECT_EQ(b.Int(0, 1), 8);
  EXPECT_EQ(b.Float(1, 1), -2.0f);
  EXPECT_THAT(b.IntList(2, 0), ElementsAre(1, 2, 3));
  EXPECT_THAT(b.IntList(2, 1), IsEmpty());
  EXPECT_THAT(b.FloatList(3, 0), IsEmpty());
  EXPECT_THAT(b.FloatList(3, 1), ElementsAre(0.25f));
  EXPECT_THAT(b.column(2).offsets, ElementsAre(0u, 3u, 3u));
  EXPECT_THAT(b.column(3).offsets, ElementsAre(0u, 0u, 1u));
  EXPECT_TRUE(b.Validate().ok());
}

TEST(RowBlockDeathTest, FinishRowWithoutAScalarValueIsABug) {
  RowBlock b(TestSchema());
  b.AppendInt(0, 1);  // no price
  EXPECT_DEATH(b.FinishRow(), "price");
}

TEST(RowBlockDeathTest, FinishRowWithTwoScalarValuesIsABug) {
  RowBlock b(TestSchema());
  b.AppendInt(0, 1);
  b.AppendInt(0, 2);
  b.AppendFloat(1, 0.f);
  EXPECT_DEATH(b.FinishRow(), "user");
}

TEST(RowBlockTest, ClearKeepsSchemaAndDropsRows) {
  RowBlock b = TwoRows();
  b.Clear();
  EXPECT_EQ(b.num_rows(), 0u);
  EXPECT_EQ(b.num_columns(), 4u);
  EXPECT_THAT(b.column(2).offsets, ElementsAre(0u));
  EXPECT_TRUE(b.column(0).ints.empty());
  EXPECT_TRUE(b.Validate().ok());
  EXPECT_TRUE(b == RowBlock(TestSchema()));
}

TEST(RowBlockTest, ValidateRejectsOffsetsThatDecrease) {
  RowBlock b = TwoRows();
  b.column(2).offsets = {0, 3, 2};
  absl::Status s = b.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("seq"));
}

TEST(RowBlockTest, ValidateRejectsLastOffsetOtherThanValueCount) {
  RowBlock b = TwoRows();
  b.column(2).ints.push_back(9);
  EXPECT_EQ(b.Validate().code(), absl::StatusCode::kDataLoss);
}

TEST(RowBlockTest, ValidateRejectsNonZeroFirstOffset) {
  RowBlock b = TwoRows();
  b.column(3).offsets = {1, 1, 1};
  EXPECT_EQ(b.Validate().code(), absl::StatusCode::kDataLoss);
}

TEST(RowBlockTest, ValidateRejectsWrongOffsetCount) {
  RowBlock b = TwoRows();
  b.column(3).offsets.push_back(1);
  EXPECT_EQ(b.Validate().code(), absl::StatusCode::kDataLoss);
}

TEST(RowBlockTest, ValidateRejectsScalarColumnOfWrongLength) {
  RowBlock b = TwoRows();
  b.column(1).floats.pop_back();
  absl::Status s = b.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("price"));
}

TEST(RowBlockTest, ValidateRejectsValuesOfTheWrongKind) {
  RowBlock b = TwoRows();
  b.column(0).floats.push_back(1.0f);
  EXPECT_EQ(b.Validate().code(), absl::StatusCode::kDataLoss);
}

TEST(RowBlockTest, ValidateRejectsColumnTypeThatDisagreesWithSchema) {
  RowBlock b = TwoRows();
  b.column(1).type = INT64;
  EXPECT_EQ(b.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RowBlockTest, EqualityIsExactAndBitwiseOnFloats) {
  EXPECT_TRUE(TwoRows() == TwoRows());

  RowBlock a(TestSchema()), b(TestSchema());
  for (RowBlock* r : {&a, &b}) {
    r->AppendInt(0, 1);
    r->AppendFloat(1, std::numeric_limits<float>::quiet_NaN());
    r->FinishRow();
  }
  EXPECT_TRUE(a == b);  // same NaN bits compare equal

  b.column(1).floats[0] = 0.0f;
  a.column(1).floats[0] = -0.0f;
  EXPECT_FALSE(a == b);  // 0.0 == -0.0 numerically, not bitwise

  RowBlock c = TwoRows();
  c.column(2).ints[1] = 5;
  EXPECT_FALSE(c == TwoRows());

  Schema other = TestSchema();
  other.mutable_fields(0)->set_doc("different doc");
  RowBlock d(other);
  EXPECT_FALSE(d == RowBlock(TestSchema()));
}

TEST(ValidateSchemaTest, AcceptsAWellFormedSchema) {
  Schema s = TestSchema();
  *s.add_fields() = MakeField("f2", INT64);                   // FEATURE may repeat
  *s.add_fields() = MakeField("seq2", INT64_LIST, SEQUENCE);  // SEQUENCE may repeat
  EXPECT_TRUE(ValidateSchema(s).ok());
}

TEST(ValidateSchemaTest, RejectsEmptyName) {
  Schema s = TestSchema();
  *s.add_fields() = MakeField("", INT64);
  EXPECT_EQ(ValidateSchema(s).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateSchemaTest, RejectsDuplicateName) {
  Schema s = TestSchema();
  *s.add_fields() = MakeField("price", INT64);
  absl::Status st = ValidateSchema(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("price"));
}

TEST(ValidateSchemaTest, RejectsUnspecifiedType) {
  Schema s = TestSchema();
  Field* f = s.add_fields();
  f->set_name("untyped");
  EXPECT_EQ(ValidateSchema(s).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateSchemaTest, RejectsDuplicatedUniqueRole) {
  Schema s = TestSchema();
  *s.add_fields() = MakeField("user2", INT64, USER_ID);
  absl::Status st = ValidateSchema(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("USER_ID"));
}

}  // namespace
}  // namespace choir::data
