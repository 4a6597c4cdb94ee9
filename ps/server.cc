#include "ps/server.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"
#include "glog/logging.h"
#include "ps/feature_key.h"

namespace choir {

using transport::Frame;
using transport::RpcRequest;

// The steps of synchronous mode. Thread map: Push runs on the RpcServer's handler threads and
// blocks until its step is applied or abandoned; the handler of a step's last push applies it
// under mu_ (the table's own locks nest inside mu_, never the reverse) and wakes the others.
// Stop, stats and Await run on any thread.
class ParamServer::SyncSteps {
 public:
  SyncSteps(SparseTable* table, std::string server_id, int workers)
      : table_(table),
        server_id_(std::move(server_id)),
        workers_(workers),
        parts_(workers),
        last_applied_(workers) {}

  // Buffers a checked push of `push.worker` for `push.step`, waits until the step is applied
  // (or abandoned, or the server stops, or the request's deadline passes) and returns the
  // result for this request (ps/server.h lists the cases).
  absl::Status Push(const RpcRequest& request, PushRequest push);

  // Makes `step` the step being collected (a restored table continues at its checkpoint's
  // step). FAILED_PRECONDITION while a step has pushes buffered.
  absl::Status Restart(int64_t step) {
    std::lock_guard<std::mutex> lock(mu_);
    if (present_ > 0 || waiting_ > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "restore: server ", server_id_, " is collecting the pushes of step ", step_));
    }
    step_ = step;
    for (RequestId& r : last_applied_) r = RequestId();
    abandoned_ = absl::OkStatus();
    abandoned_step_ = -1;
    Changed();
    return absl::OkStatus();
  }

  // Counts a push refused before reaching Push (a malformed request).
  void CountRejected() {
    std::lock_guard<std::mutex> lock(mu_);
    ++rejected_;
    Changed();
  }

  // Wakes every waiting push (they return UNAVAILABLE) and refuses later ones.
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    Changed();
  }

  SyncStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return StatsLocked();
  }

  bool Await(absl::FunctionRef<bool(const SyncStats&)> until, absl::Time deadline) const {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      const uint64_t version = version_;
      const SyncStats stats = StatsLocked();
      lock.unlock();  // `until` is the caller's code: not under the lock
      if (until(stats)) return true;
      lock.lock();
      auto changed = [&] { return version_ != version; };
      if (deadline == absl::InfiniteFuture()) {
        cv_.wait(lock, changed);
      } else if (!cv_.wait_until(lock, absl::ToChronoTime(deadline), changed)) {
        return false;
      }
    }
  }

 private:
  // One worker's push of the step being collected.
  struct Part {
    bool present = false;
    std::string peer;
    uint64_t request_id = 0;
    std::vector<uint64_t> keys;
    std::vector<float> grads;
  };
  // The request that carried a worker's push.
  struct RequestId {
    std::string peer;
    uint64_t request_id = 0;
  };

  // Sums the buffered parts in worker order and applies them as one table push; then starts
  // the next step, or abandons this one when the table refuses the sum.
  absl::Status ApplyStep();  // requires mu_
  // Workers whose push of the current step has not arrived, as "0, 2".
  std::string MissingWorkers() const;  // requires mu_
  SyncStats StatsLocked() const;       // requires mu_
  // Records a change of the state and wakes every waiter (pushes and Await).
  void Changed() {  // requires mu_
    ++version_;
    cv_.notify_all();
  }

  SparseTable* const table_;
  const std::string server_id_;
  const int workers_;

  // std::mutex (not absl::Mutex) so that ThreadSanitizer sees the waits.
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;  // notified with every change of version_
  int64_t step_ = 0;                    // guarded by mu_: the step being collected
  std::vector<Part> parts_;             // guarded by mu_: per worker index, step step_
  int present_ = 0;                     // guarded by mu_: parts_ present
  // Per worker index: the request that carried its push of step step_ - 1, so that a late
  // copy of it gets the same answer.
  std::vector<RequestId> last_applied_;  // guarded by mu_
  int waiting_ = 0;                      // guarded by mu_: pushes waiting for step_
  absl::Status abandoned_;               // guarded by mu_: why step abandoned_step_ was lost
  int64_t abandoned_step_ = -1;          // guarded by mu_
  bool stopping_ = false;                // guarded by mu_
  uint64_t duplicates_ = 0;              // guarded by mu_
  uint64_t rejected_ = 0;                // guarded by mu_
  uint64_t version_ = 0;                 // guarded by mu_: counts changes (Await)
};

