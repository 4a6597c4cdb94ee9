// Frames, headers and the checks every transport shares (core/transport.h).
#include "core/transport.h"

#include "absl/strings/str_cat.h"
#include "core/internal/transport_internal.h"
#include "glog/logging.h"

namespace choir {
namespace transport {

size_t ElementSize(ElementType type) {
  switch (type) {
    case ELEMENT_BYTES:
      return 1;
    case ELEMENT_UINT64:
    case ELEMENT_INT64:
    case ELEMENT_FLOAT64:
      return 8;
    case ELEMENT_FLOAT32:
    case ELEMENT_INT32:
    case ELEMENT_UINT32:
      return 4;
    case ELEMENT_FLOAT16:
    case ELEMENT_BFLOAT16:
      return 2;
    default:
      return 0;
  }
}

Frame::Frame(std::string bytes) {
  auto owner = std::make_shared<std::string>(std::move(bytes));
  data_ = owner->data();
  size_ = owner->size();
  owner_ = std::move(owner);
}

Frame::Frame(std::shared_ptr<const void> owner, const void* data, size_t size, ElementType type)
    : owner_(std::move(owner)), data_(static_cast<const char*>(data)), size_(size), type_(type) {}

Frame Frame::CopyOf(absl::string_view bytes, ElementType type) {
  Frame frame{std::string(bytes)};
  frame.type_ = type;
  return frame;
}

size_t Frame::count() const {
  size_t element = ElementSize(type_);
  return element == 0 ? 0 : size_ / element;
}

void FinishHeader(Message* message) {
  Header& header = message->header;
  header.set_version(kProtocolVersion);
  header.set_frame_count(static_cast<uint32_t>(message->frames.size()));
  header.clear_frames();
  for (const Frame& frame : message->frames) {
    FrameInfo* info = header.add_frames();
    info->set_type(frame.type());
    info->set_count(frame.count());
  }
}

absl::Status ValidateMessage(const Message& message) {
  const Header& header = message.header;
  if (header.kind() != KIND_REQUEST && header.kind() != KIND_RESPONSE) {
    return absl::InvalidArgumentError(absl::StrCat("unknown message kind ", header.kind()));
  }
  if (header.request_id() == 0) return absl::InvalidArgumentError("request id 0");
  if (header.kind() == KIND_REQUEST && header.method().empty()) {
    return absl::InvalidArgumentError("request without a method");
  }
  if (header.frame_count() != message.frames.size()) {
    return absl::InvalidArgumentError(absl::StrCat("header announces ", header.frame_count(),
                                                   " frames, message has ", message.frames.size()));
  }
  if (static_cast<size_t>(header.frames_size()) != message.frames.size()) {
    return absl::InvalidArgumentError(absl::StrCat("header describes ", header.frames_size(),
                                                   " frames, message has ", message.frames.size()));
  }
  for (size_t i = 0; i < message.frames.size(); ++i) {
    const FrameInfo& info = header.frames(static_cast<int>(i));
    size_t element = ElementSize(info.type());
    if (element == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("frame ", i, " has unknown element type ", info.type()));
    }
    // Compare without overflow: count * element == size.
    size_t size = message.frames[i].size();
    if (size % element != 0 || size / element != info.count()) {
      return absl::InvalidArgumentError(absl::StrCat("frame ", i, " has ", size,
                                                     " bytes, header says ", info.count(),
                                                     " elements of ", element, " bytes"));
    }
    if (message.frames[i].type() != info.type()) {
      return absl::InvalidArgumentError(
          absl::StrCat("frame ", i, " type differs from its header entry"));
    }
  }
  return absl::OkStatus();
}

}  // namespace transport

namespace transport_internal {

absl::Status CheckEnvelope(const transport::Header& header, absl::string_view from,
                           bool from_known) {
  if (header.version() != transport::kProtocolVersion) {
    return absl::InvalidArgumentError(absl::StrCat("protocol version ", header.version(),
                                                   ", expected ", transport::kProtocolVersion));
  }
  if (!from_known) return absl::PermissionDeniedError("sender is not a known peer");
  if (header.sender() != from) {
    return absl::PermissionDeniedError(absl::StrCat("header names sender '", header.sender(), "'"));
  }
  return absl::OkStatus();
}

void Reject(const transport::EndpointOptions& options, absl::string_view from,
            const absl::Status& reason) {
  LOG(WARNING) << "transport endpoint '" << options.id << "' rejected a message from '" << from
               << "': " << reason;
  if (options.on_reject) {
    options.on_reject(transport::Rejection{options.id, std::string(from), reason});
  }
}

}  // namespace transport_internal
}  // namespace choir
