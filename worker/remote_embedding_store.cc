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
      : options_(std::move(options)),
        dims_(kMaxSlots, 0),
        client_(std::move(endpoint), options_.job_status) {
    for (const auto& [slot, config] : options_.slots) dims_[slot] = config.dim;
  }

  absl::Status Pull(absl::Span<const uint64_t> keys, absl::Span<float> out) override {
    return Read(kPsPullMethod, keys, out);
  }
  absl::Status Lookup(absl::Span<const uint64_t> keys, absl::Span<float> out) override {
    return Read(kPsLookupMethod, keys, out);
  }

  // Pull or Lookup (`method`) over the servers.
  absl::Status Read(const char* method, absl::Span<const uint64_t> keys, absl::Span<float> out) {
    absl::StatusOr<Plan> plan = MakePlan(keys);
    if (!plan.ok()) return plan.status();
    if (out.size() != plan->total_floats) {
      return absl::InvalidArgumentError(absl::StrCat(method, ": ", keys.size(), " keys need ",
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
        requests.push_back({options_.servers[s].id, method, std::move(frames)});
      }
    }
    const absl::Time deadline = absl::Now() + options_.deadline;
    return client_.CallAll(
        std::move(requests), deadline,
        [&](size_t i, absl::StatusOr<transport::Response> response) -> absl::Status {
          const Piece& piece = pieces[i];
          const std::vector<uint64_t>& server_keys = plan->keys[piece.server];
          const std::vector<size_t>& offsets = plan->offsets[piece.server];
          if (!response.ok()) return Annotate(response.status(), method, piece.server);
          size_t floats = 0;
          for (size_t j = piece.begin; j < piece.end; ++j) floats += Dim(server_keys[j]);
          if (response->frames.size() != 1 ||
              response->frames[0].type() != transport::ELEMENT_FLOAT32 ||
              response->frames[0].size() != floats * sizeof(float)) {
            return Annotate(absl::DataLossError(absl::StrCat(
                                "response must be one float32 frame of ", floats,
                                " values, got ", response->frames.size(), " frames")),
                            method, piece.server);
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

  // Each server writes its own rows into `dir` ("sparse-<s>-of-<S>.bin"), all at once.
  absl::StatusOr<std::map<std::string, checkpoint::FileInfo>> SaveRows(
      FileSystem*, const std::string& dir) override {
    const int num_servers = static_cast<int>(options_.servers.size());
    std::vector<transport::RpcClient::Request> requests;
    std::vector<std::string> names;
    for (int s = 0; s < num_servers; ++s) {
      names.push_back(absl::StrCat("sparse-", s, "-of-", num_servers, ".bin"));
      std::vector<Frame> frames;
      frames.push_back(Frame(dir));
      frames.push_back(Frame(names.back()));
      requests.push_back({options_.servers[s].id, kPsSaveMethod, std::move(frames)});
    }
    std::map<std::string, checkpoint::FileInfo> files;
    absl::Status status = client_.CallAll(
        std::move(requests), absl::Now() + options_.checkpoint_deadline,
        [&](size_t s, absl::StatusOr<transport::Response> response) -> absl::Status {
          if (!response.ok()) return Annotate(response.status(), kPsSaveMethod, static_cast<int>(s), "on");
          absl::StatusOr<std::vector<uint64_t>> info =
              response->frames.size() == 1 ? response->frames[0].ToVector<uint64_t>()
                                           : absl::StatusOr<std::vector<uint64_t>>(
                                                 absl::DataLossError("no frame"));
          if (!info.ok() || info->size() != 2 || (*info)[1] > UINT32_MAX) {
            return Annotate(absl::DataLossError("save: the response must be uint64 {bytes, crc32c}"),
                            kPsSaveMethod, static_cast<int>(s), "on");
          }
          files[names[s]] = checkpoint::FileInfo{(*info)[0], static_cast<uint32_t>((*info)[1])};
          return absl::OkStatus();
        });
    if (!status.ok()) return status;
    return files;
  }

  // Reads every sparse rows file (written by any number of servers) and sends each row to the
  // server that holds its key now, in pieces; every server gets at least one request, which
  // sets its step.
  absl::Status LoadRows(const checkpoint::Reader& checkpoint, uint64_t table_step) override {
    const std::vector<std::string> files = SparseRowsFiles(checkpoint);
    if (files.empty()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", checkpoint.dir(), " has no sparse rows file"));
    }
    const int num_servers = static_cast<int>(options_.servers.size());
    struct Piece {
      std::vector<uint64_t> keys;
      std::vector<float> rows;
      std::vector<uint32_t> pushes;
    };
    std::vector<Piece> pieces(num_servers);
    std::vector<bool> sent(num_servers, false);
    constexpr size_t kRowsPerRequest = 65536;
    auto flush = [&](int s) -> absl::Status {
      Piece piece = std::move(pieces[s]);
      pieces[s] = Piece();
      sent[s] = true;
      std::vector<Frame> frames;
      frames.push_back(Frame::FromVector(std::move(piece.keys)));
      frames.push_back(Frame::FromVector(std::move(piece.rows)));
      frames.push_back(Frame::FromVector(std::move(piece.pushes)));
      frames.push_back(Frame::FromVector(std::vector<int64_t>{static_cast<int64_t>(table_step)}));
      absl::StatusOr<transport::Response> response =
          client_.Call(options_.servers[s].id, kPsRestoreMethod, std::move(frames),
                       absl::Now() + options_.checkpoint_deadline);
      if (!response.ok()) return Annotate(response.status(), kPsRestoreMethod, s, "on");
      return absl::OkStatus();
    };
    for (const std::string& name : files) {
      absl::Status status = ForEachCheckpointRow(
          checkpoint, name, [&](uint64_t key, absl::Span<const float> row, uint32_t pushes) {
            if (Dim(key) == 0) {
              return absl::InvalidArgumentError(
                  absl::StrCat("slot ", SlotOf(key), " is not configured in this job"));
            }
            const int s = options_.sharding->ServerOf(key);
            Piece& piece = pieces[s];
            piece.keys.push_back(key);
            piece.rows.insert(piece.rows.end(), row.begin(), row.end());
            piece.pushes.push_back(pushes);
            return piece.keys.size() >= kRowsPerRequest ? flush(s) : absl::OkStatus();
          });
      if (!status.ok()) return status;
    }
    for (int s = 0; s < num_servers; ++s) {
      if (!pieces[s].keys.empty() || !sent[s]) {
        if (absl::Status status = flush(s); !status.ok()) return status;
      }
    }
    return absl::OkStatus();
  }

  void ResumeAt(uint64_t step) override {
    next_step_.store(static_cast<int64_t>(step), std::memory_order_relaxed);
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
