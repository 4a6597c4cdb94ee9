// Converters from public CVR formats to dataset folders. docs/data-formats.md is the user's
// description of every format and rule implemented here.
//
// Shape: every input file is first "planned" (only its header line is read) into a FilePlan
// that says, for each schema field, which cells of a data line hold its value. Nothing is
// written until every file is planned and the task is checked. Then each line is split,
// parsed into a staged row (so a malformed line never leaves half a row in a block), filtered
// by the task and appended to the block of its split.
#include "data/convert.h"

#include <algorithm>

#include <cmath>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "core/progress.h"
#include "core/status.h"
#include "data/csv.h"
#include "data/dataset.h"
#include "data/row_block.h"
#include "data/shard.h"
#include "glog/logging.h"

namespace choir::data {
namespace {

// Splits in manifest order.
constexpr const char* kSplitOrder[] = {"train", "val", "test"};
// Progress is shown when the inputs are at least this big.
constexpr uint64_t kProgressMinBytes = 16 << 20;
// Separator of the values of a list cell in the generic CSV format.
constexpr char kListSeparator = '|';

// Ali-CCP field ids and their meaning (Tianchi's documentation).
const absl::flat_hash_map<std::string, std::string>& AliccpFieldDocs() {
  static const auto* docs = new absl::flat_hash_map<std::string, std::string>{
      {"101", "user ID"},
      {"121", "user profile categorical ID"},
      {"122", "user profile group ID"},
      {"124", "gender ID"},
      {"125", "age ID"},
      {"126", "consumption level type I"},
      {"127", "consumption level type II"},
      {"128", "occupation (working or not)"},
      {"129", "geography (city level)"},
      {"205", "item ID"},
      {"206", "item category ID"},
      {"207", "item shop ID"},
      {"210", "item intention-node ID"},
      {"216", "item brand ID"},
      {"508", "cross of 109_14 x 206"},
      {"509", "cross of 110_14 x 207"},
      {"702", "cross of 127_14 x 216"},
      {"853", "cross of 150_14 x 210"},
      {"301", "position / scenario (categorical)"},
      {"109_14", "user 14-day history: category IDs"},
      {"110_14", "user history: shop IDs"},
      {"127_14", "user history: brand IDs"},
      {"150_14", "user history: intention-node IDs"},
  };
  return *docs;
}

constexpr const char* kAitmColumns[] = {"click", "purchase", "101", "121", "122", "124", "125",
                                        "126",   "127",      "128", "129", "205", "206", "207",
                                        "216",   "508",      "509", "702", "853", "301"};
constexpr const char* kRechubSparse[] = {
    "101", "121", "122", "124", "125", "126", "127", "128",    "129",    "205",    "206",   "207",
    "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14", "127_14", "150_14"};
constexpr const char* kRechubDense[] = {"D109_14", "D110_14", "D127_14", "D150_14",
                                        "D508",    "D509",    "D702",    "D853"};

// Taobao display-ad (DMR) layout: five 50-wide history blocks, then scalar columns.
constexpr int kTaobaoColumns = 267;
constexpr int kTaobaoHistory = 50;
constexpr int kTaobaoBtag = 0, kTaobaoCate = 50, kTaobaoBrand = 100, kTaobaoMask = 150,
              kTaobaoMatchMask = 200;
struct TaobaoScalar {
  const char* name;
  int column;
  FieldType type;
  FieldRole role;
  const char* doc;
};
constexpr TaobaoScalar kTaobaoScalars[] = {
    {"clk", 266, INT64, LABEL_CLICK, "click label (0/1)"},
    {"userid", 250, INT64, USER_ID, "user ID"},
    {"cms_segid", 251, INT64, FEATURE, "micro-group ID"},
    {"cms_group_id", 252, INT64, FEATURE, "group ID"},
    {"final_gender_code", 253, INT64, FEATURE, "gender (1 male, 2 female)"},
    {"age_level", 254, INT64, FEATURE, "age level"},
    {"pvalue_level", 255, INT64, FEATURE, "consumption grade (1 low, 2 mid, 3 high, 0 missing)"},
    {"shopping_level", 256, INT64, FEATURE, "shopping depth (1 shallow, 2 medium, 3 deep)"},
    {"occupation", 257, INT64, FEATURE, "college student (1/0)"},
    {"new_user_class_level", 258, INT64, FEATURE, "city level (0 missing)"},
    {"adgroup_id", 259, INT64, ITEM_ID, "ad group ID (the item)"},
    {"cate_id", 260, INT64, FEATURE, "item category ID"},
    {"campaign_id", 261, INT64, FEATURE, "campaign ID"},
    {"customer", 262, INT64, FEATURE, "advertiser ID"},
    {"brand", 263, INT64, FEATURE, "item brand ID"},
    {"price", 264, FLOAT, FEATURE, "item price (normalised)"},
    {"pid", 265, INT64, FEATURE, "ad position (encoded 0/1)"},
};
struct TaobaoSequence {
  const char* name;
  const char* column_name;
  int column;
  const char* doc;
};
constexpr TaobaoSequence kTaobaoSequences[] = {
    {"hist_cate", "cate_his", kTaobaoCate,
     "categories of the user's last behaviours (mask != 0 only, most recent first)"},
    {"hist_brand", "brand_his", kTaobaoBrand,
     "brands of the user's last behaviours (mask != 0 only, most recent first)"},
    {"hist_btag", "btag_his", kTaobaoBtag,
     "behaviour types (pv/cart/fav/buy) of the last behaviours (mask != 0 only, most recent "
     "first)"},
};

std::string FormatName(InputFormat format) {
  switch (format) {
    case InputFormat::kAliccpAitm:
      return "aliccp-aitm";
    case InputFormat::kAliccpRechub:
      return "aliccp-rechub";
    case InputFormat::kTaobaoAd:
      return "taobao-ad";
    case InputFormat::kCsv:
      return "csv";
  }
  return "unknown";
}

// Where a schema field's value comes from in a data line.
struct FieldSource {
  enum class Kind {
    kCell,         // one cell; for list types its values are '|'-separated
    kMaskedRange,  // INT64_LIST of cells column + k, k < plan.mask.length, where mask k != 0
  };
  Kind kind = Kind::kCell;
  int column = 0;     // 0-based
  std::string label;  // the column's name in messages
};

// Cells [column, column + length) of every data line that must be integers.
struct IntRange {
  int column = 0;
  int length = 0;
  std::string label;
};

// How to read one input file.
struct FilePlan {
  std::string path;
  std::string split;
  char delimiter = ',';
  bool has_header = false;
  int num_columns = 0;               // cells every data line must have
  std::vector<FieldSource> sources;  // one per schema field, in schema order
  // The mask of the kMaskedRange sources (length 0: none), parsed once per line.
  IntRange mask;
  // Cells checked to be integers but not converted.
  std::vector<IntRange> unconverted;
};

// One data line's values, staged before they go into a block. Indexed by schema field.
struct StagedRow {
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::vector<std::vector<int64_t>> int_lists;
  std::vector<std::vector<float>> float_lists;
  std::vector<bool> mask;  // the plan's mask: slot k holds a value

