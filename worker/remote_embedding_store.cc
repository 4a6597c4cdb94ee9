#include "worker/remote_embedding_store.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "ps/feature_key.h"
#include "ps/server.h"

namespace choir {
namespace {

using transport::Frame;

// One call's keys grouped by server.
struct Plan {
  // Per server: its keys in caller order and each key's float offset in the caller's buffer.
  std::vector<std::vector<uint64_t>> keys;
  std::vector<std::vector<size_t>> offsets;
  std::vector<size_t> floats;  // per server: sum of its keys' dims
  size_t total_floats = 0;
};

class RemoteEmbeddingStore : public EmbeddingStore {
 public:
  RemoteEmbeddingStore(std::unique_ptr<transport::Endpoint> endpoint,
                       RemoteEmbeddingStoreOptions options)
      : options_(std::move(options)), dims_(kMaxSlots, 0), client_(std::move(endpoint)) {
    for (const auto& [slot, config] : options_.slots) dims_[slot] = config.dim;
  }

  absl::Status Pull(absl::Span<const uint64_t> keys, absl::Span<float> out) override {
    absl::StatusOr<Plan> plan = MakePlan(keys);
    if (!plan.ok()) return plan.status();
    if (out.size() != plan->total_floats) {
      return absl::InvalidArgumentError(absl::StrCat("pull: ", keys.size(), " keys need ",
                                                     plan->total_floats,
                                                     " floats, out has ", out.size()));
    }
    // Each server's keys in requests of at most max_keys_per_request, all in flight at once:
    // the servers look up the later ones while this thread copies out the earlier ones.
    struct Piece {
      int server;
      size_t begin, end;  // positions in plan->keys[server]
    };
    std::vector<Piece> pieces;
    std::vector<transport::RpcClient::Request> requests;
    const size_t max_keys = static_cast<size_t>(options_.max_keys_per_request);
    for (int s = 0; s < static_cast<int>(plan->keys.size()); ++s) {
      const std::vector<uint64_t>& server_keys = plan->keys[s];
      for (size_t begin = 0; begin < server_keys.size(); begin += max_keys) {
        const size_t end = std::min(server_keys.size(), begin + max_keys);
        pieces.push_back(Piece{s, begin, end});
        std::vector<Frame> frames;
        frames.push_back(Frame::FromVector(std::vector<uint64_t>(
            server_keys.begin() + static_cast<ptrdiff_t>(begin),
            server_keys.begin() + static_cast<ptrdiff_t>(end))));
        requests.push_back({options_.servers[s].id, kPsPullMethod, std::move(frames)});
      }
    }
    const absl::Time deadline = absl::Now() + options_.deadline;
    return client_.CallAll(
        std::move(requests), deadline,
        [&](size_t i, absl::StatusOr<transport::Response> response) -> absl::Status {
          const Piece& piece = pieces[i];
          const std::vector<uint64_t>& server_keys = plan->keys[piece.server];
          const std::vector<size_t>& offsets = plan->offsets[piece.server];
          if (!response.ok()) return Annotate(response.status(), kPsPullMethod, piece.server);
          size_t floats = 0;
          for (size_t j = piece.begin; j < piece.end; ++j) floats += Dim(server_keys[j]);
          if (response->frames.size() != 1 ||
              response->frames[0].type() != transport::ELEMENT_FLOAT32 ||
              response->frames[0].size() != floats * sizeof(float)) {
            return Annotate(absl::DataLossError(absl::StrCat(
                                "response must be one float32 frame of ", floats,
                                " values, got ", response->frames.size(), " frames")),
                            kPsPullMethod, piece.server);
          }
          // Frame bytes need not be aligned: copy row by row into the caller's buffer.
          const char* data = response->frames[0].data();
          for (size_t j = piece.begin; j < piece.end; ++j) {
            const size_t bytes = static_cast<size_t>(Dim(server_keys[j])) * sizeof(float);
            std::memcpy(out.data() + offsets[j], data, bytes);
            data += bytes;
          }
          return absl::OkStatus();
        });
  }

  absl::Status Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads) override {
    absl::StatusOr<Plan> plan = MakePlan(keys);
    if (!plan.ok()) return plan.status();
    if (grads.size() != plan->total_floats) {
      return absl::InvalidArgumentError(absl::StrCat("push: ", keys.size(), " keys need ",
                                                     plan->total_floats,
                                                     " gradient floats, got ", grads.size()));
    }
    // Checked here so that a bad gradient changes no row on any server.
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!std::isfinite(grads[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("push: gradient ", i, " is not finite (", grads[i], ")"));
      }
    }
    const bool sync = options_.num_workers > 0;
    const int64_t step = sync ? next_step_.fetch_add(1, std::memory_order_relaxed) : 0;
    // One request per server (a synchronous server counts one push per worker and step);
    // synchronous: every server, even with no keys, so that its step completes.
    std::vector<int> servers;
    std::vector<transport::RpcClient::Request> requests;
    for (int s = 0; s < static_cast<int>(plan->keys.size()); ++s) {
      const std::vector<uint64_t>& server_keys = plan->keys[s];
      if (!sync && server_keys.empty()) continue;
      std::vector<float> server_grads(plan->floats[s]);
      float* dst = server_grads.data();
      for (size_t j = 0; j < server_keys.size(); ++j) {
        const size_t dim = static_cast<size_t>(Dim(server_keys[j]));
        std::memcpy(dst, grads.data() + plan->offsets[s][j], dim * sizeof(float));
        dst += dim;
      }
      std::vector<Frame> frames;
      frames.push_back(Frame::FromVector(server_keys));
      frames.push_back(Frame::FromVector(std::move(server_grads)));
      if (sync) {
        frames.push_back(Frame::FromVector(
            std::vector<int64_t>{static_cast<int64_t>(options_.worker_index), step}));
      }
      servers.push_back(s);
      requests.push_back({options_.servers[s].id, kPsPushMethod, std::move(frames)});
    }
    const absl::Time deadline = absl::Now() + options_.deadline;
    return client_.CallAll(
        std::move(requests), deadline,
        [&](size_t i, absl::StatusOr<transport::Response> response) -> absl::Status {
          if (response.ok()) return absl::OkStatus();
          const int s = servers[i];
          if (!sync) return Annotate(response.status(), kPsPushMethod, s);
          return Annotate(response.status(),
                          absl::StrCat("push of step ", step, " of worker ",
                                       options_.worker_index),
                          s, "to");
        });
  }

