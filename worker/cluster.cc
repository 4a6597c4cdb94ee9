#include "worker/cluster.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "choir/config.h"
#include "core/collective.h"
#include "core/crc32c.h"
#include "core/mpi_collective.h"
#include "core/status.h"
#include "glog/logging.h"
#if CHOIR_WITH_CUDA
#include "models/cuda/cuda.h"
#endif
#if CHOIR_WITH_NCCL
#include "models/cuda/nccl_collective.h"
#endif
#include "ps/server.h"
#include "scheduler/membership.h"
#include "scheduler/scheduler.h"
#include "scheduler/scheduler_client.h"
#include "worker/internal/model_setup.h"
#include "worker/remote_embedding_store.h"

namespace choir::worker {
namespace {

constexpr char kSchedulerId[] = "scheduler";
// How long a peer waits for all the others at the rendezvous.
constexpr absl::Duration kRegisterTimeout = absl::Minutes(5);

std::string ServerId(int i) { return absl::StrCat("ps", i); }
std::string WorkerId(int i) { return absl::StrCat("w", i); }
// The endpoint a peer talks to the scheduler from (its data endpoint has the plain id).
std::string ClientId(PeerRole role, int i) {
  return absl::StrCat(role == PeerRole::kServer ? ServerId(i) : WorkerId(i), ".sched");
}

absl::Duration Ms(int ms) { return absl::Milliseconds(ms); }

absl::Status ValidateCluster(const ClusterConfig& c) {
  if (c.servers() < 0) return absl::InvalidArgumentError("cluster.servers must be >= 0");
  if (c.workers() < 1) return absl::InvalidArgumentError("cluster.workers must be >= 1");
  if (c.transport() != "inproc" && c.transport() != "zmq") {
    return absl::InvalidArgumentError(absl::StrCat("cluster.transport: '", c.transport(), "' (inproc or zmq)"));
  }
  if (c.heartbeat_ms() < 1) return absl::InvalidArgumentError("cluster.heartbeat_ms must be >= 1");
  if (c.peer_timeout_ms() <= c.heartbeat_ms()) {
    return absl::InvalidArgumentError("cluster.peer_timeout_ms must exceed cluster.heartbeat_ms");
  }
  if (c.rpc_deadline_ms() < 1) return absl::InvalidArgumentError("cluster.rpc_deadline_ms must be >= 1");
  if (c.checkpoint_deadline_ms() < 1) {
    return absl::InvalidArgumentError("cluster.checkpoint_deadline_ms must be >= 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<SchedulerOptions> SchedulerOptionsFor(const JobConfig& job, int servers, int workers) {
  SchedulerOptions o;
  o.num_servers = servers;
  o.num_workers = workers;
  o.heartbeat_timeout = Ms(job.cluster().peer_timeout_ms());
  ASSIGN_OR_RETURN(o.reweighting, ReweightingOptionsOf(job.trainer().reweighting()));
  return o;
}

SchedulerClientOptions ClientOptionsFor(const ClusterConfig& c, const std::string& scheduler_address) {
  SchedulerClientOptions o;
  o.scheduler_id = kSchedulerId;
  o.scheduler_address = scheduler_address;
  o.heartbeat_interval = Ms(c.heartbeat_ms());
  o.scheduler_timeout = Ms(c.peer_timeout_ms());
  return o;
}

// A parameter server: serves its shard until the job stops (OK) or fails (the reason).
// `on_started` hands the running server and client to the caller (local mode keeps them to
// simulate a crash).
absl::Status RunServer(FileSystem* fs, int index, const JobConfig& job, const TableOptions& table, int workers,
                       std::unique_ptr<transport::Endpoint> data, std::unique_ptr<transport::Endpoint> client_ep,
                       const std::string& advertised_address, const std::string& scheduler_address,
                       const std::function<void(ParamServer*, SchedulerClient*)>& on_started = nullptr) {
  ParamServerOptions po;
  po.table = internal::ServerShare(table, index, std::max(1, job.cluster().servers()));
  po.sync_workers = workers;
  po.fs = fs;  // checkpoints: each server writes its rows here
  // Every worker's push of a step waits in a handler until the step is complete: one thread
  // per worker, plus one for pulls.
  po.rpc.worker_threads = workers + 1;
  ASSIGN_OR_RETURN(std::unique_ptr<ParamServer> server, ParamServer::Start(std::move(data), po));
  for (int w = 0; w < workers; ++w) RETURN_IF_ERROR(server->AddPeer(WorkerId(w)));
  ASSIGN_OR_RETURN(std::unique_ptr<SchedulerClient> client,
                   SchedulerClient::Create(std::move(client_ep), ClientOptionsFor(job.cluster(), scheduler_address)));
  PeerInfo self;
  self.role = PeerRole::kServer;
  self.index = index;
  self.id = server->id();
  self.address = advertised_address.empty() ? server->address() : advertised_address;
  absl::StatusOr<Membership> membership = client->Register(self, absl::Now() + kRegisterTimeout);
  if (!membership.ok()) return membership.status();
  if (on_started) on_started(server.get(), client.get());
  LOG(INFO) << "parameter server " << index << " (" << server->id() << ") serving at " << self.address;
  const absl::Status stop = client->WaitForStop(absl::InfiniteDuration());
  if (on_started) on_started(nullptr, nullptr);  // about to go away
  const TableStats stats = server->table().stats();
  LOG(INFO) << "parameter server " << index << ": " << server->table().size() << " rows (created "
            << stats.total.admitted << ", evicted by TTL " << stats.total.evicted_ttl << " and by capacity "
            << stats.total.evicted_capacity << ", " << stats.total.unadmitted << " ids counted for admission); stopping ("
            << (stop.ok() ? std::string("job done") : std::string(stop.message())) << ")";
  server->Shutdown();
  client->Shutdown();
  return stop;
}

// A worker: registers, trains with the servers of the membership, reports finished.
absl::StatusOr<TrainResult> RunWorker(FileSystem* fs, const JobConfig& job, int index, int workers,
                                      std::unique_ptr<transport::Endpoint> store_ep,
                                      std::unique_ptr<transport::Endpoint> client_ep,
                                      const std::string& scheduler_address, Collective* collective,
                                      Collective* device_collective,
                                      const std::function<void(int64_t)>& before_step = nullptr,
                                      const std::function<void()>& before_setup = nullptr) {
  const ClusterConfig& c = job.cluster();
  ASSIGN_OR_RETURN(std::unique_ptr<SchedulerClient> client,
                   SchedulerClient::Create(std::move(client_ep), ClientOptionsFor(c, scheduler_address)));
  PeerInfo self;
  self.role = PeerRole::kWorker;
  self.index = index;
  self.id = store_ep->id();
  ASSIGN_OR_RETURN(const Membership membership, client->Register(self, absl::Now() + kRegisterTimeout));

  WorkerRuntime runtime;
  runtime.worker_index = index;
  runtime.num_workers = workers;
  runtime.collective = collective;
  runtime.device_collective = device_collective;
  runtime.collective_timeout = Ms(c.rpc_deadline_ms());
  runtime.hold_limit = Ms(c.checkpoint_deadline_ms());
  runtime.barrier = [&](const std::string& name) {
    return client->Barrier(name, absl::Now() + Ms(c.checkpoint_deadline_ms()));
  };
  runtime.make_store = [&](const TableOptions& table) -> absl::StatusOr<std::unique_ptr<EmbeddingStore>> {
    RemoteEmbeddingStoreOptions o;
    for (const PeerInfo& s : membership.servers) o.servers.push_back({s.id, s.address});
    o.slots = table.slots;
    o.deadline = Ms(c.rpc_deadline_ms());
    o.checkpoint_deadline = Ms(c.checkpoint_deadline_ms());
    o.worker_index = index;
    o.num_workers = workers;
    // ABORTED: the job's end is not the fault of the server a call was waiting on.
    o.job_status = [&client]() {
      const absl::Status status = client->JobStatus();
      return status.ok() ? status : absl::AbortedError(status.message());
    };
    return NewRemoteEmbeddingStore(std::move(store_ep), std::move(o));
  };
  runtime.report = [&](const scheduler::BucketStats& stats) {
    return client->Report(stats, absl::Now() + Ms(c.rpc_deadline_ms()));
  };
  runtime.reweighter_state = [&]() { return client->ReweighterState(absl::Now() + Ms(c.rpc_deadline_ms())); };
  runtime.restore_reweighter = [&](const scheduler::SampleReweighter::State& state, int64_t rounds,
                                   const scheduler::BucketWeights& weights) {
    return client->RestoreReweighter(state, rounds, weights, absl::Now() + Ms(c.rpc_deadline_ms()));
  };
  runtime.resume_rounds = [&](int64_t rounds) { client->ResumeRounds(rounds); };
  int64_t steps = 0;
  runtime.job_status = [&]() {
    if (before_step) before_step(steps++);
    return client->JobStatus();
  };
  if (before_setup) before_setup();
  absl::StatusOr<TrainResult> result = TrainAndEvaluate(fs, job, &runtime);
  if (result.ok()) {
    RETURN_IF_ERROR(client->Finish(result->steps, result->last_loss, absl::Now() + Ms(c.rpc_deadline_ms())));
  } else {
    LOG(ERROR) << "worker " << index << " stopped: " << result.status();
    // ABORTED is another peer's failure seen from here ("worker 0 failed" while it held this
    // worker at a checkpoint): that peer reports its own error, the cause, in a moment. Give it
    // up to the peer timeout to do so, so that the job fails naming the cause, not this echo.
    if (absl::IsAborted(result.status()) && client->JobStatus().ok()) {
      client->WaitForStop(Ms(c.peer_timeout_ms())).IgnoreError();
    }
    // The scheduler fails the job at once, naming this worker and its error; if the message is
    // lost, the worker's silence does it after the heartbeat timeout. Not when the job has
    // already failed or the scheduler is unreachable (the call would only wait).
    if (client->JobStatus().ok()) {
      absl::Status told = client->Fail(result.status(), absl::Now() + Ms(c.rpc_deadline_ms()));
      if (!told.ok()) LOG(WARNING) << "worker " << index << ": could not tell the scheduler: " << told;
    }
  }
  client->Shutdown();
  return result;
}

// An error of one role and when it happened.
struct RoleError {
  absl::Status status;
  absl::Time at = absl::InfiniteFuture();
};

// Of the errors of a failed job, the one to show: the earliest root cause (a worker's own
// error: a server that did not answer, bad data...), else the scheduler's reason (a dead peer),
// else the first error that only reports that the job was stopped or a peer went away. A
// worker that fails goes silent, so the scheduler's reason then names the worker rather than
// the cause.
absl::Status FirstCause(const absl::Status& scheduler_status, const std::vector<RoleError>& errors) {
  // UNAVAILABLE is a consequence (a peer went away because the job stopped) except when a
  // worker's store says a parameter server is unreachable: then the server is gone, the cause.
  auto consequence = [](const absl::Status& st) {
    return absl::IsAborted(st) || absl::IsCancelled(st) ||
           (absl::IsUnavailable(st) && !absl::StrContains(st.message(), "parameter server"));
  };
  const RoleError* first = nullptr;
  for (const RoleError& e : errors) {
    if (!e.status.ok() && !consequence(e.status) && (first == nullptr || e.at < first->at)) first = &e;
  }
  if (first != nullptr) return first->status;
  if (!scheduler_status.ok()) return scheduler_status;
  for (const RoleError& e : errors) {
    if (!e.status.ok()) return e.status;
  }
  return absl::OkStatus();
}

// "tcp://0.0.0.0:5555" -> "tcp://HOST:5555".
std::string Advertise(const std::string& bound, const std::string& host) {
  const size_t colon = bound.rfind(':');
  if (colon == std::string::npos) return bound;
  return absl::StrCat("tcp://", host, bound.substr(colon));
}

std::string ThisHost(const ClusterConfig& c) {
  if (!c.advertise_host().empty()) return c.advertise_host();
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// Whether the workers sum dense gradients with NCCL (trainer.dense_allreduce; the trainer has
// checked the value and the device).
bool UsesNccl(const TrainerConfig& tc, bool under_mpirun, int workers) {
  if (tc.dense_allreduce() == "nccl") return true;
  return tc.dense_allreduce() == "auto" && tc.device() == "cuda" && under_mpirun && workers > 1 &&
         CHOIR_WITH_NCCL;
}

// The NCCL group of the workers, bootstrapped through their host collective (every worker
// calls it), on the GPU trainer.cuda_device (resolved: >= 0).
absl::StatusOr<std::unique_ptr<Collective>> NewNcclGroup(const JobConfig& job, Collective* bootstrap) {
#if CHOIR_WITH_NCCL
  models::cuda::NcclCollectiveOptions o;
  o.device = job.trainer().cuda_device();
  o.cuda.memory_pools = job.trainer().cuda_memory_pools();
  o.timeout = Ms(job.cluster().rpc_deadline_ms());
  // Create initialises CUDA itself, inside its all-ranks-agree step: a rank whose GPU fails
  // makes every rank fail at once instead of leaving the others waiting out the timeout.
  ASSIGN_OR_RETURN(std::unique_ptr<models::cuda::NcclCollective> nccl,
                   models::cuda::NcclCollective::Create(bootstrap, o));
  LOG(INFO) << "dense gradients: NCCL allreduce among " << nccl->size() << " GPU workers (this one rank "
            << nccl->rank() << ", GPU " << o.device << ")";
  return std::unique_ptr<Collective>(std::move(nccl));
#else
  (void)job;
  (void)bootstrap;
  return absl::FailedPreconditionError(
      "trainer.dense_allreduce: 'nccl' but this choir was built without NCCL (install NCCL beside "
      "CUDA and rebuild), or use 'host'");
#endif
}

// Where this worker sits among the workers of its host.
struct HostPlace {
  int index = 0;    // among the workers on this host
  int workers = 1;  // on this host
};

// From every worker's host name (a collective over the workers' group: every worker calls it).
absl::StatusOr<HostPlace> PlaceOnHost(Collective* workers_group, int index, int workers, const std::string& host) {
  // CRC32C of the name (+1, so that 0 means "not this rank") as a double: exact, the same on
  // every host.
  std::vector<double> hosts(workers, 0);
  hosts[index] = static_cast<double>(crc32c::Value(host)) + 1;
  RETURN_IF_ERROR(workers_group->AllReduceSum(hosts.data(), workers));
  HostPlace place;
  place.workers = 0;
  for (int w = 0; w < workers; ++w) {
    if (hosts[w] != hosts[index]) continue;
    if (w < index) ++place.index;
    ++place.workers;
  }
  return place;
}

}  // namespace

absl::StatusOr<TrainResult> RunLocalCluster(FileSystem* fs, const JobConfig& job, const LocalClusterHooks& hooks) {
  const ClusterConfig& c = job.cluster();
  RETURN_IF_ERROR(ValidateCluster(c));
  const int servers = c.servers(), workers = c.workers();
  if (servers < 1) return absl::InvalidArgumentError("RunLocalCluster: cluster.servers must be >= 1");
  RETURN_IF_ERROR(ValidateDeviceConfig(job.trainer()));
  ASSIGN_OR_RETURN(const TableOptions table, SparseTableFor(fs, job));
  ASSIGN_OR_RETURN(const SchedulerOptions scheduler_options, SchedulerOptionsFor(job, servers, workers));
  LOG(INFO) << "local cluster: 1 scheduler, " << servers << " parameter servers, " << workers << " workers over "
            << c.transport();

  const bool zmq = c.transport() == "zmq";
  transport::InProcessNetwork network;
  auto endpoint = [&](const std::string& id, bool bind, const std::string& role,
                      int index) -> absl::StatusOr<std::unique_ptr<transport::Endpoint>> {
    transport::EndpointOptions o;
    o.id = id;
    if (zmq && bind) o.bind_address = "tcp://127.0.0.1:0";
    std::unique_ptr<transport::Endpoint> ep;
    if (zmq) {
      ASSIGN_OR_RETURN(ep, transport::NewZmqEndpoint(o));
    } else {
      ASSIGN_OR_RETURN(ep, network.NewEndpoint(o));
    }
    if (hooks.wrap_endpoint) ep = hooks.wrap_endpoint(role, index, std::move(ep));
    return ep;
  };

  ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> scheduler_ep, endpoint(kSchedulerId, true, "scheduler", -1));
  ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler, Scheduler::Start(std::move(scheduler_ep), scheduler_options));
  for (int s = 0; s < servers; ++s) RETURN_IF_ERROR(scheduler->AddPeer(ClientId(PeerRole::kServer, s)));
  for (int w = 0; w < workers; ++w) RETURN_IF_ERROR(scheduler->AddPeer(ClientId(PeerRole::kWorker, w)));
  const std::string scheduler_address = scheduler->address();

  // Every endpoint first, so that a setup error returns before any thread starts.
  std::vector<std::unique_ptr<transport::Endpoint>> server_data(servers), server_client(servers);
  std::vector<std::unique_ptr<transport::Endpoint>> worker_store(workers), worker_client(workers);
  for (int s = 0; s < servers; ++s) {
    ASSIGN_OR_RETURN(server_data[s], endpoint(ServerId(s), true, "server", s));
    ASSIGN_OR_RETURN(server_client[s], endpoint(ClientId(PeerRole::kServer, s), false, "client", s));
  }
  for (int w = 0; w < workers; ++w) {
    ASSIGN_OR_RETURN(worker_store[w], endpoint(WorkerId(w), false, "worker", w));
    ASSIGN_OR_RETURN(worker_client[w], endpoint(ClientId(PeerRole::kWorker, w), false, "client", w));
  }
  InProcessCollectiveOptions co;
  co.timeout = Ms(c.rpc_deadline_ms());
  std::vector<std::unique_ptr<Collective>> collectives = NewInProcessCollectives(workers, co);
  // NCCL in one process: one worker, one GPU (NCCL allows one rank per GPU).
  std::unique_ptr<Collective> nccl;
  JobConfig worker_job = job;
  if (worker_job.trainer().cuda_device() < 0) worker_job.mutable_trainer()->set_cuda_device(0);
  if (UsesNccl(job.trainer(), /*under_mpirun=*/false, workers)) {
    if (workers != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "trainer.dense_allreduce: 'nccl' in local mode needs cluster.workers 1 (it is ", workers,
          "): one process drives one GPU; run the workers under mpirun, one per GPU"));
    }
    ASSIGN_OR_RETURN(nccl, NewNcclGroup(worker_job, collectives[0].get()));
  }