  explicit StagedRow(size_t n) : ints(n), floats(n), int_lists(n), float_lists(n) {}
};

std::string BaseName(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? path : path.substr(slash + 1));
}

std::string Quoted(absl::string_view s) {
  constexpr size_t kMax = 40;  // keep messages short on garbage input
  if (s.size() > kMax) return absl::StrCat("'", s.substr(0, kMax), "...'");
  return absl::StrCat("'", s, "'");
}

// ---------------------------------------------------------------------------------------
// Schemas and plans per format.

Schema AitmSchema() {
  Schema schema;
  *schema.add_fields() = MakeField("click", INT64, LABEL_CLICK, "click label (0/1)");
  *schema.add_fields() = MakeField("purchase", INT64, LABEL_CONVERSION, "purchase label (0/1)");
  for (size_t i = 2; i < std::size(kAitmColumns); ++i) {
    const std::string id = kAitmColumns[i];
    const FieldRole role = id == "101" ? USER_ID : id == "205" ? ITEM_ID : FEATURE;
    *schema.add_fields() =
        MakeField(absl::StrCat("f", id), INT64, role,
                  absl::StrCat("Ali-CCP field ", id, ": ", AliccpFieldDocs().at(id)));
  }
  return schema;
}

Schema RechubSchema() {
  Schema schema;
  *schema.add_fields() = MakeField("click", INT64, LABEL_CLICK, "click label (0/1)");
  *schema.add_fields() = MakeField("purchase", INT64, LABEL_CONVERSION, "purchase label (0/1)");
  for (const char* id_chars : kRechubSparse) {
    const std::string id = id_chars;
    const FieldRole role = id == "101" ? USER_ID : id == "205" ? ITEM_ID : FEATURE;
    *schema.add_fields() =
        MakeField(absl::StrCat("f", id), INT64, role,
                  absl::StrCat("Ali-CCP field ", id, ": ", AliccpFieldDocs().at(id),
                               " (label-encoded; values seen < 10 times are 0)"));
  }
  for (const char* name : kRechubDense) {
    const std::string id = std::string(name).substr(1);
    *schema.add_fields() =
        MakeField(name, FLOAT, FEATURE,
                  absl::StrCat("Ali-CCP field ", id, " value, min-max normalised (",
                               AliccpFieldDocs().at(id), ")"));
  }
  return schema;
}

Schema TaobaoSchema() {
  Schema schema;
  for (const TaobaoScalar& s : kTaobaoScalars) {
    *schema.add_fields() = MakeField(s.name, s.type, s.role, s.doc);
  }
  for (const TaobaoSequence& s : kTaobaoSequences) {
    *schema.add_fields() = MakeField(s.name, INT64_LIST, SEQUENCE, s.doc);
  }
  return schema;
}

// The header cells of `first_line`, stripped of surrounding whitespace.
absl::StatusOr<std::vector<std::string>> HeaderCells(const std::string& path,
                                                     absl::string_view first_line, char delimiter) {
  CsvSplitter splitter(delimiter);
  absl::Status status = splitter.Split(first_line);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":1: header: ", status.message()));
  }
  std::vector<std::string> cells;
  for (absl::string_view cell : splitter.fields()) {
    cells.emplace_back(absl::StripAsciiWhitespace(cell));
  }
  return cells;
}