absl::StatusOr<std::unique_ptr<ParamServer>> ParamServer::Start(
    std::unique_ptr<transport::Endpoint> endpoint, ParamServerOptions options) {
  if (endpoint == nullptr) return absl::InvalidArgumentError("parameter server: no endpoint");
  if (options.sync_workers < 0 || options.sync_workers > kMaxSyncWorkers) {
    return absl::InvalidArgumentError(absl::StrCat("parameter server: sync_workers = ",
                                                   options.sync_workers, ", want 0..",
                                                   kMaxSyncWorkers));
  }
  options.rpc.worker_threads = std::max(options.rpc.worker_threads, kMinPsHandlerThreads);
  if (options.sync_workers > 0) {
    options.rpc.worker_threads =
        std::max(options.rpc.worker_threads, 2 * options.sync_workers + 1);
  }
  absl::StatusOr<std::unique_ptr<SparseTable>> table =
      SparseTable::Create(std::move(options.table));
  if (!table.ok()) return table.status();
  std::string id = endpoint->id();
  std::string address = endpoint->address();
  std::unique_ptr<ParamServer> server(
      new ParamServer(*std::move(table), std::move(id), std::move(address), options.sync_workers,
                      options.fs));
  auto rpc = std::make_unique<transport::RpcServer>(std::move(endpoint), options.rpc);
  ParamServer* self = server.get();
  absl::Status status = rpc->Register(
      kPsPullMethod, [self](RpcRequest& request) { return self->HandlePull(request, /*read_only=*/false); });
  if (status.ok()) {
    status = rpc->Register(kPsLookupMethod,
                           [self](RpcRequest& request) { return self->HandlePull(request, /*read_only=*/true); });
  }
  if (status.ok()) {
    status = rpc->Register(kPsPushMethod,
                           [self](RpcRequest& request) { return self->HandlePush(request); });
  }
  if (status.ok()) {
    status = rpc->Register(kPsSaveMethod,
                           [self](RpcRequest& request) { return self->HandleSave(request); });
  }
  if (status.ok()) {
    status = rpc->Register(kPsRestoreMethod,
                           [self](RpcRequest& request) { return self->HandleRestore(request); });
  }
  if (status.ok()) status = rpc->Start();
  if (!status.ok()) return status;
  server->rpc_ = std::move(rpc);
  return server;
}

ParamServer::ParamServer(std::unique_ptr<SparseTable> table, std::string id, std::string address,
                         int sync_workers, FileSystem* fs)
    : table_(std::move(table)),
      id_(std::move(id)),
      address_(std::move(address)),
      sync_workers_(sync_workers),
      fs_(fs != nullptr ? fs : PosixFileSystem()),
      sync_(sync_workers > 0 ? std::make_unique<SyncSteps>(table_.get(), id_, sync_workers)
                             : nullptr) {}

ParamServer::~ParamServer() { Shutdown(); }

absl::Status ParamServer::AddPeer(const std::string& peer, const std::string& address) {
  return rpc_->endpoint()->AddPeer(peer, address);
}

void ParamServer::Shutdown() {
  if (sync_ != nullptr) sync_->Stop();  // waiting pushes return, so the RpcServer can join them
  if (rpc_ != nullptr) rpc_->Shutdown();
}

SyncStats ParamServer::sync_stats() const {
  return sync_ != nullptr ? sync_->stats() : SyncStats();
}

bool ParamServer::AwaitSync(absl::FunctionRef<bool(const SyncStats&)> until,
                            absl::Time deadline) const {
  if (sync_ == nullptr) return until(SyncStats());
  return sync_->Await(until, deadline);
}

absl::StatusOr<std::vector<uint64_t>> ParamServer::ReadKeys(const RpcRequest& request,
                                                            size_t* total_dim) const {
  const Frame& frame = request.frames[0];
  if (frame.type() != transport::ELEMENT_UINT64) {
    return absl::InvalidArgumentError(absl::StrCat(
        request.method, ": frame 0 must hold uint64 keys, has element type ",
        transport::ElementType_Name(frame.type())));
  }
  absl::StatusOr<std::vector<uint64_t>> keys = frame.ToVector<uint64_t>();
  if (!keys.ok()) return keys.status();
  size_t total = 0;
  for (uint64_t key : *keys) {
    const int dim = table_->Dim(key);
    if (dim == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: key %#x has slot %d, which server %s does not hold", request.method, key,
          SlotOf(key), id_));
    }
    total += static_cast<size_t>(dim);
  }
  *total_dim = total;
  return keys;
}