  // The running servers, for hooks.kill_server.
  std::mutex running_mu;
  std::vector<std::pair<ParamServer*, SchedulerClient*>> running(servers, {nullptr, nullptr});
  auto kill = [&](int s) {
    std::lock_guard<std::mutex> lock(running_mu);
    if (s < 0 || s >= servers || running[s].first == nullptr) return;
    LOG(WARNING) << "test hook: parameter server " << s << " crashes";
    running[s].first->Shutdown();
    running[s].second->Shutdown();
  };
  std::vector<RoleError> server_status(servers);
  std::vector<absl::StatusOr<TrainResult>> worker_result(workers, absl::UnknownError("not run"));
  std::vector<absl::Time> worker_end(workers);
  std::vector<std::thread> threads;
  for (int s = 0; s < servers; ++s) {
    threads.emplace_back([&, s] {
      server_status[s].status = RunServer(fs, s, job, table, workers, std::move(server_data[s]), std::move(server_client[s]),
                                   "", scheduler_address, [&, s](ParamServer* server, SchedulerClient* client) {
                                     std::lock_guard<std::mutex> lock(running_mu);
                                     running[s] = {server, client};
                                   });
      server_status[s].at = absl::Now();
    });
  }
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      std::function<void(int64_t)> before = [&hooks, &kill, w](int64_t step) {
        if (hooks.before_step) hooks.before_step(w, step);
        if (w == 0 && step == hooks.kill_at_step) kill(hooks.kill_server);
      };
      std::function<void()> before_setup = [&hooks, w] {
        if (hooks.before_setup) hooks.before_setup(w);
      };
      worker_result[w] = RunWorker(fs, worker_job, w, workers, std::move(worker_store[w]), std::move(worker_client[w]),
                                   scheduler_address, collectives[w].get(), nccl.get(), before, before_setup);
      worker_end[w] = absl::Now();
      // A worker that is done leaves the group: the others' collectives then fail at once
      // instead of waiting for it.
      collectives[w].reset();
    });
  }
  for (std::thread& t : threads) t.join();
  const absl::Status job_status = scheduler->JobStatus();
  scheduler->Shutdown();
  if (hooks.job_ended) hooks.job_ended(job_status);

  std::vector<RoleError> errors;
  for (int w = 0; w < workers; ++w) errors.push_back({worker_result[w].status(), worker_end[w]});
  for (const RoleError& e : server_status) errors.push_back(e);
  RETURN_IF_ERROR(FirstCause(job_status, errors));
  return std::move(*worker_result[0]);
}