// Sources for fields whose header names are `names` (in schema order), found by name in
// `header`. Names missing from the header are an error naming the file and column.
absl::Status MapByName(const std::string& path, const std::vector<std::string>& header,
                       const std::vector<std::string>& names, FilePlan* plan) {
  absl::flat_hash_map<std::string, int> column_of;
  for (size_t i = 0; i < header.size(); ++i) {
    if (!column_of.emplace(header[i], static_cast<int>(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":1: header names column '", header[i], "' twice"));
    }
  }
  absl::flat_hash_set<std::string> used;
  for (const std::string& name : names) {
    auto it = column_of.find(name);
    if (it == column_of.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":1: missing required column '", name, "' in the header"));
    }
    FieldSource source;
    source.column = it->second;
    source.label = name;
    plan->sources.push_back(std::move(source));
    used.insert(name);
  }
  std::vector<std::string> ignored;
  for (const std::string& h : header) {
    if (!used.contains(h)) ignored.push_back(h);
  }
  if (!ignored.empty()) {
    LOG(WARNING) << path << ": ignoring " << ignored.size()
                 << " column(s) not in the schema: " << absl::StrJoin(ignored, ",");
  }
  plan->num_columns = static_cast<int>(header.size());
  return absl::OkStatus();
}

absl::Status PlanAitm(const std::string& path, absl::optional<absl::string_view> first_line,
                      FilePlan* plan) {
  plan->num_columns = static_cast<int>(std::size(kAitmColumns));
  for (int i = 0; i < plan->num_columns; ++i) {
    FieldSource source;
    source.column = i;
    source.label = kAitmColumns[i];
    plan->sources.push_back(std::move(source));
  }
  if (!first_line.has_value()) return absl::OkStatus();
  // The header is optional: a first line whose first cell is "click" is one.
  const size_t comma = first_line->find(',');
  const absl::string_view first_cell = absl::StripAsciiWhitespace(first_line->substr(0, comma));
  if (first_cell != "click") return absl::OkStatus();
  plan->has_header = true;
  ASSIGN_OR_RETURN(std::vector<std::string> header, HeaderCells(path, *first_line, ','));
  if (header.size() != std::size(kAitmColumns)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":1: header has ", header.size(),
                                                   " columns, expected ", std::size(kAitmColumns)));
  }
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] != kAitmColumns[i]) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":1: header column ", i + 1, " is '",
                                                     header[i], "', expected '", kAitmColumns[i],
                                                     "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status PlanRechub(const std::string& path, absl::optional<absl::string_view> first_line,
                        FilePlan* plan) {
  if (!first_line.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": empty file; aliccp-rechub needs a header line"));
  }
  plan->has_header = true;
  ASSIGN_OR_RETURN(std::vector<std::string> header, HeaderCells(path, *first_line, ','));
  std::vector<std::string> names = {"click", "purchase"};
  names.insert(names.end(), std::begin(kRechubSparse), std::end(kRechubSparse));
  names.insert(names.end(), std::begin(kRechubDense), std::end(kRechubDense));
  return MapByName(path, header, names, plan);
}

void PlanTaobao(FilePlan* plan) {
  plan->num_columns = kTaobaoColumns;
  for (const TaobaoScalar& s : kTaobaoScalars) {
    FieldSource source;
    source.column = s.column;
    source.label = s.name;
    plan->sources.push_back(std::move(source));
  }
  for (const TaobaoSequence& s : kTaobaoSequences) {
    FieldSource source;
    source.kind = FieldSource::Kind::kMaskedRange;
    source.column = s.column;
    source.label = s.column_name;
    plan->sources.push_back(std::move(source));
  }
  plan->mask = {kTaobaoMask, kTaobaoHistory, "mask"};
  plan->unconverted.push_back({kTaobaoMatchMask, kTaobaoHistory, "match_mask"});
}

