#include "tools/eval/report.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace choir::eval {
namespace {

constexpr char kTsvHeader[] = "user_id\tlabel\tscore\tbucket";

nlohmann::ordered_json NumberOrNull(double v) {
  if (std::isnan(v)) return nullptr;
  return v;
}

nlohmann::ordered_json MetricsToJson(const Metrics& m) {
  nlohmann::ordered_json j;
  j["auc"] = NumberOrNull(m.auc);
  j["gauc"] = NumberOrNull(m.gauc);
  j["logloss"] = NumberOrNull(m.logloss);
  j["calibration"] = NumberOrNull(m.calibration);
  j["samples"] = m.samples;
  j["users"] = m.users;
  j["gauc_users"] = m.gauc_users;
  j["gauc_samples"] = m.gauc_samples;
  j["positives"] = m.positives;
  return j;
}

absl::Status ParseDouble(const nlohmann::json& obj, const char* key, absl::string_view where,
                         double* out) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"", key, "\""));
  }
  if (it->is_null()) {
    *out = std::numeric_limits<double>::quiet_NaN();
  } else if (it->is_number()) {
    *out = it->get<double>();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"", key, "\" is not a number or null"));
  }
  return absl::OkStatus();
}

absl::Status ParseCount(const nlohmann::json& obj, const char* key, bool required,
                        absl::string_view where, int64_t* out) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"", key, "\""));
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"", key, "\" is not a non-negative integer"));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::StatusOr<Metrics> ParseMetrics(const nlohmann::json& obj, absl::string_view where) {
  if (!obj.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not an object"));
  }
  Metrics m;
  RETURN_IF_ERROR(ParseDouble(obj, "auc", where, &m.auc));
  RETURN_IF_ERROR(ParseDouble(obj, "gauc", where, &m.gauc));
  RETURN_IF_ERROR(ParseDouble(obj, "logloss", where, &m.logloss));
  RETURN_IF_ERROR(ParseDouble(obj, "calibration", where, &m.calibration));
  RETURN_IF_ERROR(ParseCount(obj, "samples", true, where, &m.samples));
  RETURN_IF_ERROR(ParseCount(obj, "users", true, where, &m.users));
  RETURN_IF_ERROR(ParseCount(obj, "gauc_users", true, where, &m.gauc_users));
  RETURN_IF_ERROR(ParseCount(obj, "gauc_samples", false, where, &m.gauc_samples));
  RETURN_IF_ERROR(ParseCount(obj, "positives", false, where, &m.positives));
  // A value no evaluation writes (null reads as NaN: undefined, e.g. one class only); 1e-9 of
  // slack for the rounding of a weighted mean such as GAUC.
  auto in_range = [&](const char* key, double v, double lo, double hi) -> absl::Status {
    if (std::isnan(v) || (v >= lo - 1e-9 && v <= hi + 1e-9)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" is ", v, ", outside [", lo, ", ", hi, "]"));
  };
  RETURN_IF_ERROR(in_range("auc", m.auc, 0, 1));
  RETURN_IF_ERROR(in_range("gauc", m.gauc, 0, 1));
  RETURN_IF_ERROR(in_range("logloss", m.logloss, 0, std::numeric_limits<double>::infinity()));
  RETURN_IF_ERROR(in_range("calibration", m.calibration, 0, std::numeric_limits<double>::infinity()));
  return m;
}

bool ParseBucket(absl::string_view name, data::Bucket* out) {
  for (data::Bucket b : data::kAllBuckets) {
    if (name == data::BucketName(b)) {
      *out = b;
      return true;
    }
  }
  return false;
}

// "0.7512" with `digits` decimals, "n/a" for NaN.
std::string Fixed(double v, int digits) {
  if (std::isnan(v)) return "n/a";
  return absl::StrFormat("%.*f", digits, v);
}

// "+1.23%" for a relative lift, "n/a" for NaN.
std::string Percent(double lift) {
  if (std::isnan(lift)) return "n/a";
  return absl::StrFormat("%+.2f%%", 100.0 * lift);
}

// Slices in table order: overall, then the buckets.
struct Slice {
  std::string name;
  const Metrics* metrics;
};

