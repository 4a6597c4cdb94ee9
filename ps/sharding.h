// Sharding of feature keys across parameter servers (docs/ps.md, "Sharding").
//
// A ShardingPolicy maps a feature key to the index of the server holding its row. The default,
// ConsistentHashSharding, is a jump consistent hash (Lamping & Veach, 2014) of a re-mix of the
// key: balanced across servers, and going from S to S+1 servers moves only about 1/(S+1) of
// the keys (all to the new server), so a checkpoint can be restored onto a different server
// count by moving few rows. The re-mix uses its own salt so that the server level is
// independent of the table's shard level (ShardOf in ps/sparse_table.h).
#ifndef CHOIR_PS_SHARDING_H_
#define CHOIR_PS_SHARDING_H_

#include <cstdint>
#include <memory>

namespace choir {

// Jump consistent hash: a bucket in [0, num_buckets) for `hash`. Requires num_buckets >= 1
// (CHECKed: the count comes from the cluster configuration, which is validated before use).
int JumpConsistentHash(uint64_t hash, int num_buckets);

// The server in [0, num_servers) of `key` under the default policy: JumpConsistentHash of a
// salted Mix64 of the key. A pure function of (key, num_servers).
int ConsistentServerOf(uint64_t key, int num_servers);

// Maps keys to servers. Implementations are immutable and thread-safe.
class ShardingPolicy {
 public:
  virtual ~ShardingPolicy() = default;
  virtual int num_servers() const = 0;
  // In [0, num_servers()); a pure function of the key.
  virtual int ServerOf(uint64_t key) const = 0;
};

// The default policy, ConsistentServerOf(key, num_servers). num_servers >= 1 (CHECKed).
std::unique_ptr<ShardingPolicy> NewConsistentHashSharding(int num_servers);

}  // namespace choir

#endif  // CHOIR_PS_SHARDING_H_