// Generic CSV: "name" or "name:type" per header cell (docs/data-formats.md).
absl::StatusOr<Field> ParseCsvHeaderCell(const std::string& path, int column,
                                         absl::string_view cell) {
  const std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(cell, absl::MaxSplits(':', 1));
  const std::string name(absl::StripAsciiWhitespace(parts.first));
  const std::string type_name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(parts.second));
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":1: header column ", column, " ", Quoted(cell), ": ", what));
  };
  if (name.empty()) return error("empty column name");
  FieldType type;
  if (type_name.empty() || type_name == "int" || type_name == "int64") {
    type = INT64;
  } else if (type_name == "float") {
    type = FLOAT;
  } else if (type_name == "list" || type_name == "intlist") {
    type = INT64_LIST;
  } else if (type_name == "floatlist") {
    type = FLOAT_LIST;
  } else {
    return error("unknown type; use int, float, list or floatlist");
  }
  static const auto* reserved = new std::map<std::string, std::pair<FieldRole, const char*>>{
      {"user_id", {USER_ID, "user ID"}},
      {"item_id", {ITEM_ID, "item ID"}},
      {"click", {LABEL_CLICK, "click label (0/1)"}},
      {"conversion", {LABEL_CONVERSION, "conversion label (0/1)"}},
      {"timestamp", {TIMESTAMP, "seconds since the epoch"}},
  };
  auto it = reserved->find(name);
  if (it != reserved->end()) {
    if (type != INT64) return error(absl::StrCat("'", name, "' is reserved and must be int"));
    return MakeField(name, INT64, it->second.first, it->second.second);
  }
  return MakeField(name, type, FEATURE, absl::StrCat("column '", name, "' of the input CSV"));
}

// Plans a generic CSV file. The first file defines `*schema`; later ones must have the same
// fields (by name and type, in any order).
absl::Status PlanCsv(const std::string& path, absl::optional<absl::string_view> first_line,
                     bool first_file, Schema* schema, FilePlan* plan) {
  if (!first_line.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": empty file; csv input needs a header line"));
  }
  plan->has_header = true;
  ASSIGN_OR_RETURN(std::vector<std::string> header,
                   HeaderCells(path, *first_line, plan->delimiter));
  std::vector<Field> fields;
  for (size_t i = 0; i < header.size(); ++i) {
    ASSIGN_OR_RETURN(Field field, ParseCsvHeaderCell(path, static_cast<int>(i) + 1, header[i]));
    fields.push_back(std::move(field));
  }
  if (first_file) {
    schema->Clear();
    for (const Field& f : fields) *schema->add_fields() = f;
    absl::Status valid = ValidateSchema(*schema);
    if (!valid.ok()) return Annotate(valid, absl::StrCat(path, ":1: header"));
  }
  absl::flat_hash_map<std::string, int> column_of;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (!column_of.emplace(fields[i].name(), static_cast<int>(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":1: header names column '", fields[i].name(), "' twice"));
    }
  }
  if (fields.size() != static_cast<size_t>(schema->fields_size())) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":1: header has ", fields.size(),
                                                   " columns, the first input has ",
                                                   schema->fields_size()));
  }
  for (const Field& want : schema->fields()) {
    auto it = column_of.find(want.name());
    if (it == column_of.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":1: missing column '", want.name(), "' that the first input has"));
    }
    if (fields[it->second].type() != want.type()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":1: column '", want.name(), "' has type ",
                       FieldType_Name(fields[it->second].type()), ", the first input has ",
                       FieldType_Name(want.type())));
    }
    FieldSource source;
    source.column = it->second;
    source.label = want.name();
    plan->sources.push_back(std::move(source));
  }
  plan->num_columns = static_cast<int>(fields.size());
  return absl::OkStatus();
}

// The first line of `path`, or nullopt for an empty file.
absl::StatusOr<absl::optional<std::string>> FirstLine(FileSystem* fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(fs, path));
  absl::string_view line;
  if (!reader->Next(&line)) return absl::optional<std::string>();
  return absl::optional<std::string>(std::string(line));
}

char CsvDelimiter(const ConvertOptions& options, const std::string& path) {
  if (options.delimiter != 0) return options.delimiter;
  return absl::EndsWithIgnoreCase(path, ".tsv") ? '\t' : ',';
}