std::vector<Slice> Slices(const EvalReport& report) {
  std::vector<Slice> slices = {{"overall", &report.overall}};
  for (data::Bucket b : data::kAllBuckets)
    slices.push_back({data::BucketName(b), &report.bucket(b)});
  return slices;
}

}  // namespace

std::string EvalReportToJson(const EvalReport& report) {
  nlohmann::ordered_json j;
  j["overall"] = MetricsToJson(report.overall);
  nlohmann::ordered_json buckets = nlohmann::ordered_json::object();
  for (data::Bucket b : data::kAllBuckets) {
    buckets[data::BucketName(b)] = MetricsToJson(report.bucket(b));
  }
  j["buckets"] = std::move(buckets);
  return j.dump(2) + "\n";
}

namespace {

// The text around 1-based byte `at`, on one line, for an error message.
std::string EvalJsonContext(absl::string_view text, size_t at) {
  const size_t begin = at > 20 ? at - 20 : 0;
  std::string around(text.substr(begin, 40));
  for (char& c : around) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return absl::StrCat("near '", around, "'");
}

}  // namespace

absl::StatusOr<EvalReport> ParseEvalJson(absl::string_view text, absl::string_view source_name) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte: where it stopped (a NaN written by Python's json.dump, a truncated file, ...).
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": not valid JSON at byte ", e.byte, " (", EvalJsonContext(text, e.byte), ")"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ": not a JSON object"));
  }
  EvalReport report;
  auto overall = j.find("overall");
  if (overall == j.end()) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ": missing \"overall\""));
  }
  ASSIGN_OR_RETURN(report.overall, ParseMetrics(*overall, absl::StrCat(source_name, ": overall")));
  auto buckets = j.find("buckets");
  if (buckets == j.end() || !buckets->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": missing or non-object \"buckets\""));
  }
  for (data::Bucket b : data::kAllBuckets) {
    const std::string where = absl::StrCat(source_name, ": buckets.", data::BucketName(b));
    auto it = buckets->find(data::BucketName(b));
    if (it == buckets->end()) return absl::InvalidArgumentError(absl::StrCat(where, ": missing"));
    ASSIGN_OR_RETURN(report.bucket(b), ParseMetrics(*it, where));
  }
  return report;
}

absl::Status WriteEvalJson(FileSystem* fs, const std::string& path, const EvalReport& report) {
  return fs->WriteStringToFileAtomic(path, EvalReportToJson(report));
}

absl::StatusOr<EvalReport> ReadEvalJson(FileSystem* fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  return ParseEvalJson(text, path);
}

absl::Status WritePredictionsTsv(FileSystem* fs, const std::string& path,
                                 absl::Span<const Prediction> predictions) {
  const std::string tmp = path + ".tmp";
  {
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, fs->NewWritableFile(tmp));
    std::string buffer = absl::StrCat(kTsvHeader, "\n");
    constexpr size_t kFlushBytes = 1 << 20;
    for (const Prediction& p : predictions) {
      absl::StrAppendFormat(&buffer, "%d\t%d\t%.17g\t%s\n", p.user_id, p.label == 1.0f ? 1 : 0,
                            p.score, data::BucketName(p.bucket));
      if (buffer.size() >= kFlushBytes) {
        RETURN_IF_ERROR(file->Append(buffer));
        buffer.clear();
      }
    }
    RETURN_IF_ERROR(file->Append(buffer));
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
  }
  RETURN_IF_ERROR(fs->Rename(tmp, path));
  return fs->SyncDir(Dirname(path));
}

