#include "core/config.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/status.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace choir {
namespace {

using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Keeps the first error the text parser reports, with 1-based line and column.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (error_.empty()) error_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

// Parses `text` as one value of `field` and sets it (singular) or adds it (repeated).
// Returns false when the text is not a valid value.
bool SetFieldFromText(Message* msg, const FieldDescriptor* field, absl::string_view text) {
  const Reflection* r = msg->GetReflection();
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
#define CHOIR_SET_NUMBER_(CPPTYPE, type, Name, parse) \
  case FieldDescriptor::CPPTYPE: {                    \
    type value;                                       \
    if (!parse(text, &value)) return false;           \
    if (repeated) {                                   \
      r->Add##Name(msg, field, value);                \
    } else {                                          \
      r->Set##Name(msg, field, value);                \
    }                                                 \
    return true;                                      \
  }
    CHOIR_SET_NUMBER_(CPPTYPE_INT32, int32_t, Int32, absl::SimpleAtoi)
    CHOIR_SET_NUMBER_(CPPTYPE_INT64, int64_t, Int64, absl::SimpleAtoi)
    CHOIR_SET_NUMBER_(CPPTYPE_UINT32, uint32_t, UInt32, absl::SimpleAtoi)
    CHOIR_SET_NUMBER_(CPPTYPE_UINT64, uint64_t, UInt64, absl::SimpleAtoi)
    CHOIR_SET_NUMBER_(CPPTYPE_DOUBLE, double, Double, absl::SimpleAtod)
    CHOIR_SET_NUMBER_(CPPTYPE_FLOAT, float, Float, absl::SimpleAtof)
    CHOIR_SET_NUMBER_(CPPTYPE_BOOL, bool, Bool, absl::SimpleAtob)
#undef CHOIR_SET_NUMBER_
    case FieldDescriptor::CPPTYPE_STRING:
      if (repeated) {
        r->AddString(msg, field, std::string(text));
      } else {
        r->SetString(msg, field, std::string(text));
      }
      return true;
    case FieldDescriptor::CPPTYPE_ENUM: {
      // By name; a number is accepted when it names a declared value.
      const std::string name(absl::StripAsciiWhitespace(text));
      const EnumValueDescriptor* value = field->enum_type()->FindValueByName(name);
      int number;
      if (value == nullptr && absl::SimpleAtoi(name, &number)) {
        value = field->enum_type()->FindValueByNumber(number);
      }
      if (value == nullptr) return false;
      if (repeated) {
        r->AddEnum(msg, field, value);
      } else {
        r->SetEnum(msg, field, value);
      }
      return true;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return false;
  }
  return false;
}

}  // namespace

absl::Status ParseTextProto(absl::string_view text, absl::string_view source_name,
                            google::protobuf::Message* msg) {
  FirstErrorCollector errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), msg)) {
    const std::string& error = errors.error().empty() ? "parse error" : errors.error();
    return absl::InvalidArgumentError(absl::StrCat(source_name, ":", error));
  }
  return absl::OkStatus();
}