absl::StatusOr<TrainResult> RunMpiRank(FileSystem* fs, const JobConfig& job) {
  const ClusterConfig& c = job.cluster();
  RETURN_IF_ERROR(ValidateCluster(c));
  RETURN_IF_ERROR(ValidateDeviceConfig(job.trainer()));
  ASSIGN_OR_RETURN(const MpiWorld world, GetMpiWorld());
  const int servers = c.servers();
  const int workers = world.size - 1 - servers;
  if (servers < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cluster.servers is %d: a job under mpirun needs at least one parameter server (ranks 1..S; servers 0 is "
        "the single-process trainer, run without mpirun)",
        servers));
  }
  if (workers < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "mpirun -np %d with cluster.servers = %d: needs at least %d ranks (1 scheduler, the servers, 1 worker)",
        world.size, servers, servers + 2));
  }
  const std::string host = ThisHost(c);
  // The scheduler's address reaches every rank through MPI (the only bootstrap step).
  ASSIGN_OR_RETURN(std::unique_ptr<Collective> everyone, NewMpiCollective({}));
  auto zmq = [](const std::string& id, bool bind) {
    transport::EndpointOptions o;
    o.id = id;
    if (bind) o.bind_address = "tcp://0.0.0.0:0";
    return transport::NewZmqEndpoint(o);
  };
  char address[256] = {};
  if (world.rank == 0) {
    ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> ep, zmq(kSchedulerId, true));
    const std::string advertised = Advertise(ep->address(), host);
    ASSIGN_OR_RETURN(const SchedulerOptions options, SchedulerOptionsFor(job, servers, workers));
    ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler, Scheduler::Start(std::move(ep), options));
    for (int s = 0; s < servers; ++s) RETURN_IF_ERROR(scheduler->AddPeer(ClientId(PeerRole::kServer, s)));
    for (int w = 0; w < workers; ++w) RETURN_IF_ERROR(scheduler->AddPeer(ClientId(PeerRole::kWorker, w)));
    if (advertised.size() >= sizeof(address)) return absl::InvalidArgumentError("scheduler address too long");
    std::copy(advertised.begin(), advertised.end(), address);
    RETURN_IF_ERROR(everyone->Broadcast(address, sizeof(address), 0));
    LOG(INFO) << "scheduler at " << advertised << ": " << servers << " servers, " << workers << " workers";
    const absl::Status end = scheduler->WaitForEnd(absl::InfiniteFuture());
    scheduler->Shutdown();
    RETURN_IF_ERROR(end);
    return TrainResult();
  }
  RETURN_IF_ERROR(everyone->Broadcast(address, sizeof(address), 0));
  const std::string scheduler_address(address);
  if (world.rank <= servers) {
    const int index = world.rank - 1;
    ASSIGN_OR_RETURN(const TableOptions table, SparseTableFor(fs, job));
    ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> data, zmq(ServerId(index), true));
    const std::string advertised = Advertise(data->address(), host);
    ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> client, zmq(ClientId(PeerRole::kServer, index), false));
    RETURN_IF_ERROR(RunServer(fs, index, job, table, workers, std::move(data), std::move(client), advertised,
                              scheduler_address));
    return TrainResult();
  }
  const int index = world.rank - 1 - servers;
  MpiCollectiveOptions mo;
  for (int r = servers + 1; r < world.size; ++r) mo.ranks.push_back(r);
  mo.timeout = Ms(c.rpc_deadline_ms());
  ASSIGN_OR_RETURN(std::unique_ptr<Collective> group, NewMpiCollective(mo));
  // A GPU worker: its device (cuda_device -1: one GPU per worker of its host) and, with NCCL,
  // the workers' NCCL group. Every worker of a cuda job takes part in the same collectives.
  JobConfig worker_job = job;
  TrainerConfig& tc = *worker_job.mutable_trainer();
  bool nccl_wanted = UsesNccl(tc, /*under_mpirun=*/true, workers);
  if (tc.device() == "cuda") {
    ASSIGN_OR_RETURN(const HostPlace place, PlaceOnHost(group.get(), index, workers, host));
    int gpus = 0;
#if CHOIR_WITH_CUDA
    std::string why;
    gpus = models::cuda::CudaDeviceCount(&why);
    if (gpus == 0) LOG(WARNING) << "worker " << index << " on " << host << ": no CUDA device: " << why;
#endif
    const bool automatic = tc.cuda_device() < 0;
    if (automatic) tc.set_cuda_device(gpus > 0 ? place.index % gpus : 0);
    LOG(INFO) << "worker " << index << ": worker " << place.index << " of " << place.workers << " on host " << host
              << ", GPU " << tc.cuda_device() << " of " << gpus;
    // NCCL needs a GPU of its own per worker: decided by all workers together, so that none
    // waits for the others in NCCL's setup.
    double shared_gpu = place.workers > (automatic ? gpus : 1) ? 1 : 0;
    RETURN_IF_ERROR(group->AllReduceSum(&shared_gpu, 1));
    if (nccl_wanted && shared_gpu > 0) {
      const std::string why_not = absl::StrFormat(
          "some host runs more workers than it has GPUs for them (here: %d workers on %s, %d GPUs, cuda_device %s)",
          place.workers, host, gpus, automatic ? "-1" : std::to_string(tc.cuda_device()));
      if (tc.dense_allreduce() == "nccl") {
        return absl::InvalidArgumentError(absl::StrCat("trainer.dense_allreduce 'nccl' needs one GPU per worker: ",
                                                       why_not, "; start fewer workers per host or use 'host'"));
      }
      LOG(WARNING) << "dense gradients summed on the host, not with NCCL: " << why_not;
      nccl_wanted = false;
    }
  }
  std::unique_ptr<Collective> nccl;
  if (nccl_wanted) {
    ASSIGN_OR_RETURN(nccl, NewNcclGroup(worker_job, group.get()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> store, zmq(WorkerId(index), false));
  ASSIGN_OR_RETURN(std::unique_ptr<transport::Endpoint> client, zmq(ClientId(PeerRole::kWorker, index), false));
  ASSIGN_OR_RETURN(TrainResult result, RunWorker(fs, worker_job, index, workers, std::move(store), std::move(client),
                                                 scheduler_address, group.get(), nccl.get()));
  if (index != 0) result = TrainResult();
  return result;
}

absl::StatusOr<TrainResult> RunTrainJob(FileSystem* fs, const JobConfig& job) {
  if (LaunchedByMpirun()) return RunMpiRank(fs, job);
  if (job.has_cluster()) RETURN_IF_ERROR(ValidateCluster(job.cluster()));
  if (job.cluster().servers() == 0 && job.cluster().workers() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cluster.workers is ", job.cluster().workers(),
        " but cluster.servers is 0: workers share their sparse parameters through parameter servers; set "
        "cluster.servers >= 1 (or cluster.workers 1 for the single-process trainer)"));
  }
  if (job.cluster().servers() > 0) return RunLocalCluster(fs, job);
  return TrainAndEvaluate(fs, job);
}

}  // namespace choir::worker
