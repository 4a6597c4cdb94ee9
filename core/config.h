// Loading the job file (core/proto/job.proto) with overrides.
#ifndef CHOIR_CORE_CONFIG_H_
#define CHOIR_CORE_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "google/protobuf/message.h"

namespace choir {

// Parses protobuf text format into `msg`; errors name `source_name` with line and column.
absl::Status ParseTextProto(absl::string_view text, absl::string_view source_name,
                            google::protobuf::Message* msg);

// Applies one override "path.to.field=value" to `msg`: nested singular message fields are
// created on the way; scalar, enum (by name) and string fields are set from the value text;
// repeated fields take a comma-separated list replacing the old contents. An unknown field or
// an unparsable value is INVALID_ARGUMENT naming the override.
absl::Status ApplyOverride(absl::string_view override_spec, google::protobuf::Message* msg);

// INVALID_ARGUMENT naming the first data.* field out of range (error budgets, activity buckets).
absl::Status ValidateDataConfig(const DataConfig& data);

// Reads the job file at `path` (empty: the defaults), applies `overrides` in order and checks
// the data fields (ValidateDataConfig); the other sections are checked where they are used.
absl::StatusOr<JobConfig> LoadJobConfig(FileSystem* fs, const std::string& path,
                                        const std::vector<std::string>& overrides);

// The message in protobuf text format (for `choir config print` and manifests).
std::string ToTextProto(const google::protobuf::Message& msg);

// Sets every unset singular field of `msg` to its declared default, recursing into singular
// message fields (created when absent), so that the text format shows every setting
// (`choir config print --defaults`). Repeated fields stay as they are: an empty list means
// the default its comment in the .proto gives, which is not declared there. The values read
// through the accessors are unchanged.
void SetDefaultsExplicitly(google::protobuf::Message* msg);

}  // namespace choir

#endif  // CHOIR_CORE_CONFIG_H_