// ---------------------------------------------------------------------------------------
// Parsing data lines.

// `column` is 0-based; `label` names it in the message.
absl::Status ParseInt(absl::string_view text, absl::string_view label, int column, int64_t* out) {
  if (!absl::SimpleAtoi(text, out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("column ", column + 1, " (", label, "): bad integer ", Quoted(text)));
  }
  return absl::OkStatus();
}

absl::Status ParseFloat(absl::string_view text, absl::string_view label, int column, float* out) {
  if (!absl::SimpleAtof(text, out) || !std::isfinite(*out)) {
    return absl::InvalidArgumentError(absl::StrCat("column ", column + 1, " (", label,
                                                   "): bad or non-finite float ", Quoted(text)));
  }
  return absl::OkStatus();
}

// Parses the cells of one data line into `row`. The error is the reason alone (the caller
// adds file and line).
absl::Status ParseRow(const Schema& schema, const FilePlan& plan,
                      const std::vector<absl::string_view>& cells, StagedRow* row) {
  if (static_cast<int>(cells.size()) != plan.num_columns) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", plan.num_columns, " columns, got ", cells.size()));
  }
  row->mask.resize(plan.mask.length);
  for (int k = 0; k < plan.mask.length; ++k) {
    int64_t mask;
    RETURN_IF_ERROR(
        ParseInt(cells[plan.mask.column + k], plan.mask.label, plan.mask.column + k, &mask));
    row->mask[k] = mask != 0;
  }
  for (const IntRange& range : plan.unconverted) {
    for (int c = range.column; c < range.column + range.length; ++c) {
      int64_t ignored;
      RETURN_IF_ERROR(ParseInt(cells[c], range.label, c, &ignored));
    }
  }
  for (int f = 0; f < schema.fields_size(); ++f) {
    const Field& field = schema.fields(f);
    const FieldSource& source = plan.sources[f];
    if (source.kind == FieldSource::Kind::kMaskedRange) {
      std::vector<int64_t>& list = row->int_lists[f];
      list.clear();
      for (int k = 0; k < plan.mask.length; ++k) {
        int64_t value;
        RETURN_IF_ERROR(
            ParseInt(cells[source.column + k], source.label, source.column + k, &value));
        if (row->mask[k]) list.push_back(value);
      }
      // The file stores the oldest behaviour first (padding at the front); SEQUENCE fields
      // are most recent first.
      std::reverse(list.begin(), list.end());
      continue;
    }
    const absl::string_view cell = cells[source.column];
    switch (field.type()) {
      case INT64: {
        int64_t& v = row->ints[f];
        RETURN_IF_ERROR(ParseInt(cell, source.label, source.column, &v));
        if ((field.role() == LABEL_CLICK || field.role() == LABEL_CONVERSION) && v != 0 && v != 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("column ", source.column + 1, " (", source.label,
                           "): label must be 0 or 1, got ", Quoted(cell)));
        }
        break;
      }
      case FLOAT:
        RETURN_IF_ERROR(ParseFloat(cell, source.label, source.column, &row->floats[f]));
        break;
      case INT64_LIST:
      case FLOAT_LIST: {
        row->int_lists[f].clear();
        row->float_lists[f].clear();
        if (absl::StripAsciiWhitespace(cell).empty()) break;  // an empty cell: an empty list
        for (absl::string_view piece : absl::StrSplit(cell, kListSeparator)) {
          if (field.type() == INT64_LIST) {
            int64_t v;
            RETURN_IF_ERROR(ParseInt(piece, source.label, source.column, &v));
            row->int_lists[f].push_back(v);
          } else {
            float v;
            RETURN_IF_ERROR(ParseFloat(piece, source.label, source.column, &v));
            row->float_lists[f].push_back(v);
          }
        }
        break;
      }
      default:
        return absl::InternalError(absl::StrCat("field ", field.name(), " has no type"));
    }
  }
  return absl::OkStatus();
}

void AppendRow(const StagedRow& row, RowBlock* block) {
  const Schema& schema = block->schema();
  for (int f = 0; f < schema.fields_size(); ++f) {
    switch (schema.fields(f).type()) {
      case INT64:
        block->AppendInt(f, row.ints[f]);
        break;
      case FLOAT:
        block->AppendFloat(f, row.floats[f]);
        break;
      case INT64_LIST:
        for (int64_t v : row.int_lists[f]) block->AppendListInt(f, v);
        break;
      case FLOAT_LIST:
        for (float v : row.float_lists[f]) block->AppendListFloat(f, v);
        break;
      default:
        LOG(FATAL) << "field without type in a validated schema";
    }
  }
  block->FinishRow();
}

// ---------------------------------------------------------------------------------------
// The output folder.

