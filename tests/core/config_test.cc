#include "core/config.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

TEST(ConfigTest, EmptyPathGivesDocumentedDefaults) {
  MemFileSystem fs;
  auto config = LoadJobConfig(&fs, "", {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "choir");
  EXPECT_EQ(config->task(), TASK_CVR);
  EXPECT_EQ(config->data().max_bad_rows(), 0);
  EXPECT_EQ(config->data().reader_threads(), 2);
  EXPECT_EQ(config->data().buckets().high_min_purchases(), 20);
  EXPECT_EQ(config->generator().users(), 20000);
  EXPECT_EQ(config->generator().seed(), 1u);
}

TEST(ConfigTest, LoadsTextFileThenAppliesOverridesInOrder) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/configs/job.pbtxt", R"pb(
                  # A comment.
                  name: "quickstart"
                  task: TASK_CTCVR
                  data {
                    dir: "/data/x"
                    buckets { low_max_purchases: 3 }
                  }
                  generator { users: 500 }
                )pb")
                  .ok());
  auto config = LoadJobConfig(&fs, "/configs/job.pbtxt",
                              {"generator.users=700", "generator.users=800", "task=TASK_CTR"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "quickstart");
  EXPECT_EQ(config->task(), TASK_CTR);
  EXPECT_EQ(config->data().dir(), "/data/x");
  EXPECT_EQ(config->data().buckets().low_max_purchases(), 3);
  EXPECT_EQ(config->data().buckets().high_min_purchases(), 20);
  EXPECT_EQ(config->generator().users(), 800);
}

// Data fields the loader checks (the trainer checks its own and the model's where it builds
// them): each error names the field and its value.
TEST(ConfigTest, DataFieldsOutOfRangeAreNamed) {
  MemFileSystem fs;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"data.max_bad_rows=-3", "data.max_bad_rows must be >= 0 (it is -3)"},
      {"data.max_bad_fraction=2", "data.max_bad_fraction must be in [0, 1] (it is 2)"},
      {"data.max_bad_fraction=nan", "data.max_bad_fraction must be in [0, 1] (it is nan)"},
      {"data.reader_threads=0", "data.reader_threads must be in [1, 64] (it is 0)"},
      {"data.reader_threads=65", "data.reader_threads must be in [1, 64] (it is 65)"},
      {"data.buckets.window_days=-30", "data.buckets.window_days must be >= 1 (it is -30)"},
      {"data.buckets.low_max_purchases=50",
       "data.buckets.high_min_purchases must be > data.buckets.low_max_purchases (50) (it is 20)"},
  };
  for (const auto& [spec, message] : cases) {
    const absl::StatusOr<JobConfig> config = LoadJobConfig(&fs, "", {spec});
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_EQ(config.status().message(), message) << spec;
  }
  EXPECT_TRUE(LoadJobConfig(&fs, "", {"data.buckets.low_max_purchases=0", "data.buckets.high_min_purchases=1",
                                      "data.max_bad_fraction=1", "data.reader_threads=64"})
                  .ok());
}

TEST(ConfigTest, AByteOrderMarkIsSkipped) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/bom.pbtxt", "\xEF\xBB\xBFname: \"bom\"\n").ok());
  const absl::StatusOr<JobConfig> config = LoadJobConfig(&fs, "/bom.pbtxt", {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "bom");
}

TEST(ConfigTest, MissingFileIsNotFound) {
  MemFileSystem fs;
  EXPECT_EQ(LoadJobConfig(&fs, "/nope.pbtxt", {}).status().code(), absl::StatusCode::kNotFound);
}

TEST(ConfigTest, SyntaxErrorNamesSourceLineAndColumn) {
  JobConfig config;
  const absl::Status status =
      ParseTextProto("name: \"a\"\ndata {\n  reader_threads: many\n}\n", "job.pbtxt", &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(status.message(), "job.pbtxt:3:")) << status;
  EXPECT_TRUE(Contains(status.message(), "many")) << status;
}

TEST(ConfigTest, UnknownFieldInFileIsAnError) {
  JobConfig config;
  const absl::Status status = ParseTextProto("nmae: \"typo\"", "job.pbtxt", &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(status.message(), "job.pbtxt:1:")) << status;
  EXPECT_TRUE(Contains(status.message(), "nmae")) << status;
}

TEST(ConfigTest, OverridesSetScalarsEnumsStringsAndNestedFields) {
  JobConfig config;
  ASSERT_TRUE(ApplyOverride("data.reader_threads=8", &config).ok());
  ASSERT_TRUE(ApplyOverride("data.max_bad_rows=-5", &config).ok());
  ASSERT_TRUE(ApplyOverride("data.max_bad_fraction=0.25", &config).ok());
  ASSERT_TRUE(ApplyOverride("generator.seed=18446744073709551615", &config).ok());
  ASSERT_TRUE(ApplyOverride("task=TASK_CTR", &config).ok());
  ASSERT_TRUE(ApplyOverride("name=a=b c", &config).ok());  // the first '=' separates
  ASSERT_TRUE(ApplyOverride("data.buckets.window_days=30", &config).ok());
  EXPECT_EQ(config.data().reader_threads(), 8);
  EXPECT_EQ(config.data().max_bad_rows(), -5);
  EXPECT_DOUBLE_EQ(config.data().max_bad_fraction(), 0.25);
  EXPECT_EQ(config.generator().seed(), 18446744073709551615u);
  EXPECT_EQ(config.task(), TASK_CTR);
  EXPECT_EQ(config.name(), "a=b c");
  EXPECT_EQ(config.data().buckets().window_days(), 30);
  EXPECT_EQ(config.data().buckets().low_max_purchases(), 2);
}