absl::StatusOr<std::vector<Frame>> ParamServer::HandlePull(RpcRequest& request, bool read_only) {
  const char* method = read_only ? kPsLookupMethod : kPsPullMethod;
  if (request.frames.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(method, ": expected 1 frame (keys), got ", request.frames.size()));
  }
  size_t total_dim = 0;
  absl::StatusOr<std::vector<uint64_t>> keys = ReadKeys(request, &total_dim);
  if (!keys.ok()) return keys.status();
  // Not zero-filled: Pull writes every float.
  std::shared_ptr<float[]> rows(new float[total_dim]);
  const absl::Span<float> out(rows.get(), total_dim);
  absl::Status status = read_only ? table_->Lookup(*keys, out) : table_->Pull(*keys, out);
  if (!status.ok()) return status;
  const float* data = rows.get();
  std::vector<Frame> response;
  response.emplace_back(std::move(rows), data, total_dim * sizeof(float),
                        transport::ELEMENT_FLOAT32);
  return response;
}

absl::StatusOr<std::vector<Frame>> ParamServer::HandleSave(RpcRequest& request) {
  if (request.frames.size() != 2 || request.frames[0].type() != transport::ELEMENT_BYTES ||
      request.frames[1].type() != transport::ELEMENT_BYTES) {
    return absl::InvalidArgumentError(
        "save: expected 2 byte frames (checkpoint directory, file name)");
  }
  const std::string dir(request.frames[0].bytes());
  const std::string name(request.frames[1].bytes());
  uint64_t rows = 0;
  absl::StatusOr<std::string> bytes = checkpoint::EncodeSparseRows(
      [&](checkpoint::RowVisitor visit) { return table_->ForEachStoredRow(visit); }, &rows);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<checkpoint::FileInfo> info = checkpoint::WriteCheckpointFile(fs_, dir, name, *bytes);
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        absl::StrCat("server ", id_, ": ", info.status().message()));
  }
  LOG(INFO) << "server " << id_ << ": saved " << rows << " rows (" << info->bytes << " bytes) to "
            << JoinPath(dir, name);
  std::vector<Frame> response;
  response.push_back(Frame::FromVector(std::vector<uint64_t>{info->bytes, info->crc32c}));
  return response;
}

absl::StatusOr<std::vector<Frame>> ParamServer::HandleRestore(RpcRequest& request) {
  if (request.frames.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "restore: expected 4 frames (keys, rows, push counts, step), got ", request.frames.size()));
  }
  absl::StatusOr<std::vector<uint64_t>> keys = request.frames[0].ToVector<uint64_t>();
  absl::StatusOr<std::vector<float>> rows = request.frames[1].ToVector<float>();
  absl::StatusOr<std::vector<uint32_t>> pushes = request.frames[2].ToVector<uint32_t>();
  absl::StatusOr<std::vector<int64_t>> step = request.frames[3].ToVector<int64_t>();
  if (!keys.ok() || !rows.ok() || !pushes.ok() || !step.ok() || step->size() != 1 ||
      (*step)[0] < 0 || pushes->size() != keys->size()) {
    return absl::InvalidArgumentError(
        "restore: frames must be uint64 keys, float32 rows, one uint32 push count per key and "
        "one int64 step >= 0");
  }
  size_t need = 0;
  for (uint64_t key : *keys) {
    const int n = table_->StoredFloats(key);
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "restore: key %#x has slot %d, which server %s does not hold", key, SlotOf(key), id_));
    }
    need += static_cast<size_t>(n);
  }
  if (need != rows->size()) {
    return absl::InvalidArgumentError(absl::StrCat("restore: ", keys->size(), " keys need ", need,
                                                   " floats, got ", rows->size()));
  }
  if (sync_ != nullptr) {
    absl::Status restarted = sync_->Restart((*step)[0]);
    if (!restarted.ok()) return restarted;
  }
  table_->set_step(static_cast<uint64_t>((*step)[0]));
  size_t offset = 0;
  for (size_t i = 0; i < keys->size(); ++i) {
    const size_t n = static_cast<size_t>(table_->StoredFloats((*keys)[i]));
    absl::Status status = table_->RestoreRow(
        (*keys)[i], absl::MakeConstSpan(rows->data() + offset, n), (*pushes)[i]);
    if (!status.ok()) return status;
    offset += n;
  }
  return std::vector<Frame>();
}

