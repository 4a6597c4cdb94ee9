// One suite for every FileSystem implementation, and the fault-injecting wrapper over each.
#include "core/fs.h"

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

// A file system under test with an empty scratch directory in it.
struct Sandbox {
  virtual ~Sandbox() = default;
  virtual FileSystem* fs() = 0;
  std::string root;
};

class PosixSandbox : public Sandbox {
 public:
  PosixSandbox() {
    std::string pattern = JoinPath(testing::TempDir(), "choir_fs_test.XXXXXX");
    char* dir = ::mkdtemp(pattern.data());
    EXPECT_NE(dir, nullptr) << "mkdtemp " << pattern;
    root = pattern;
  }
  ~PosixSandbox() override { EXPECT_TRUE(fs()->DeleteRecursively(root).ok()); }
  FileSystem* fs() override { return PosixFileSystem(); }
};

class MemSandbox : public Sandbox {
 public:
  MemSandbox() {
    root = "/sandbox";
    EXPECT_TRUE(mem_.CreateDirs(root).ok());
  }
  FileSystem* fs() override { return &mem_; }

 private:
  MemFileSystem mem_;
};

struct FsParam {
  std::string name;
  std::function<std::unique_ptr<Sandbox>()> make;
};

class FileSystemTest : public testing::TestWithParam<FsParam> {
 protected:
  void SetUp() override {
    sandbox_ = GetParam().make();
    fs_ = sandbox_->fs();
  }
  std::string Path(absl::string_view name) const { return JoinPath(sandbox_->root, name); }
  void Write(const std::string& path, absl::string_view contents) {
    auto file = fs_->NewWritableFile(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_TRUE((*file)->Append(contents).ok());
    ASSERT_TRUE((*file)->Close().ok());
  }
  std::string Read(const std::string& path) {
    auto contents = fs_->ReadFileToString(path);
    EXPECT_TRUE(contents.ok()) << contents.status();
    return contents.ok() ? *contents : std::string();
  }

  std::unique_ptr<Sandbox> sandbox_;
  FileSystem* fs_ = nullptr;
};

TEST_P(FileSystemTest, AppendableFileKeepsEarlierContentsAndCreatesMissingFiles) {
  auto fresh = fs_->NewAppendableFile(Path("log"));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ASSERT_TRUE((*fresh)->Append("one,").ok());
  ASSERT_TRUE((*fresh)->Close().ok());
  auto again = fs_->NewAppendableFile(Path("log"));
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE((*again)->Append("two").ok());
  ASSERT_TRUE((*again)->Sync().ok());
  EXPECT_EQ(Read(Path("log")), "one,two");  // synced appends are visible before Close
  ASSERT_TRUE((*again)->Close().ok());
  EXPECT_EQ(fs_->NewAppendableFile(Path("no/such/dir/log")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(FileSystemTest, WrittenFileReadsBackIdentically) {
  std::string big(200000, '\0');  // larger than the posix write buffer
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 251);
  auto file = fs_->NewWritableFile(Path("f"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), Path("f"));
  ASSERT_TRUE((*file)->Append("head:").ok());
  ASSERT_TRUE((*file)->Append(big).ok());
  ASSERT_TRUE((*file)->Append(":tail").ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Close().ok());
  EXPECT_FALSE((*file)->Append("x").ok()) << "append after close";
  EXPECT_FALSE((*file)->Close().ok()) << "second close";

  const std::string expected = "head:" + big + ":tail";
  EXPECT_EQ(Read(Path("f")), expected);
  EXPECT_EQ(fs_->FileSize(Path("f")).value(), expected.size());
  EXPECT_TRUE(fs_->Exists(Path("f")));
  EXPECT_FALSE(fs_->IsDirectory(Path("f")));
}

TEST_P(FileSystemTest, NewWritableFileTruncates) {
  Write(Path("f"), "a long first version");
  Write(Path("f"), "short");
  EXPECT_EQ(Read(Path("f")), "short");
}

TEST_P(FileSystemTest, NewWritableFileNeedsParentDirectory) {
  EXPECT_EQ(fs_->NewWritableFile(Path("no/such/f")).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(FileSystemTest, MapReadOnlyGivesWholeFileAndEmptyFiles) {
  Write(Path("f"), "mapped bytes");
  auto region = fs_->MapReadOnly(Path("f"));
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ((*region)->data(), "mapped bytes");
  EXPECT_EQ((*region)->path(), Path("f"));

  Write(Path("empty"), "");
  auto empty = fs_->MapReadOnly(Path("empty"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE((*empty)->data().empty());
}

TEST_P(FileSystemTest, MissingFileIsNotFound) {
  const std::string missing = Path("missing");
  EXPECT_FALSE(fs_->Exists(missing));
  EXPECT_EQ(fs_->MapReadOnly(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs_->ReadFileToString(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs_->FileSize(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs_->DeleteFile(missing).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs_->ListDir(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs_->Rename(missing, Path("x")).code(), absl::StatusCode::kNotFound);
  // The message names the path.
  EXPECT_NE(fs_->MapReadOnly(missing).status().message().find(missing), absl::string_view::npos);
}

TEST_P(FileSystemTest, ListDirReturnsSortedDirectChildren) {
  ASSERT_TRUE(fs_->CreateDirs(Path("d/sub/deeper")).ok());
  ASSERT_TRUE(fs_->CreateDirs(Path("d/empty")).ok());
  Write(Path("d/b"), "");
  Write(Path("d/a"), "");
  Write(Path("d/c.txt"), "");
  Write(Path("d/sub/inner"), "");
  Write(Path("d-sibling"), "");
  auto names = fs_->ListDir(Path("d"));
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c.txt", "empty", "sub"}));
  EXPECT_TRUE(fs_->ListDir(Path("d/empty")).value().empty());
  EXPECT_TRUE(fs_->IsDirectory(Path("d/sub")));
}

TEST_P(FileSystemTest, CreateDirsIsIdempotentAndRejectsFiles) {
  ASSERT_TRUE(fs_->CreateDirs(Path("x/y")).ok());
  EXPECT_TRUE(fs_->CreateDirs(Path("x/y")).ok());
  EXPECT_TRUE(fs_->CreateDirs(Path("x")).ok());
  EXPECT_TRUE(fs_->IsDirectory(Path("x/y")));
  Write(Path("x/file"), "");
  EXPECT_FALSE(fs_->CreateDirs(Path("x/file/z")).ok());
}

TEST_P(FileSystemTest, RenameReplacesDestination) {
  Write(Path("new"), "new contents");
  Write(Path("dest"), "old contents");
  ASSERT_TRUE(fs_->Rename(Path("new"), Path("dest")).ok());
  EXPECT_FALSE(fs_->Exists(Path("new")));
  EXPECT_EQ(Read(Path("dest")), "new contents");
}

TEST_P(FileSystemTest, RenameMovesDirectories) {
  ASSERT_TRUE(fs_->CreateDirs(Path("staging/sub")).ok());
  Write(Path("staging/sub/f"), "inside");
  ASSERT_TRUE(fs_->Rename(Path("staging"), Path("final")).ok());
  EXPECT_FALSE(fs_->Exists(Path("staging")));
  EXPECT_EQ(Read(Path("final/sub/f")), "inside");
  EXPECT_EQ(fs_->ListDir(Path("final")).value(), std::vector<std::string>{"sub"});
}

TEST_P(FileSystemTest, DeleteRecursivelyRemovesTreeAndAcceptsMissing) {
  ASSERT_TRUE(fs_->CreateDirs(Path("t/a/b")).ok());
  Write(Path("t/a/b/f"), "x");
  Write(Path("t/g"), "y");
  Write(Path("t-kept"), "z");
  ASSERT_TRUE(fs_->DeleteRecursively(Path("t")).ok());
  EXPECT_FALSE(fs_->Exists(Path("t")));
  EXPECT_FALSE(fs_->Exists(Path("t/a/b/f")));
  EXPECT_TRUE(fs_->Exists(Path("t-kept")));
  EXPECT_TRUE(fs_->DeleteRecursively(Path("t")).ok());
}

TEST_P(FileSystemTest, DeleteFileRemovesOnlyThatFile) {
  Write(Path("a"), "1");
  Write(Path("b"), "2");
  ASSERT_TRUE(fs_->DeleteFile(Path("a")).ok());
  EXPECT_FALSE(fs_->Exists(Path("a")));
  EXPECT_EQ(fs_->ListDir(sandbox_->root).value(), std::vector<std::string>{"b"});
}

TEST_P(FileSystemTest, WriteStringToFileAtomicReplacesAndLeavesNoTemporary) {
  ASSERT_TRUE(fs_->WriteStringToFileAtomic(Path("m"), "v1").ok());
  ASSERT_TRUE(fs_->WriteStringToFileAtomic(Path("m"), "version 2").ok());
  EXPECT_EQ(Read(Path("m")), "version 2");
  EXPECT_EQ(fs_->ListDir(sandbox_->root).value(), std::vector<std::string>{"m"});
}

TEST_P(FileSystemTest, FailedWriteLeavesOnlyThePrefixInTheBaseFile) {
  FaultInjectingFileSystem faulty(fs_);
  faulty.FailWritesAfterBytes(10);
  auto file = faulty.NewWritableFile(Path("f"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE((*file)->Append("0123456").ok());
  const absl::Status status = (*file)->Append("789abcdef");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("injected write failure after 10 bytes"), absl::string_view::npos)
      << status;
  EXPECT_EQ((*file)->Append("more").code(), absl::StatusCode::kUnavailable);
  (*file)->Close().IgnoreError();
  EXPECT_EQ(Read(Path("f")), "0123456789");
  EXPECT_EQ(faulty.faults_injected(), 2);
}

TEST_P(FileSystemTest, FailedAtomicWriteLeavesOldDestinationUnchanged) {
  FaultInjectingFileSystem faulty(fs_);
  ASSERT_TRUE(faulty.WriteStringToFileAtomic(Path("m"), "old manifest").ok());
  faulty.FailWritesAfterBytes(3);
  EXPECT_EQ(faulty.WriteStringToFileAtomic(Path("m"), "new manifest").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(Read(Path("m")), "old manifest");
  EXPECT_EQ(fs_->ListDir(sandbox_->root).value(), std::vector<std::string>{"m"});
}

TEST_P(FileSystemTest, FailNextRenameFailsOnceAndChangesNothing) {
  FaultInjectingFileSystem faulty(fs_);
  Write(Path("a"), "A");
  Write(Path("b"), "B");
  faulty.FailNextRename();
  EXPECT_EQ(faulty.Rename(Path("a"), Path("b")).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Read(Path("a")), "A");
  EXPECT_EQ(Read(Path("b")), "B");
  EXPECT_EQ(faulty.faults_injected(), 1);
  ASSERT_TRUE(faulty.Rename(Path("a"), Path("b")).ok());
  EXPECT_EQ(Read(Path("b")), "A");
}

TEST_P(FileSystemTest, FailedRenameInAtomicWriteLeavesOldDestination) {
  FaultInjectingFileSystem faulty(fs_);
  ASSERT_TRUE(faulty.WriteStringToFileAtomic(Path("m"), "old").ok());
  faulty.FailNextRename();
  EXPECT_FALSE(faulty.WriteStringToFileAtomic(Path("m"), "new").ok());
  EXPECT_EQ(Read(Path("m")), "old");
  EXPECT_FALSE(fs_->Exists(Path("m.tmp")));
}

TEST_P(FileSystemTest, CorruptReadsFlipsExactlyThatByte) {
  FaultInjectingFileSystem faulty(fs_);
  Write(Path("f"), "abcdef");
  faulty.CorruptReadsAtOffset(2);
  auto region = faulty.MapReadOnly(Path("f"));
  ASSERT_TRUE(region.ok()) << region.status();
  std::string expected = "abcdef";
  expected[2] = static_cast<char>(expected[2] ^ 0xFF);
  EXPECT_EQ((*region)->data(), expected);
  EXPECT_EQ(faulty.faults_injected(), 1);
  EXPECT_EQ(Read(Path("f")), "abcdef") << "the base file is untouched";

  faulty.CorruptReadsAtOffset(6);  // past the end: nothing to flip
  EXPECT_EQ(faulty.ReadFileToString(Path("f")).value(), "abcdef");
  faulty.CorruptReadsAtOffset(-1);
  EXPECT_EQ(faulty.ReadFileToString(Path("f")).value(), "abcdef");
  EXPECT_EQ(faulty.faults_injected(), 1);
}

TEST_P(FileSystemTest, SyncDirSucceedsOnDirectoriesAndFailsOnMissingOnes) {
  ASSERT_TRUE(fs_->CreateDirs(Path("d")).ok());
  EXPECT_TRUE(fs_->SyncDir(sandbox_->root).ok());
  EXPECT_TRUE(fs_->SyncDir(Path("d")).ok());
  const absl::Status missing = fs_->SyncDir(Path("missing"));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find(Path("missing")), absl::string_view::npos) << missing;
  Write(Path("f"), "");
  EXPECT_FALSE(fs_->SyncDir(Path("f")).ok()) << "a file is not a directory";
}

TEST_P(FileSystemTest, FaultInjectingSyncDirPassesThroughAndFailsOnceWhenAsked) {
  FaultInjectingFileSystem faulty(fs_);
  EXPECT_TRUE(faulty.SyncDir(sandbox_->root).ok());
  EXPECT_EQ(faulty.SyncDir(Path("missing")).code(), absl::StatusCode::kNotFound);
  faulty.FailNextSyncDir();
  EXPECT_EQ(faulty.SyncDir(sandbox_->root).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(faulty.SyncDir(sandbox_->root).ok());
  EXPECT_EQ(faulty.faults_injected(), 1);
}

TEST_P(FileSystemTest, FaultInjectingSlowSyncsWaitAndStillSync) {
  FaultInjectingFileSystem faulty(fs_);
  faulty.SlowDownSyncs(absl::Milliseconds(100));
  auto file = faulty.NewWritableFile(Path("slow"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE((*file)->Append("data").ok());
  const absl::Time start = absl::Now();
  EXPECT_TRUE((*file)->Sync().ok());
  EXPECT_TRUE(faulty.SyncDir(sandbox_->root).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_TRUE((*file)->Close().ok());
  EXPECT_EQ(Read(Path("slow")), "data");
}

TEST_P(FileSystemTest, AtomicWriteSyncsTheDirectoryAfterTheRename) {
  FaultInjectingFileSystem faulty(fs_);
  ASSERT_TRUE(faulty.WriteStringToFileAtomic(Path("m"), "old").ok());
  // A failing directory sync is reported; it comes after the rename, so the new contents are
  // already in place (and nothing is left behind).
  faulty.FailNextSyncDir();
  const absl::Status status = faulty.WriteStringToFileAtomic(Path("m"), "new");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("directory sync"), absl::string_view::npos) << status;
  EXPECT_EQ(faulty.faults_injected(), 1);
  EXPECT_EQ(Read(Path("m")), "new");
  EXPECT_EQ(fs_->ListDir(sandbox_->root).value(), std::vector<std::string>{"m"});
}

// A writer writes to the file it opened (the inode), whatever happens to its name.
TEST_P(FileSystemTest, WriterKeepsWritingToItsFileAfterARename) {
  auto file = fs_->NewWritableFile(Path("a"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE((*file)->Append("before,").ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE(fs_->Rename(Path("a"), Path("b")).ok());
  ASSERT_TRUE((*file)->Append("after").ok());
  ASSERT_TRUE((*file)->Close().ok());
  EXPECT_FALSE(fs_->Exists(Path("a")));
  EXPECT_EQ(Read(Path("b")), "before,after");
}

TEST_P(FileSystemTest, WriterOfADeletedFileSucceedsAndNothingReappears) {
  auto file = fs_->NewWritableFile(Path("a"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE((*file)->Append("before,").ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE(fs_->DeleteFile(Path("a")).ok());
  ASSERT_TRUE((*file)->Append("after").ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Close().ok());
  EXPECT_FALSE(fs_->Exists(Path("a")));
  EXPECT_TRUE(fs_->ListDir(sandbox_->root).value().empty());
}

TEST_P(FileSystemTest, MappedRegionSurvivesRenameAndDeleteOfItsFile) {
  Write(Path("a"), "mapped");
  auto region = fs_->MapReadOnly(Path("a"));
  ASSERT_TRUE(region.ok()) << region.status();
  ASSERT_TRUE(fs_->Rename(Path("a"), Path("b")).ok());
  EXPECT_EQ((*region)->data(), "mapped");
  ASSERT_TRUE(fs_->DeleteFile(Path("b")).ok());
  EXPECT_EQ((*region)->data(), "mapped");
  EXPECT_EQ((*region)->path(), Path("a")) << "the path it was mapped from";
}

INSTANTIATE_TEST_SUITE_P(
    AllFileSystems, FileSystemTest,
    testing::Values(FsParam{"Posix", [] { return std::unique_ptr<Sandbox>(new PosixSandbox); }},
                    FsParam{"Mem", [] { return std::unique_ptr<Sandbox>(new MemSandbox); }}),
    [](const testing::TestParamInfo<FsParam>& info) { return info.param.name; });

TEST(MemFileSystemTest, ContentsAreSharedWithOpenWriters) {
  MemFileSystem fs;
  auto file = fs.NewWritableFile("log");
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Append("abc").ok());
  EXPECT_EQ(fs.GetContents("log").value(), "abc");
  ASSERT_TRUE((*file)->Close().ok());
}

// Unlike a posix mapping (which shares the file's pages), a MemFileSystem region is a copy.
TEST(MemFileSystemTest, MappedRegionIsASnapshot) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/f", "first").ok());
  auto region = fs.MapReadOnly("/f");
  ASSERT_TRUE(region.ok());
  auto file = fs.NewWritableFile("/f");
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Append("second").ok());
  ASSERT_TRUE((*file)->Close().ok());
  EXPECT_EQ((*region)->data(), "first");
  EXPECT_EQ(fs.GetContents("/f").value(), "second");
}

// Opening a path again makes a new file there; the earlier writer keeps its old, now
// nameless, file (as with unlink and create on posix).
TEST(MemFileSystemTest, ReopeningAPathDetachesTheEarlierWriter) {
  MemFileSystem fs;
  auto first = fs.NewWritableFile("/f");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->Append("old").ok());
  auto second = fs.NewWritableFile("/f");
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE((*first)->Append(" and more").ok());
  ASSERT_TRUE((*second)->Append("new").ok());
  EXPECT_EQ(fs.GetContents("/f").value(), "new");
  ASSERT_TRUE((*first)->Close().ok());
  ASSERT_TRUE((*second)->Close().ok());
}

TEST(MemFileSystemTest, WriterOutlivesItsFileSystem) {
  std::unique_ptr<WritableFile> file;
  {
    MemFileSystem fs;
    auto opened = fs.NewWritableFile("/f");
    ASSERT_TRUE(opened.ok());
    file = std::move(*opened);
  }
  EXPECT_TRUE(file->Append("still fine").ok());
  EXPECT_TRUE(file->Close().ok());
}

TEST(MemFileSystemTest, SetContentsCreatesParentsAndNormalisesPaths) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("/a/b/c", "x").ok());
  EXPECT_TRUE(fs.IsDirectory("a/b"));
  EXPECT_EQ(fs.GetContents("a//b/./c").value(), "x");
  EXPECT_EQ(fs.ListDir("/").value(), std::vector<std::string>{"a"});
}

TEST(DirnameTest, GivesTheDirectoryPart) {
  EXPECT_EQ(Dirname("a/b/c"), "a/b");
  EXPECT_EQ(Dirname("/a/b"), "/a");
  EXPECT_EQ(Dirname("/c"), "/");
  EXPECT_EQ(Dirname("c"), ".");
  EXPECT_EQ(Dirname("a/b/"), "a/b");
}

TEST(JoinPathTest, JoinsWithoutDoublingSeparators) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("a", "/b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "/b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(JoinPath("a", ""), "a");
  EXPECT_EQ(JoinPath("/", "b"), "/b");
  EXPECT_EQ(JoinPath("a", "b", "c.txt"), "a/b/c.txt");
}

}  // namespace
}  // namespace choir
