// Host memory pinning (Tensor::PinHost, HostAllocator) and the staging protocol of InputStager
// (models/model.h) against a device backend that lives in host memory: every "device" byte and
// page-locked block is counted, copies run on two emulated lanes, and events record which copies
// each lane or the host has waited for. It checks what a CPU can: contents, which memory is
// pinned, that nothing leaks, and that StageAsync/Ready/Release/AwaitUploads issue the waits in
// the order the protocol promises. The CUDA implementation of the same calls is checked on a GPU
// (tests/gpu/trainer_gpu_test.cc: staged and synchronous training give identical predictions).
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/device.h"
#include "models/fusion_head.h"
#include "models/model.h"
#include "models/tensor.h"

namespace choir::models {
namespace {

// A backend whose device memory is host memory. Copies on a lane are queued and run when that
// lane is "drained": by SynchronizeEvent (the host waits) or when the other lane waits on an
// event of this one. The log records every wait so tests can check the protocol's order.
class HostMemoryBackend : public DeviceBackend {
 public:
  struct Event {
    bool recorded = false;
    Lane lane = Lane::kCompute;
    size_t position = 0;  // queued copies of `lane` before the event
  };

  void* AllocatePinnedHost(size_t bytes) override {
    void* p = std::malloc(bytes);
    pinned[p] = bytes;
    return p;
  }
  void FreePinnedHost(void* ptr) override {
    ASSERT_EQ(pinned.erase(ptr), 1u) << "freeing pinned memory never allocated";
    std::free(ptr);
  }
  void* Allocate(size_t bytes) override {
    void* p = std::malloc(std::max<size_t>(bytes, 1));
    device[p] = bytes;
    return p;
  }
  void Free(void* ptr) override {
    ASSERT_EQ(device.erase(ptr), 1u);
    std::free(ptr);
  }
  void CopyToDevice(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void CopyToHost(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void CopyOnDevice(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void Synchronize() override { Drain(Lane::kUpload, queued[Lane::kUpload].size()); }
  void CopyToDeviceAsync(void* dst, const void* src, size_t bytes, Lane lane) override {
    // The source is snapshotted when the copy runs, not now: a host buffer changed before the
    // copy ran would show up in the device bytes.
    queued[lane].push_back({dst, src, bytes});
    log.push_back(lane == Lane::kUpload ? "copy upload" : "copy compute");
  }
  void* CreateEvent() override { return new Event; }
  void DestroyEvent(void* e) override { delete static_cast<Event*>(e); }
  void RecordEvent(void* e, Lane lane) override {
    Event* ev = static_cast<Event*>(e);
    ev->recorded = true;
    ev->lane = lane;
    ev->position = queued[lane].size();
    log.push_back(lane == Lane::kUpload ? "record upload" : "record compute");
  }
  void WaitEvent(void* e, Lane lane) override {
    const Event* ev = static_cast<Event*>(e);
    log.push_back(std::string(lane == Lane::kUpload ? "upload" : "compute") + " waits " +
                  (ev->lane == Lane::kUpload ? "upload" : "compute") + (ev->recorded ? "" : " (unrecorded)"));
    if (ev->recorded) Drain(ev->lane, ev->position);
  }
  void SynchronizeEvent(void* e) override {
    const Event* ev = static_cast<Event*>(e);
    log.push_back("host waits");
    if (ev->recorded) Drain(ev->lane, ev->position);
  }

  // Not used by staging.
  void Fill(float* p, int64_t n, float v) override { std::fill_n(p, n, v); }
  void Fill(double* p, int64_t n, double v) override { std::fill_n(p, n, v); }
  void ConcatCols(const std::vector<const Tensor<float>*>&, Tensor<float>*) override { Unused(); }
  void ConcatCols(const std::vector<const Tensor<double>*>&, Tensor<double>*) override { Unused(); }
  void SplitCols(const Tensor<float>&, const std::vector<int>&, const std::vector<Tensor<float>*>&) override { Unused(); }
  void SplitCols(const Tensor<double>&, const std::vector<int>&, const std::vector<Tensor<double>*>&) override {
    Unused();
  }
  void AddToCols(const Tensor<float>&, int, Tensor<float>*) override { Unused(); }
  void AddToCols(const Tensor<double>&, int, Tensor<double>*) override { Unused(); }
  void CopyCols(const Tensor<float>&, int, int, Tensor<float>*) override { Unused(); }
  void CopyCols(const Tensor<double>&, int, int, Tensor<double>*) override { Unused(); }
  void SgdUpdate(float*, const float*, int64_t, float) override { Unused(); }
  void SgdUpdate(double*, const double*, int64_t, double) override { Unused(); }
  void AdagradUpdate(float*, const float*, float*, int64_t, float, float) override { Unused(); }
  void AdagradUpdate(double*, const double*, double*, int64_t, double, double) override { Unused(); }
  void Scale(float*, int64_t, float) override { Unused(); }
  void Scale(double*, int64_t, double) override { Unused(); }
  float BinaryCrossEntropy(const Tensor<float>&, absl::Span<const float>, absl::Span<const float>, Tensor<float>*,
                           std::vector<float>*) override {
    Unused();
    return 0;
  }
  double BinaryCrossEntropy(const Tensor<double>&, absl::Span<const double>, absl::Span<const double>,
                            Tensor<double>*, std::vector<double>*) override {
    Unused();
    return 0;
  }
  void FuseLogits(const FusionHeads<float>&, Tensor<float>*) override { Unused(); }
  void FuseLogits(const FusionHeads<double>&, Tensor<double>*) override { Unused(); }
  FusionLoss FusionHeadLoss(const FusionHeads<float>&, const Tensor<float>&, absl::Span<const float>,
                            absl::Span<const float>, absl::Span<const float>, const FusionLossOptions&,
                            HeadGrads<float>*, std::vector<float>*) override {
    Unused();
    return {};
  }
  FusionLoss FusionHeadLoss(const FusionHeads<double>&, const Tensor<double>&, absl::Span<const double>,
                            absl::Span<const double>, absl::Span<const double>, const FusionLossOptions&,
                            HeadGrads<double>*, std::vector<double>*) override {
    Unused();
    return {};
  }
  void FusionBackward(const FusionHeads<float>&, const Tensor<float>&, const Tensor<float>&, const Tensor<float>&,
                      const Tensor<float>&, const Tensor<float>&, Tensor<float>*, Tensor<float>*,
                      Tensor<float>*) override {
    Unused();
  }
  void FusionBackward(const FusionHeads<double>&, const Tensor<double>&, const Tensor<double>&,
                      const Tensor<double>&, const Tensor<double>&, const Tensor<double>&, Tensor<double>*,
                      Tensor<double>*, Tensor<double>*) override {
    Unused();
  }

  struct Copy {
    void* dst;
    const void* src;
    size_t bytes;
  };
  std::map<void*, size_t> pinned, device;
  std::map<Lane, std::vector<Copy>> queued;
  std::map<Lane, size_t> done;
  std::vector<std::string> log;

 private:
  static void Unused() { FAIL() << "not a staging call"; }
  void Drain(Lane lane, size_t upto) {
    for (size_t& i = done[lane]; i < upto; ++i) {
      const Copy& c = queued[lane][i];
      std::memcpy(c.dst, c.src, c.bytes);
    }
  }
};

HostMemoryBackend* Backend() {
  static HostMemoryBackend* backend = [] {
    auto* b = new HostMemoryBackend;
    RegisterDeviceBackend(Device::kCuda, b);
    return b;
  }();
  return backend;
}

Tensor<float> Counting(int rows, int cols, float start) {
  Tensor<float> t(rows, cols);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = start + static_cast<float>(i);
  return t;
}

TEST(PinnedHostMemoryTest, PinningKeepsContentsGrowsPinnedAndFreesEverything) {
  HostMemoryBackend* b = Backend();
  const size_t before = b->pinned.size();
  {
    Tensor<float> t = Counting(3, 4, 1);
    EXPECT_EQ(t.pinned_for(), Device::kCpu);
    t.PinHost(Device::kCuda);
    EXPECT_EQ(t.pinned_for(), Device::kCuda);
    EXPECT_EQ(b->pinned.count(t.data()), 1u) << "pinned tensor's data is not pinned memory";
    for (int64_t i = 0; i < t.size(); ++i) ASSERT_EQ(t.data()[i], 1 + i);
    t.PinHost(Device::kCuda);  // a no-op
    t.Resize(100, 100, 2.0f);  // growth stays pinned
    EXPECT_EQ(b->pinned.count(t.data()), 1u);
    EXPECT_EQ(t.at(99, 99), 2.0f);
    Tensor<float> copy = t;  // a copy is ordinary memory
    EXPECT_EQ(copy.pinned_for(), Device::kCpu);
    EXPECT_EQ(b->pinned.count(copy.data()), 0u);
    Tensor<float> moved = std::move(t);  // a move carries the pinned block
    EXPECT_EQ(moved.pinned_for(), Device::kCuda);
    EXPECT_EQ(b->pinned.count(moved.data()), 1u);
    moved.PinHost(Device::kCpu);  // back to ordinary memory, contents kept
    EXPECT_EQ(b->pinned.count(moved.data()), 0u);
    EXPECT_EQ(moved.at(50, 50), 2.0f);
  }
  EXPECT_EQ(b->pinned.size(), before) << "pinned memory leaked";
}

TEST(InputStagerTest, StageAsyncCopiesEveryInputTheShapeReadsAndOrdersTheLanes) {
  HostMemoryBackend* b = Backend();
  ModelShape shape;
  shape.num_slots = 2;
  shape.embedding_dim = 3;
  shape.num_dense = 2;
  shape.sequence_targets = {0};
  shape.group_levels = 1;
  shape.group_stats = 2;
  shape.activity_features = 1;
  ModelInputs host;
  host.slots = Counting(4, 6, 0);
  host.dense = Counting(4, 2, 100);
  host.sequences = {Counting(8, 3, 200)};
  host.lengths = {{1, 2, 0, 2}};
  host.group_ids = Counting(4, 3, 300);
  host.group_stats = Counting(4, 2, 400);
  host.activity = Counting(4, 1, 500);
  host.purchases = {0, 3, 1, 9};
  host.group_attributes = Counting(4, 5, 600);  // not read by this shape: not staged
  PinInputs(Device::kCuda, &host);
  EXPECT_EQ(b->pinned.count(host.sequences[0].data()), 1u);
  {
    InputStager<float> stager;
    b->log.clear();
    stager.StageAsync(Device::kCuda, shape, host);
    // The first batch allocates: uploads wait for the allocation point of the compute lane,
    // then for the last Release (none yet), then copy, then mark the copies.
    const std::vector<std::string> first = {"record compute", "upload waits compute",
                                            "upload waits compute (unrecorded)"};
    ASSERT_GE(b->log.size(), first.size() + 1);
    EXPECT_EQ(std::vector<std::string>(b->log.begin(), b->log.begin() + 3), first);
    EXPECT_EQ(b->log.back(), "record upload");
    EXPECT_EQ(std::count(b->log.begin(), b->log.end(), "copy upload"), 6) << "slots, dense, 1 sequence, "
                                                                             "group ids, stats, activity";
    // Change the host batch only after AwaitUploads: the device holds the staged values.
    stager.AwaitUploads();
    const ModelInputs& staged = stager.Ready();
    EXPECT_EQ(b->log.back(), "compute waits upload");
    auto expect_same = [](const Tensor<float>& dev, const Tensor<float>& want, const char* what) {
      ASSERT_EQ(dev.device(), Device::kCuda) << what;
      ASSERT_TRUE(dev.SameShape(want)) << what;
      EXPECT_EQ(0, std::memcmp(dev.data(), want.data(), want.size() * sizeof(float))) << what;
    };
    expect_same(staged.slots, host.slots, "slots");
    expect_same(staged.dense, host.dense, "dense");
    ASSERT_EQ(staged.sequences.size(), 1u);
    expect_same(staged.sequences[0], host.sequences[0], "sequence");
    expect_same(staged.group_ids, host.group_ids, "group ids");
    expect_same(staged.group_stats, host.group_stats, "group stats");
    expect_same(staged.activity, host.activity, "activity");
    EXPECT_TRUE(staged.group_attributes.empty());
    EXPECT_EQ(staged.lengths, host.lengths);
    EXPECT_EQ(staged.purchases, host.purchases);

    // The next batch of the same shape: no allocation, and its copies wait for the Release of
    // the compute that read this one.
    stager.Release();
    host.slots.at(0, 0) = -7;
    b->log.clear();
    stager.StageAsync(Device::kCuda, shape, host);
    ASSERT_GE(b->log.size(), 2u);
    EXPECT_EQ(b->log[0], "upload waits compute") << "the copies must wait for the Release";
    stager.AwaitUploads();
    EXPECT_EQ(stager.Ready().slots.data()[0], -7.0f);
  }
  EXPECT_TRUE(b->device.empty()) << "device memory leaked";
}

}  // namespace
}  // namespace choir::models