absl::Status ApplyOverride(absl::string_view override_spec, google::protobuf::Message* msg) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("override '", override_spec, "': ", why));
  };
  const size_t eq = override_spec.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return invalid("expected path.to.field=value");
  }
  const absl::string_view path = absl::StripAsciiWhitespace(override_spec.substr(0, eq));
  const absl::string_view value = override_spec.substr(eq + 1);

  // Applied to a copy, so that a failed override leaves `msg` unchanged.
  std::unique_ptr<Message> copy(msg->New());
  copy->CopyFrom(*msg);
  const std::vector<std::string> names = absl::StrSplit(path, '.');
  Message* target = copy.get();
  const FieldDescriptor* field = nullptr;
  for (size_t i = 0; i < names.size(); ++i) {
    field = target->GetDescriptor()->FindFieldByName(names[i]);
    if (field == nullptr) {
      return invalid(
          absl::StrCat("no field '", names[i], "' in ", target->GetDescriptor()->full_name()));
    }
    if (i + 1 == names.size()) break;
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || field->is_repeated()) {
      return invalid(absl::StrCat("field ", field->full_name(), " is not a singular message"));
    }
    target = target->GetReflection()->MutableMessage(target, field);
  }
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return invalid(
        absl::StrCat("field ", field->full_name(), " is a message; set its fields one by one"));
  }
  const auto bad_value = [&](absl::string_view text) {
    return invalid(absl::StrCat("invalid value '", text, "' for ", field->type_name(), " field ",
                                field->full_name()));
  };
  if (field->is_repeated()) {
    // The list replaces the old contents; an empty value clears the field.
    target->GetReflection()->ClearField(target, field);
    if (!value.empty()) {
      for (absl::string_view element : absl::StrSplit(value, ',')) {
        if (!SetFieldFromText(target, field, element)) return bad_value(element);
      }
    }
  } else if (!SetFieldFromText(target, field, value)) {
    return bad_value(value);
  }
  msg->CopyFrom(*copy);
  return absl::OkStatus();
}

absl::StatusOr<JobConfig> LoadJobConfig(FileSystem* fs, const std::string& path,
                                        const std::vector<std::string>& overrides) {
  JobConfig config;
  if (!path.empty()) {
    ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
    if (absl::StartsWith(text, "\xEF\xBB\xBF")) text.erase(0, 3);  // a UTF-8 byte-order mark
    RETURN_IF_ERROR(ParseTextProto(text, path, &config));
  }
  for (const std::string& spec : overrides) RETURN_IF_ERROR(ApplyOverride(spec, &config));
  RETURN_IF_ERROR(ValidateDataConfig(config.data()));
  return config;
}

absl::Status ValidateDataConfig(const DataConfig& data) {
  auto bad = [](absl::string_view field, absl::string_view want, auto value) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be ", want, " (it is ", value, ")"));
  };
  if (data.max_bad_rows() < 0) return bad("data.max_bad_rows", ">= 0", data.max_bad_rows());
  if (data.reader_threads() < 1 || data.reader_threads() > 64) {
    return bad("data.reader_threads", "in [1, 64]", data.reader_threads());
  }
  if (!(data.max_bad_fraction() >= 0 && data.max_bad_fraction() <= 1)) {
    return bad("data.max_bad_fraction", "in [0, 1]", data.max_bad_fraction());
  }
  const ActivityBuckets& b = data.buckets();
  if (b.window_days() < 1) return bad("data.buckets.window_days", ">= 1", b.window_days());
  if (b.low_max_purchases() < 0) return bad("data.buckets.low_max_purchases", ">= 0", b.low_max_purchases());
  if (b.high_min_purchases() <= b.low_max_purchases()) {
    return bad("data.buckets.high_min_purchases", absl::StrCat("> data.buckets.low_max_purchases (", b.low_max_purchases(), ")"),
               b.high_min_purchases());
  }
  return absl::OkStatus();
}

void SetDefaultsExplicitly(google::protobuf::Message* msg) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Descriptor* d = msg->GetDescriptor();
  const google::protobuf::Reflection* r = msg->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated() || f->containing_oneof() != nullptr) continue;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      SetDefaultsExplicitly(r->MutableMessage(msg, f));
      continue;
    }
    if (r->HasField(*msg, f)) continue;
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(msg, f, f->default_value_int32());
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(msg, f, f->default_value_int64());
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(msg, f, f->default_value_uint32());
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(msg, f, f->default_value_uint64());
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(msg, f, f->default_value_double());
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(msg, f, f->default_value_float());
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(msg, f, f->default_value_bool());
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        r->SetEnum(msg, f, f->default_value_enum());
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        r->SetString(msg, f, f->default_value_string());
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;  // handled above
    }
  }
}

std::string ToTextProto(const google::protobuf::Message& msg) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(msg, &text);
  return text;
}

}  // namespace choir