// ---------------------------------------------------------------------------------------
// The conversion proper.

class Converter {
 public:
  // `empty_block` has the output schema and no rows.
  Converter(FileSystem* fs, const ConvertOptions& options, RowBlock empty_block)
      : fs_(fs),
        options_(options),
        empty_block_(std::move(empty_block)),
        schema_(empty_block_.schema()),
        errors_(options.budget),
        click_(empty_block_.RoleIndex(LABEL_CLICK)),
        conversion_(empty_block_.RoleIndex(LABEL_CONVERSION)),
        staged_(schema_.fields_size()) {
    writer_options_.writer = absl::StrCat("choir data convert (", FormatName(options.format), ")");
  }

  void ShowProgress() { progress_ = std::make_unique<Progress>("rows converted", 0); }

  absl::Status ConvertFile(const FilePlan& plan);
  // Closes the splits and the rejects file and writes the manifest.
  absl::Status Finish();
  // Best-effort removal of the split folders written so far (after a failure).
  void RemovePartialOutput();

  ConvertReport report() const {
    ConvertReport report = report_;
    report.reject_messages = errors_.messages();
    return report;
  }

 private:
  struct SplitState {
    std::unique_ptr<SplitWriter> writer;
    RowBlock block;
  };
  absl::StatusOr<SplitState*> GetSplit(const std::string& name);
  absl::Status Reject(const FilePlan& plan, int64_t line_number, absl::string_view line,
                      const absl::Status& reason);

  FileSystem* const fs_;
  const ConvertOptions& options_;
  const RowBlock empty_block_;  // each split's block starts as a copy
  const Schema& schema_;        // empty_block_'s
  ErrorCounter errors_;
  const int click_;
  const int conversion_;  // -1 when the format has no conversion label
  ShardWriterOptions writer_options_;
  std::map<std::string, SplitState> splits_;
  std::unique_ptr<WritableFile> rejects_;
  std::unique_ptr<Progress> progress_;
  StagedRow staged_;
  ConvertReport report_;
  int64_t conversion_without_click_ = 0;
  int64_t blank_lines_ = 0;
  std::vector<std::string> file_notes_;  // per input, for the provenance
};

absl::StatusOr<Converter::SplitState*> Converter::GetSplit(const std::string& name) {
  auto it = splits_.find(name);
  if (it == splits_.end()) {
    SplitState state;
    state.writer =
        std::make_unique<SplitWriter>(fs_, options_.out_dir, name, schema_, writer_options_);
    state.block = empty_block_;
    it = splits_.emplace(name, std::move(state)).first;
  }
  return &it->second;
}

absl::Status Converter::Reject(const FilePlan& plan, int64_t line_number, absl::string_view line,
                               const absl::Status& reason) {
  const std::string where = absl::StrCat(plan.path, ":", line_number);
  const absl::Status error =
      absl::InvalidArgumentError(absl::StrCat(where, ": ", reason.message()));
  ++report_.rows_rejected;
  // Every rejected line, the one that exceeds the budget included, is kept verbatim.
  if (rejects_ == nullptr) {
    ASSIGN_OR_RETURN(rejects_, fs_->NewWritableFile(JoinPath(options_.out_dir, kRejectsName)));
  }
  RETURN_IF_ERROR(rejects_->Append(absl::StrCat(where, "\t", reason.message(), "\t", line, "\n")));
  return errors_.CountBad(error);
}

absl::Status Converter::ConvertFile(const FilePlan& plan) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(fs_, plan.path));
  ASSIGN_OR_RETURN(SplitState * split, GetSplit(plan.split));
  CsvSplitter splitter(plan.delimiter);
  const bool cvr = options_.task == TASK_CVR;
  int64_t read = 0, written = 0, rejected = 0, dropped = 0, pending_progress = 0;
  absl::string_view line;
  while (reader->Next(&line)) {
    if (reader->line_number() == 1 && plan.has_header) continue;
    if (line.empty()) {
      ++blank_lines_;
      continue;
    }
    ++read;
    if (progress_ != nullptr && ++pending_progress == 4096) {
      progress_->Add(pending_progress);
      pending_progress = 0;
    }
    absl::Status parsed = splitter.Split(line);
    if (parsed.ok()) parsed = ParseRow(schema_, plan, splitter.fields(), &staged_);
    if (!parsed.ok()) {
      ++rejected;
      RETURN_IF_ERROR(Reject(plan, reader->line_number(), line, parsed));
      continue;
    }
    errors_.CountGood();
    if (conversion_ >= 0 && staged_.ints[conversion_] == 1 && staged_.ints[click_] == 0) {
      ++conversion_without_click_;
      if (cvr) {
        ++dropped;
        continue;
      }
    }
    AppendRow(staged_, &split->block);
    ++written;
    if (static_cast<int>(split->block.num_rows()) >= options_.rows_per_block) {
      RETURN_IF_ERROR(split->writer->Write(split->block));
      split->block.Clear();
    }
  }
  if (progress_ != nullptr) progress_->Add(pending_progress);
  report_.rows_read += read;
  report_.rows_written += written;
  report_.rows_dropped += dropped;
  file_notes_.push_back(absl::StrCat(plan.path, " -> ", plan.split, ": ", read, " rows read, ",
                                     written, " written, ", rejected, " rejected, ", dropped,
                                     " dropped"));
  LOG(INFO) << file_notes_.back();
  return absl::OkStatus();
}

