#include "core/status.h"

#include <unistd.h>

#include <cerrno>
#include <memory>

#include "gtest/gtest.h"

namespace choir {
namespace {

TEST(ErrnoToStatusTest, MapsErrnoToCodeAndNamesCallAndPath) {
  const absl::Status status = ErrnoToStatus(ENOENT, "open", "/x/y");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "open(/x/y): No such file or directory");

  EXPECT_EQ(ErrnoToStatus(ENOSPC, "write", "f").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToStatus(EDQUOT, "write", "f").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToStatus(EACCES, "open", "f").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoToStatus(EPERM, "open", "f").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoToStatus(EIO, "read", "f").code(), absl::StatusCode::kInternal);
}

TEST(AnnotateTest, PrependsContextAndKeepsCode) {
  const absl::Status status = Annotate(absl::DataLossError("bad block"), "reading shard 3");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), "reading shard 3: bad block");
}

TEST(AnnotateTest, LeavesOkUnchanged) { EXPECT_TRUE(Annotate(absl::OkStatus(), "ctx").ok()); }

absl::Status FailIf(bool fail) { return fail ? absl::UnavailableError("down") : absl::OkStatus(); }

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::Status Chain(bool fail, int* steps) {
  RETURN_IF_ERROR(FailIf(fail));
  ++*steps;
  RETURN_IF_ERROR(Half(4));  // a StatusOr works too
  ++*steps;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsFirstErrorAndStops) {
  int steps = 0;
  const absl::Status status = Chain(/*fail=*/true, &steps);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(steps, 0);
}

TEST(StatusMacrosTest, ReturnIfErrorContinuesOnOk) {
  int steps = 0;
  EXPECT_TRUE(Chain(/*fail=*/false, &steps).ok());
  EXPECT_EQ(steps, 2);
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int half, Half(x));
  ASSIGN_OR_RETURN(const int quarter, Half(half));  // twice in one function
  return quarter;
}

TEST(StatusMacrosTest, AssignOrReturnAssignsValueOrReturnsError) {
  EXPECT_EQ(Quarter(12).value(), 3);
  const absl::StatusOr<int> odd_half = Quarter(6);
  EXPECT_EQ(odd_half.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(odd_half.status().message(), "odd");
}

TEST(StatusMacrosTest, AssignOrReturnMovesOnlyTypes) {
  auto make = []() -> absl::StatusOr<std::unique_ptr<int>> { return std::make_unique<int>(7); };
  auto use = [&]() -> absl::StatusOr<int> {
    ASSIGN_OR_RETURN(std::unique_ptr<int> p, make());
    return *p;
  };
  EXPECT_EQ(use().value(), 7);
}

absl::Status CloseBadFd() {
  CHOIR_SYSCALL(::close(-1));
  return absl::OkStatus();
}

TEST(StatusMacrosTest, SyscallRecordsExpressionAndErrno) {
  const absl::Status status = CloseBadFd();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(status.message().find("::close(-1)"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("status_test.cc:"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("Bad file descriptor"), absl::string_view::npos) << status;
}

}  // namespace
}  // namespace choir