TEST(ConfigTest, OverridesSetBoolsFloatsAndReplaceRepeatedFields) {
  // JobConfig has no repeated or bool field yet; descriptor.proto has all kinds.
  google::protobuf::FileDescriptorProto file;
  file.add_dependency("old.proto");
  ASSERT_TRUE(ApplyOverride("dependency=a.proto,b.proto", &file).ok());
  EXPECT_EQ(file.dependency_size(), 2);
  EXPECT_EQ(file.dependency(0), "a.proto");
  EXPECT_EQ(file.dependency(1), "b.proto");
  ASSERT_TRUE(ApplyOverride("public_dependency=3, 1,4", &file).ok());
  EXPECT_EQ(std::vector<int>(file.public_dependency().begin(), file.public_dependency().end()),
            (std::vector<int>{3, 1, 4}));
  ASSERT_TRUE(ApplyOverride("public_dependency=", &file).ok());
  EXPECT_EQ(file.public_dependency_size(), 0);
  ASSERT_TRUE(ApplyOverride("options.java_multiple_files=true", &file).ok());
  EXPECT_TRUE(file.options().java_multiple_files());
  ASSERT_TRUE(ApplyOverride("options.optimize_for=CODE_SIZE", &file).ok());
  EXPECT_EQ(file.options().optimize_for(), google::protobuf::FileOptions::CODE_SIZE);

  EXPECT_FALSE(ApplyOverride("public_dependency=1,x", &file).ok());
  EXPECT_EQ(file.public_dependency_size(), 0) << "a failed override changes nothing";
}

TEST(ConfigTest, UnknownOverrideFieldIsInvalidAndNamed) {
  JobConfig config;
  const absl::Status status = ApplyOverride("data.reader_thread=3", &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(status.message(), "data.reader_thread=3")) << status;
  EXPECT_TRUE(Contains(status.message(), "'reader_thread'")) << status;
  EXPECT_TRUE(Contains(status.message(), "choir.DataConfig")) << status;
  EXPECT_FALSE(config.has_data()) << "a failed override creates nothing";
}

TEST(ConfigTest, UnparsableOverrideValuesAreInvalid) {
  JobConfig config;
  for (const char* spec : {"data.reader_threads=eight", "data.reader_threads=99999999999",
                           "data.max_bad_fraction=half", "generator.seed=-1", "task=TASK_NONE",
                           "task=7", "name", "=3", "data=3", "name.x=1"}) {
    const absl::Status status = ApplyOverride(spec, &config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_TRUE(Contains(status.message(), spec)) << status;
  }
  const absl::Status status = ApplyOverride("data.reader_threads=eight", &config);
  EXPECT_TRUE(Contains(status.message(), "choir.DataConfig.reader_threads")) << status;
  EXPECT_EQ(ToTextProto(config), "") << "nothing was set";
}

TEST(ConfigTest, TextProtoRoundTrips) {
  JobConfig config;
  ASSERT_TRUE(ApplyOverride("name=round trip", &config).ok());
  ASSERT_TRUE(ApplyOverride("data.buckets.high_min_purchases=7", &config).ok());
  const std::string text = ToTextProto(config);
  EXPECT_TRUE(Contains(text, "name: \"round trip\"")) << text;
  JobConfig parsed;
  ASSERT_TRUE(ParseTextProto(text, "printed", &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), config.SerializeAsString());
}

// Every singular field becomes explicit at its default (what `config print --defaults` shows),
// set fields and lists keep their values, and every accessor reads what it read before.
TEST(ConfigTest, DefaultsBecomeExplicitWithoutChangingAnyValue) {
  JobConfig config;
  ASSERT_TRUE(ApplyOverride("trainer.batch_size=77", &config).ok());
  ASSERT_TRUE(ApplyOverride("model.hidden=8,4", &config).ok());
  JobConfig explicit_config = config;
  SetDefaultsExplicitly(&explicit_config);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equivalent(config, explicit_config));
  EXPECT_EQ(explicit_config.trainer().batch_size(), 77);
  EXPECT_TRUE(explicit_config.trainer().has_epochs());
  EXPECT_EQ(explicit_config.trainer().epochs(), config.trainer().epochs());
  EXPECT_TRUE(explicit_config.model().choirrec().has_kd_direction());
  EXPECT_EQ(explicit_config.model().choirrec().kd_direction(), "individual_to_group");
  EXPECT_TRUE(explicit_config.data().buckets().has_window_days());
  EXPECT_EQ(explicit_config.model().hidden_size(), 2);
  EXPECT_EQ(explicit_config.model().choirrec().group_hidden_size(), 0);  // lists stay empty
  const std::string text = ToTextProto(explicit_config);
  EXPECT_TRUE(Contains(text, "kd_margin_form: \"squared_hinge\"")) << text;
  EXPECT_TRUE(Contains(text, "task: TASK_CVR")) << text;
  JobConfig parsed;
  ASSERT_TRUE(ParseTextProto(text, "printed", &parsed).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equivalent(config, parsed));
}

}  // namespace
}  // namespace choir
