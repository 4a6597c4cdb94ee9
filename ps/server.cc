#include "ps/server.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "ps/feature_key.h"

namespace choir {

using transport::Frame;
using transport::RpcRequest;

absl::StatusOr<std::unique_ptr<ParamServer>> ParamServer::Start(
    std::unique_ptr<transport::Endpoint> endpoint, ParamServerOptions options) {
  if (endpoint == nullptr) return absl::InvalidArgumentError("parameter server: no endpoint");
  absl::StatusOr<std::unique_ptr<SparseTable>> table =
      SparseTable::Create(std::move(options.table));
  if (!table.ok()) return table.status();
  std::string id = endpoint->id();
  std::string address = endpoint->address();
  std::unique_ptr<ParamServer> server(
      new ParamServer(*std::move(table), std::move(id), std::move(address)));
  auto rpc = std::make_unique<transport::RpcServer>(std::move(endpoint), options.rpc);
  ParamServer* self = server.get();
  absl::Status status = rpc->Register(
      kPsPullMethod, [self](RpcRequest& request) { return self->HandlePull(request); });
  if (status.ok()) {
    status = rpc->Register(kPsPushMethod,
                           [self](RpcRequest& request) { return self->HandlePush(request); });
  }
  if (status.ok()) status = rpc->Start();
  if (!status.ok()) return status;
  server->rpc_ = std::move(rpc);
  return server;
}

ParamServer::ParamServer(std::unique_ptr<SparseTable> table, std::string id, std::string address)
    : table_(std::move(table)), id_(std::move(id)), address_(std::move(address)) {}

ParamServer::~ParamServer() { Shutdown(); }

absl::Status ParamServer::AddPeer(const std::string& peer, const std::string& address) {
  return rpc_->endpoint()->AddPeer(peer, address);
}

void ParamServer::Shutdown() {
  if (rpc_ != nullptr) rpc_->Shutdown();
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

absl::StatusOr<std::vector<Frame>> ParamServer::HandlePull(RpcRequest& request) {
  if (request.frames.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("pull: expected 1 frame (keys), got ", request.frames.size()));
  }
  size_t total_dim = 0;
  absl::StatusOr<std::vector<uint64_t>> keys = ReadKeys(request, &total_dim);
  if (!keys.ok()) return keys.status();
  std::vector<float> rows(total_dim);
  absl::Status status = table_->Pull(*keys, absl::MakeSpan(rows));
  if (!status.ok()) return status;
  std::vector<Frame> response;
  response.push_back(Frame::FromVector(std::move(rows)));
  return response;
}

absl::StatusOr<std::vector<Frame>> ParamServer::HandlePush(RpcRequest& request) {
  if (request.frames.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "push: expected 2 frames (keys, gradients), got ", request.frames.size()));
  }
  size_t total_dim = 0;
  absl::StatusOr<std::vector<uint64_t>> keys = ReadKeys(request, &total_dim);
  if (!keys.ok()) return keys.status();
  const Frame& grad_frame = request.frames[1];
  if (grad_frame.type() != transport::ELEMENT_FLOAT32) {
    return absl::InvalidArgumentError(
        absl::StrCat("push: frame 1 must hold float32 gradients, has element type ",
                     transport::ElementType_Name(grad_frame.type())));
  }
  absl::StatusOr<std::vector<float>> grads = grad_frame.ToVector<float>();
  if (!grads.ok()) return grads.status();
  if (grads->size() != total_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("push: ", keys->size(), " keys need ", total_dim, " gradient floats, got ",
                     grads->size()));
  }
  // The table rejects non-finite gradients itself, before changing any row.
  absl::Status status = table_->Push(*keys, *grads);
  if (!status.ok()) return status;
  return std::vector<Frame>();
}

}  // namespace choir