absl::StatusOr<std::vector<Prediction>> ReadPredictionsTsv(FileSystem* fs,
                                                           const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> region, fs->MapReadOnly(path));
  absl::string_view rest = region->data();
  std::vector<Prediction> predictions;
  int64_t line_no = 0;
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", what));
  };
  while (!rest.empty()) {
    ++line_no;
    const size_t nl = rest.find('\n');
    absl::string_view line = rest.substr(0, nl);
    rest = nl == absl::string_view::npos ? absl::string_view() : rest.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_no == 1) {
      if (line != kTsvHeader) {
        return error(
            absl::StrCat("expected the header \"user_id<TAB>label<TAB>score<TAB>bucket\", "
                         "got \"",
                         absl::CHexEscape(line.substr(0, 80)), "\""));
      }
      continue;
    }
    const std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
    if (fields.size() != 4) {
      return error(absl::StrCat("expected 4 tab-separated columns, got ", fields.size()));
    }
    Prediction p;
    if (!absl::SimpleAtoi(fields[0], &p.user_id)) {
      return error(absl::StrCat("bad user_id \"", absl::CHexEscape(fields[0]), "\""));
    }
    if (fields[1] == "0") {
      p.label = 0;
    } else if (fields[1] == "1") {
      p.label = 1;
    } else {
      return error(absl::StrCat("label \"", absl::CHexEscape(fields[1]), "\" is not 0 or 1"));
    }
    if (!absl::SimpleAtod(fields[2], &p.score) || !(p.score >= 0.0 && p.score <= 1.0)) {
      return error(
          absl::StrCat("score \"", absl::CHexEscape(fields[2]), "\" is not a number in [0, 1]"));
    }
    if (!ParseBucket(fields[3], &p.bucket)) {
      return error(absl::StrCat("unknown bucket \"", absl::CHexEscape(fields[3]),
                                "\" (expected low, mid, high or new)"));
    }
    predictions.push_back(p);
  }
  if (line_no == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty file, expected a header"));
  }
  return predictions;
}

std::string MarkdownTable(const EvalReport& report) {
  std::string out =
      "| slice | samples | users | AUC | GAUC | GAUC users | GAUC samples | logloss | "
      "calibration |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Slice& s : Slices(report)) {
    const Metrics& m = *s.metrics;
    absl::StrAppend(&out, "| ", s.name, " | ", m.samples, " | ", m.users, " | ", Fixed(m.auc, 4),
                    " | ", Fixed(m.gauc, 4), " | ", m.gauc_users, " | ", m.gauc_samples, " | ",
                    Fixed(m.logloss, 4), " | ", Fixed(m.calibration, 3), " |\n");
  }
  return out;
}

double RelativeLift(double base, double run) {
  if (std::isnan(base) || std::isnan(run) || base == 0.0) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return (run - base) / base;
}

std::string CompareReports(const EvalReport& base, const EvalReport& run,
                           absl::string_view name_base, absl::string_view name_run) {
  std::string out = absl::StrCat("Comparison of run `", name_run, "` over base `", name_base,
                                 "` (lift = (run - base) / base; logloss: run - base, lower is "
                                 "better).\n\n");
  absl::StrAppend(&out,
                  "| slice | samples base | samples run | AUC base | AUC run | AUC lift | "
                  "GAUC base | GAUC run | GAUC lift | GAUC users base | GAUC users run | "
                  "logloss base | logloss run | logloss diff | calibration base | calibration run |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const std::vector<Slice> b = Slices(base);
  const std::vector<Slice> r = Slices(run);
  for (size_t i = 0; i < b.size(); ++i) {
    const Metrics& x = *b[i].metrics;
    const Metrics& y = *r[i].metrics;
    const double loss_diff = y.logloss - x.logloss;  // NaN propagates
    absl::StrAppend(
        &out, "| ", b[i].name, " | ", x.samples, " | ", y.samples, " | ", Fixed(x.auc, 4), " | ",
        Fixed(y.auc, 4), " | ", Percent(RelativeLift(x.auc, y.auc)), " | ", Fixed(x.gauc, 4), " | ",
        Fixed(y.gauc, 4), " | ", Percent(RelativeLift(x.gauc, y.gauc)), " | ", x.gauc_users, " | ",
        y.gauc_users, " | ", Fixed(x.logloss, 4), " | ", Fixed(y.logloss, 4), " | ",
        std::isnan(loss_diff) ? std::string("n/a") : absl::StrFormat("%+.4f", loss_diff), " | ",
        Fixed(x.calibration, 3), " | ", Fixed(y.calibration, 3), " |\n");
  }
  return out;
}

}  // namespace choir::eval