absl::Status Converter::Finish() {
  DatasetManifest manifest;
  manifest.set_source(FormatName(options_.format));
  for (const char* name : kSplitOrder) {
    auto it = splits_.find(name);
    if (it == splits_.end()) continue;
    SplitState& split = it->second;
    if (split.block.num_rows() > 0) RETURN_IF_ERROR(split.writer->Write(split.block));
    split.block.Clear();
    ASSIGN_OR_RETURN(SplitInfo info, split.writer->Finish());
    *manifest.add_splits() = std::move(info);
  }
  if (rejects_ != nullptr) {
    RETURN_IF_ERROR(rejects_->Close());
    rejects_.reset();
  }
  progress_.reset();  // prints its final line

  if (report_.rows_dropped > 0) {
    LOG(WARNING) << "task " << Task_Name(options_.task) << ": dropped " << report_.rows_dropped
                 << " rows with a conversion but no click";
  } else if (conversion_without_click_ > 0) {
    LOG(INFO) << "kept " << conversion_without_click_
              << " rows with a conversion but no click (task " << Task_Name(options_.task) << ")";
  }
  if (report_.rows_rejected > 0) {
    LOG(WARNING) << "rejected " << report_.rows_rejected << " malformed rows (see "
                 << JoinPath(options_.out_dir, kRejectsName) << ")";
  }
  if (blank_lines_ > 0) LOG(INFO) << "skipped " << blank_lines_ << " blank lines";

  std::string provenance = absl::StrCat("choir data convert --format=", FormatName(options_.format),
                                        " --task=", Task_Name(options_.task), "\n");
  if (conversion_ < 0) {
    absl::StrAppend(&provenance, "the input has no conversion label (click only)\n");
  }
  for (const std::string& note : file_notes_) absl::StrAppend(&provenance, note, "\n");
  manifest.set_provenance(provenance);
  manifest.set_split_time(0);
  auto& counters = *manifest.mutable_counters();
  counters["rows_read"] = report_.rows_read;
  counters["rows_written"] = report_.rows_written;
  counters["rows_rejected"] = report_.rows_rejected;
  counters["dropped_conversion_without_click"] = report_.rows_dropped;
  counters["conversion_without_click"] = conversion_without_click_;
  counters["has_conversion_label"] = conversion_ >= 0 ? 1 : 0;
  counters["blank_lines"] = blank_lines_;
  RETURN_IF_ERROR(WriteManifest(fs_, options_.out_dir, std::move(manifest)));
  LOG(INFO) << "converted " << report_.rows_read << " rows into " << options_.out_dir << ": "
            << report_.rows_written << " written, " << report_.rows_rejected << " rejected, "
            << report_.rows_dropped << " dropped";
  return absl::OkStatus();
}

void Converter::RemovePartialOutput() {
  for (auto& [name, split] : splits_) {
    split.writer.reset();  // an unclosed shard deletes its temporary file
    const std::string path = JoinPath(options_.out_dir, name);
    absl::Status status = fs_->DeleteRecursively(path);
    if (!status.ok()) LOG(WARNING) << "could not remove " << path << ": " << status;
  }
  if (rejects_ != nullptr) rejects_->Close().IgnoreError();
}

}  // namespace

