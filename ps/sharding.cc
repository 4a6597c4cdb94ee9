#include "ps/sharding.h"

#include "glog/logging.h"
#include "ps/feature_key.h"

namespace choir {
namespace {

// Differs from the salts of FeatureKey and ShardOf so that the server of a key is independent
// of its slot hash and of its shard inside a server's table.
constexpr uint64_t kServerSalt = 0x5be1f0c3a7d92e61ULL;

class ConsistentHashSharding : public ShardingPolicy {
 public:
  explicit ConsistentHashSharding(int num_servers) : num_servers_(num_servers) {}
  int num_servers() const override { return num_servers_; }
  int ServerOf(uint64_t key) const override { return ConsistentServerOf(key, num_servers_); }

 private:
  const int num_servers_;
};

}  // namespace

int JumpConsistentHash(uint64_t hash, int num_buckets) {
  CHECK_GE(num_buckets, 1);
  int64_t bucket = -1;
  int64_t next = 0;
  while (next < num_buckets) {
    bucket = next;
    hash = hash * 2862933555777941757ULL + 1;
    next = static_cast<int64_t>(static_cast<double>(bucket + 1) *
                                (static_cast<double>(int64_t{1} << 31) /
                                 static_cast<double>((hash >> 33) + 1)));
  }
  return static_cast<int>(bucket);
}

int ConsistentServerOf(uint64_t key, int num_servers) {
  return JumpConsistentHash(Mix64(key ^ kServerSalt), num_servers);
}

std::unique_ptr<ShardingPolicy> NewConsistentHashSharding(int num_servers) {
  CHECK_GE(num_servers, 1);
  return std::make_unique<ConsistentHashSharding>(num_servers);
}

}  // namespace choir
