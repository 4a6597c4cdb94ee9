// Slow: the generator streams. Ten times the users must not need more peak memory than the
// working set of one chunk per thread plus the (fixed-size) item catalogue.
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/fs.h"
#include "core/sysinfo.h"
#include "data/generator.h"
#include "data/taxonomy.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

TEST(GeneratorMemoryTest, PeakMemoryDoesNotGrowWithTheNumberOfUsers) {
  std::string tmpl = ::testing::TempDir() + "/choir_gen_large.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  FileSystem* fs = PosixFileSystem();
  absl::StatusOr<Taxonomy> t = LoadTaxonomy(fs, "");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<CompiledTaxonomy> c = CompileTaxonomy(*t);
  ASSERT_TRUE(c.ok());
  GeneratorOptions options;
  options.items = 50000;  // the catalogue is the part that may grow with users; fix it here
  options.users = 20000;
  absl::StatusOr<GeneratorReport> small = GenerateDataset(fs, *c, options, tmpl + "/small");
  ASSERT_TRUE(small.ok()) << small.status();
  const double after_small = PeakRssMb();
  options.users = 200000;
  absl::StatusOr<GeneratorReport> large = GenerateDataset(fs, *c, options, tmpl + "/large");
  ASSERT_TRUE(large.ok()) << large.status();
  const double after_large = PeakRssMb();
  std::printf("peak RSS %.1f MB after 2e4 users, %.1f MB after 2e5 users\n", after_small, after_large);
  EXPECT_GT(large->train_rows, 9 * small->train_rows);
  EXPECT_LT(after_large - after_small, 64.0)
      << "peak RSS " << after_small << " MB after 2e4 users, " << after_large << " MB after 2e5";
  ASSERT_TRUE(fs->DeleteRecursively(tmpl).ok());
}

}  // namespace
}  // namespace choir::data