  int Dim(uint64_t key) const override { return dims_[SlotOf(key)]; }

  // Checkpoints of the parameter servers are not built yet; the trainer refuses
  // trainer.checkpoint_every_steps and --resume in a cluster before training starts.
  absl::StatusOr<std::map<std::string, checkpoint::FileInfo>> SaveRows(
      FileSystem*, const std::string&) override {
    return absl::UnimplementedError("checkpoints of parameter servers are not implemented yet");
  }
  absl::Status LoadRows(const checkpoint::Reader&, uint64_t) override {
    return absl::UnimplementedError("checkpoints of parameter servers are not implemented yet");
  }

 private:
  absl::StatusOr<Plan> MakePlan(absl::Span<const uint64_t> keys) const {
    const int num_servers = static_cast<int>(options_.servers.size());
    Plan plan;
    plan.keys.resize(num_servers);
    plan.offsets.resize(num_servers);
    plan.floats.assign(num_servers, 0);
    for (uint64_t key : keys) {
      const int dim = Dim(key);
      if (dim == 0) {
        return absl::InvalidArgumentError(
            absl::StrFormat("key %#x has slot %d, which is not configured", key, SlotOf(key)));
      }
      const int s = options_.sharding->ServerOf(key);
      CHECK(s >= 0 && s < num_servers) << "sharding policy returned server " << s;
      plan.keys[s].push_back(key);
      plan.offsets[s].push_back(plan.total_floats);
      plan.floats[s] += static_cast<size_t>(dim);
      plan.total_floats += static_cast<size_t>(dim);
    }
    return plan;
  }

  absl::Status Annotate(const absl::Status& status, absl::string_view what, int s,
                        absl::string_view preposition = "from") const {
    return absl::Status(status.code(),
                        absl::StrCat(what, " ", preposition, " parameter server ", s, " (",
                                     options_.servers[s].id, "): ", status.message()));
  }

  const RemoteEmbeddingStoreOptions options_;
  std::vector<int> dims_;  // slot -> row width, 0 when not configured
  transport::RpcClient client_;
  std::atomic<int64_t> next_step_{0};  // synchronous mode: the step of the next Push
};

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddingStore>> NewRemoteEmbeddingStore(
    std::unique_ptr<transport::Endpoint> endpoint, RemoteEmbeddingStoreOptions options) {
  if (endpoint == nullptr) return absl::InvalidArgumentError("remote store: no endpoint");
  if (options.servers.empty()) return absl::InvalidArgumentError("remote store: no servers");
  if (options.slots.empty()) return absl::InvalidArgumentError("remote store: no slots");
  if (options.max_keys_per_request <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "remote store: max_keys_per_request must be positive, got ", options.max_keys_per_request));
  }
  if (options.deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("remote store: deadline must be positive");
  }
  if (options.num_workers < 0 || options.num_workers > kMaxSyncWorkers ||
      options.worker_index < 0 ||
      (options.num_workers > 0 && options.worker_index >= options.num_workers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("remote store: worker_index ", options.worker_index, " and num_workers ",
                     options.num_workers, ": want 0 <= worker_index < num_workers <= ",
                     kMaxSyncWorkers, ", or num_workers 0 (asynchronous)"));
  }
  for (const auto& [slot, config] : options.slots) {
    if (slot >= kMaxSlots) {
      return absl::InvalidArgumentError(absl::StrCat("remote store: slot ", slot, " >= ",
                                                     kMaxSlots));
    }
    absl::Status valid = ValidateSlotConfig(config);
    if (!valid.ok()) return valid;
  }
  const int num_servers = static_cast<int>(options.servers.size());
  if (options.sharding == nullptr) {
    options.sharding = NewConsistentHashSharding(num_servers);
  } else if (options.sharding->num_servers() != num_servers) {
    return absl::InvalidArgumentError(
        absl::StrCat("remote store: sharding policy is for ", options.sharding->num_servers(),
                     " servers, ", num_servers, " are configured"));
  }
  absl::flat_hash_set<std::string> ids;
  for (const RemoteEmbeddingStoreOptions::Server& server : options.servers) {
    if (server.id.empty() || !ids.insert(server.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("remote store: empty or duplicate server id '", server.id, "'"));
    }
    absl::Status added = endpoint->AddPeer(server.id, server.address);
    if (!added.ok()) {
      return absl::Status(added.code(), absl::StrCat("remote store: adding server ", server.id,
                                                     ": ", added.message()));
    }
  }
  return std::unique_ptr<EmbeddingStore>(
      new RemoteEmbeddingStore(std::move(endpoint), std::move(options)));
}

}  // namespace choir