absl::StatusOr<InputFormat> ParseInputFormat(absl::string_view name) {
  for (InputFormat format : {InputFormat::kAliccpAitm, InputFormat::kAliccpRechub,
                             InputFormat::kTaobaoAd, InputFormat::kCsv}) {
    if (name == FormatName(format)) return format;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown input format '", name, "'; use aliccp-aitm, aliccp-rechub, taobao-ad or csv"));
}

std::string SplitFromFileName(absl::string_view path) {
  const std::string base = absl::AsciiStrToLower(BaseName(path));
  bool val = false;
  for (absl::string_view token : absl::StrSplit(base, absl::ByAnyChar("_-. "))) {
    if (token == "test") return "test";
    if (token == "val" || token == "valid" || token == "validation") val = true;
  }
  return val ? "val" : "train";
}

absl::StatusOr<ConvertReport> Convert(FileSystem* fs, const ConvertOptions& options) {
  const std::string format_name = FormatName(options.format);
  if (options.inputs.empty()) return absl::InvalidArgumentError("convert: no input files");
  if (options.out_dir.empty()) return absl::InvalidArgumentError("convert: no output folder");
  if (options.rows_per_block <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("convert: rows_per_block must be positive, got ", options.rows_per_block));
  }
  if (options.format == InputFormat::kCsv &&
      (options.delimiter == '"' || options.delimiter == kListSeparator ||
       options.delimiter == '\n' || options.delimiter == '\r')) {
    return absl::InvalidArgumentError(
        absl::StrCat("convert: delimiter ", Quoted(std::string(1, options.delimiter)),
                     " is not allowed (it has another meaning in the csv format)"));
  }
  if (!options.split.empty() && std::find(std::begin(kSplitOrder), std::end(kSplitOrder),
                                          options.split) == std::end(kSplitOrder)) {
    return absl::InvalidArgumentError(
        absl::StrCat("convert: unknown split '", options.split, "'; use train, val or test"));
  }
  if (options.format == InputFormat::kTaobaoAd && options.task != TASK_CTR) {
    return absl::FailedPreconditionError(absl::StrCat(
        "taobao-ad has no conversion label; use --task ctr (got ", Task_Name(options.task), ")"));
  }

  // Plan every input (headers only) before anything is written.
  Schema schema;
  switch (options.format) {
    case InputFormat::kAliccpAitm:
      schema = AitmSchema();
      break;
    case InputFormat::kAliccpRechub:
      schema = RechubSchema();
      break;
    case InputFormat::kTaobaoAd:
      schema = TaobaoSchema();
      break;
    case InputFormat::kCsv:
      break;  // from the first file's header
  }
  std::vector<FilePlan> plans;
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < options.inputs.size(); ++i) {
    FilePlan plan;
    plan.path = options.inputs[i];
    plan.split = options.split.empty() ? SplitFromFileName(plan.path) : options.split;
    ASSIGN_OR_RETURN(absl::optional<std::string> first_line, FirstLine(fs, plan.path));
    absl::optional<absl::string_view> first;
    if (first_line.has_value()) first = *first_line;
    switch (options.format) {
      case InputFormat::kAliccpAitm:
        RETURN_IF_ERROR(PlanAitm(plan.path, first, &plan));
        break;
      case InputFormat::kAliccpRechub:
        RETURN_IF_ERROR(PlanRechub(plan.path, first, &plan));
        break;
      case InputFormat::kTaobaoAd:
        PlanTaobao(&plan);
        break;
      case InputFormat::kCsv:
        plan.delimiter = CsvDelimiter(options, plan.path);
        RETURN_IF_ERROR(PlanCsv(plan.path, first, i == 0, &schema, &plan));
        break;
    }
    absl::StatusOr<uint64_t> size = fs->FileSize(plan.path);
    if (size.ok()) total_bytes += *size;
    plans.push_back(std::move(plan));
  }
  RETURN_IF_ERROR(Annotate(ValidateSchema(schema), absl::StrCat(format_name, " schema")));
  RowBlock empty_block(schema);
  if (empty_block.RoleIndex(LABEL_CLICK) < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.inputs[0], ": no click label column (csv: name one 'click')"));
  }
  // Training, GAUC and the activity buckets are per user: a dataset without user ids would be
  // written and then refused by every command that reads it.
  if (empty_block.RoleIndex(USER_ID) < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.inputs[0], ": no user id column (csv: name one 'user_id')"));
  }
  if (options.task != TASK_CTR && empty_block.RoleIndex(LABEL_CONVERSION) < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        options.inputs[0], ": no conversion label column, which task ", Task_Name(options.task),
        " needs (csv: name one 'conversion'); use --task ctr"));
  }

  RETURN_IF_ERROR(
      PrepareDatasetDir(fs, options.out_dir, {std::begin(kSplitOrder), std::end(kSplitOrder)}));
  Converter converter(fs, options, std::move(empty_block));
  if (total_bytes >= kProgressMinBytes) converter.ShowProgress();
  absl::Status status;
  for (const FilePlan& plan : plans) {
    status = converter.ConvertFile(plan);
    if (!status.ok()) break;
  }
  if (status.ok()) status = converter.Finish();
  if (!status.ok()) {
    converter.RemovePartialOutput();
    return status;
  }
  return converter.report();
}

}  // namespace choir::data