absl::Status ParamServer::ReadPush(const RpcRequest& request, PushRequest* push) const {
  const bool sync = sync_workers_ > 0;
  if (!sync && request.frames.size() == 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "push: server ", id_, " is not synchronous (sync_workers 0) but the push carries a "
        "worker index and step (frame 2): configure the servers and the workers' stores alike"));
  }
  if (sync && request.frames.size() == 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "push: server ", id_, " aggregates ", sync_workers_, " workers' pushes (sync_workers ",
        sync_workers_, ") and needs frame 2 (int64 worker index, step): configure the "
        "servers and the workers' stores alike"));
  }
  if (request.frames.size() != (sync ? 3u : 2u)) {
    return absl::InvalidArgumentError(
        absl::StrCat("push: expected ", sync ? 3 : 2, " frames (keys, gradients",
                     sync ? ", worker and step" : "", "), got ", request.frames.size()));
  }
  if (sync) {
    const Frame& meta = request.frames[2];
    absl::StatusOr<std::vector<int64_t>> values = meta.ToVector<int64_t>();
    if (!values.ok() || values->size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "push: frame 2 must hold two int64 values (worker index, step), has element type ",
          transport::ElementType_Name(meta.type()), " and ", meta.size(), " bytes"));
    }
    if ((*values)[0] < 0 || (*values)[0] >= sync_workers_ || (*values)[1] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "push of step ", (*values)[1], " from worker ", (*values)[0], " (", request.peer,
          "): server ", id_, " aggregates workers 0..", sync_workers_ - 1,
          " and steps >= 0"));
    }
    push->worker = static_cast<int>((*values)[0]);
    push->step = (*values)[1];
  }
  size_t total_dim = 0;
  absl::StatusOr<std::vector<uint64_t>> keys = ReadKeys(request, &total_dim);
  if (!keys.ok()) return keys.status();
  push->keys = *std::move(keys);
  const Frame& grad_frame = request.frames[1];
  if (grad_frame.type() != transport::ELEMENT_FLOAT32) {
    return absl::InvalidArgumentError(
        absl::StrCat("push: frame 1 must hold float32 gradients, has element type ",
                     transport::ElementType_Name(grad_frame.type())));
  }
  absl::StatusOr<std::vector<float>> grads = grad_frame.ToVector<float>();
  if (!grads.ok()) return grads.status();
  push->grads = *std::move(grads);
  if (push->grads.size() != total_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("push: ", push->keys.size(), " keys need ", total_dim,
                     " gradient floats, got ", push->grads.size()));
  }
  if (sync) {
    // Checked before buffering (the table checks again, on the sum).
    for (size_t i = 0; i < push->grads.size(); ++i) {
      if (!std::isfinite(push->grads[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("push of step ", push->step, " from worker ", push->worker,
                         ": gradient ", i, " is not finite (", push->grads[i], "); not counted"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Frame>> ParamServer::HandlePush(RpcRequest& request) {
  PushRequest push;
  absl::Status status = ReadPush(request, &push);
  if (!status.ok()) {
    if (sync_ != nullptr) sync_->CountRejected();
    return status;
  }
  // Asynchronous: the table rejects non-finite gradients itself, before changing any row.
  status = sync_ != nullptr ? sync_->Push(request, std::move(push))
                            : table_->Push(push.keys, push.grads);
  if (!status.ok()) return status;
  return std::vector<Frame>();
}

absl::Status ParamServer::SyncSteps::Push(const RpcRequest& request, PushRequest push) {
  const int worker = push.worker;
  const int64_t step = push.step;
  const std::string who = absl::StrCat("push of step ", step, " from worker ", worker, " (",
                                       request.peer, ") to server ", server_id_);
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError(absl::StrCat(who, ": the server is shutting down"));
  if (abandoned_step_ >= 0) {
    ++rejected_;
    Changed();
    return absl::FailedPreconditionError(
        absl::StrCat(who, ": step ", abandoned_step_, " was abandoned (", abandoned_.message(),
                     "); the job must restart from a checkpoint"));
  }
  if (step == step_ - 1 && last_applied_[worker].peer == request.peer &&
      last_applied_[worker].request_id == request.request_id) {
    // A copy of a push of the step just applied, arriving late (perhaps before the original's
    // answer has been sent): the same answer, not counted again.
    ++duplicates_;
    Changed();
    return absl::OkStatus();
  }
  if (step < step_) {
    ++rejected_;
    Changed();
    return absl::FailedPreconditionError(
        absl::StrCat(who, ": step ", step, " was already applied (the server collects step ",
                     step_, "); a stale or duplicated push, not counted"));
  }
  if (step > step_) {
    ++rejected_;
    Changed();
    return absl::FailedPreconditionError(absl::StrCat(
        who, ": the server collects step ", step_, "; a worker pushes step t + 1 only after its "
        "push of step t returned"));
  }
  Part& part = parts_[worker];
  if (part.present) {
    if (part.peer != request.peer || part.request_id != request.request_id) {
      ++rejected_;
      Changed();
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": worker ", worker, " already pushed step ", step, " (", part.peer, ", request ",
          part.request_id, "); this second push (request ", request.request_id,
          ") is not counted: do two workers share index ", worker, "?"));
    }
    ++duplicates_;  // a copy of the buffered request: wait for the step's result
  } else {
    part.present = true;
    part.peer = request.peer;
    part.request_id = request.request_id;
    part.keys = std::move(push.keys);
    part.grads = std::move(push.grads);
    if (++present_ == workers_) {
      absl::Status applied = ApplyStep();
      Changed();
      if (!applied.ok()) {
        return absl::Status(applied.code(), absl::StrCat(who, ": ", applied.message()));
      }
      return absl::OkStatus();
    }
  }
  ++waiting_;
  Changed();
  auto pending = [&] { return step_ == step && abandoned_step_ < 0 && !stopping_; };
  while (pending()) {
    if (request.deadline == absl::InfiniteFuture()) {
      cv_.wait(lock);
      continue;
    }
    if (cv_.wait_until(lock, absl::ToChronoTime(request.deadline)) ==
            std::cv_status::timeout &&
        pending()) {
      // The caller has given up: the step cannot complete for all workers any more.
      abandoned_ = absl::DeadlineExceededError(absl::StrCat(
          "sync step ", step, " on server ", server_id_,
          " abandoned when the deadline of worker ", worker,
          "'s push passed, waiting for worker(s) ", MissingWorkers(),
          "; its gradients are discarded"));
      abandoned_step_ = step;
      for (Part& p : parts_) p = Part();
      present_ = 0;
      Changed();
    }
  }
  --waiting_;
  Changed();
  if (abandoned_step_ == step) {
    return absl::Status(abandoned_.code(), absl::StrCat(who, ": ", abandoned_.message()));
  }
  if (step_ > step) return absl::OkStatus();
  if (stopping_) {
    return absl::UnavailableError(
        absl::StrCat(who, ": the server shut down before the step was complete"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat(who, ": step ", abandoned_step_, " was abandoned (", abandoned_.message(), ")"));
}

absl::Status ParamServer::SyncSteps::ApplyStep() {
  // Sum per key in worker order; keys in order of first appearance (worker 0's first).
  absl::flat_hash_map<uint64_t, size_t> offset_of;
  std::vector<uint64_t> keys;
  std::vector<float> sum;
  for (const Part& part : parts_) {
    size_t j = 0;
    for (uint64_t key : part.keys) {
      const size_t dim = static_cast<size_t>(table_->Dim(key));
      const float* g = part.grads.data() + j;
      j += dim;
      auto [it, inserted] = offset_of.try_emplace(key, sum.size());
      if (inserted) {
        keys.push_back(key);
        sum.insert(sum.end(), g, g + dim);  // a copy, so W = 1 is bit-identical to one push
      } else {
        float* s = sum.data() + it->second;
        for (size_t d = 0; d < dim; ++d) s[d] += g[d];
      }
    }
  }
  const absl::Status status = table_->Push(keys, sum);
  for (int w = 0; w < workers_; ++w) {
    last_applied_[w] = {std::move(parts_[w].peer), parts_[w].request_id};
    parts_[w] = Part();
  }
  present_ = 0;
  if (!status.ok()) {
    abandoned_ = absl::Status(status.code(), absl::StrCat("sync step ", step_, " on server ",
                                                          server_id_, " not applied: ",
                                                          status.message()));
    abandoned_step_ = step_;
    return abandoned_;
  }
  ++step_;
  return absl::OkStatus();
}

SyncStats ParamServer::SyncSteps::StatsLocked() const {
  SyncStats stats;
  stats.step = step_;
  stats.pushes_received = present_;
  stats.waiting = waiting_;
  stats.duplicates = duplicates_;
  stats.rejected = rejected_;
  stats.abandoned = abandoned_step_ >= 0;
  return stats;
}

std::string ParamServer::SyncSteps::MissingWorkers() const {
  std::vector<int> missing;
  for (int w = 0; w < workers_; ++w) {
    if (!parts_[w].present) missing.push_back(w);
  }
  return absl::StrJoin(missing, ", ");
}

}  // namespace choir
