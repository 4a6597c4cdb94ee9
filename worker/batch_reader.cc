#include "worker/batch_reader.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "data/row_block.h"
#include "data/shard.h"
#include "ps/feature_key.h"

namespace choir::worker {

absl::StatusOr<FeatureLayout> BuildFeatureLayout(const data::Schema& schema,
                                                 const ModelConfig& model, Task task) {
  FeatureLayout layout;
  layout.schema = schema;
  layout.task = task;
  layout.max_seq_len = model.max_seq_len();
  absl::flat_hash_set<std::string> excluded(model.exclude_fields().begin(), model.exclude_fields().end());
  absl::flat_hash_map<std::string, int> column;
  for (int i = 0; i < schema.fields_size(); ++i) column[schema.fields(i).name()] = i;
  for (const std::string& name : excluded) {
    if (!column.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.exclude_fields: the dataset has no field '", name, "'"));
    }
  }
  for (int i = 0; i < schema.fields_size(); ++i) {
    const data::Field& f = schema.fields(i);
    const bool id_or_label = f.role() == data::USER_ID || f.role() == data::LABEL_CLICK ||
                             f.role() == data::LABEL_CONVERSION;
    if (id_or_label && f.type() != data::INT64) {
      return absl::InvalidArgumentError(
          absl::StrCat("field '", f.name(), "': a user id or label must be INT64"));
    }
    switch (f.role()) {
      case data::USER_ID:
        layout.user_column = i;
        break;
      case data::LABEL_CLICK:
        layout.click_column = i;
        continue;
      case data::LABEL_CONVERSION:
        layout.conversion_column = i;
        continue;
      default:
        break;
    }
    if (excluded.contains(f.name())) continue;
    const bool categorical_role =
        f.role() == data::USER_ID || f.role() == data::ITEM_ID || f.role() == data::FEATURE;
    if (f.type() == data::INT64 && categorical_role) {
      layout.categorical.push_back({f.name(), i, static_cast<uint32_t>(layout.categorical.size())});
    } else if (f.type() == data::FLOAT && f.role() == data::FEATURE) {
      layout.dense.push_back({f.name(), i});
    }
  }
  if (layout.user_column < 0) {
    return absl::FailedPreconditionError("the dataset has no USER_ID field (needed for GAUC and buckets)");
  }
  if (layout.click_column < 0) return absl::FailedPreconditionError("the dataset has no click label");
  if (task != TASK_CTR && layout.conversion_column < 0) {
    return absl::FailedPreconditionError(
        "the dataset has no conversion label; train it with task: TASK_CTR");
  }
  if (layout.categorical.size() >= 4096) {
    return absl::InvalidArgumentError("more than 4095 categorical fields");
  }

  // Sequences (used by din): configured pairs, or the defaults when the fields exist.
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const SequenceTarget& s : model.sequences()) pairs.push_back({s.sequence(), s.target()});
  const bool defaults = pairs.empty();
  if (defaults) pairs = {{"hist_item", "item_id"}, {"hist_cate", "item_category"}};
  for (const auto& [seq, target] : pairs) {
    auto seq_it = column.find(seq);
    int target_index = -1;
    for (size_t c = 0; c < layout.categorical.size(); ++c) {
      if (layout.categorical[c].field == target) target_index = c;
    }
    if (seq_it == column.end() || target_index < 0) {
      if (defaults) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          "model.sequences: '", seq, "' -> '", target, "' needs an INT64_LIST field '", seq,
          "' and a categorical feature '", target, "' in the dataset"));
    }
    if (schema.fields(seq_it->second).type() != data::INT64_LIST) {
      return absl::InvalidArgumentError(absl::StrCat("model.sequences: '", seq, "' is not an INT64_LIST"));
    }
    layout.sequences.push_back({seq, seq_it->second, target_index});
  }
  return layout;
}

void Batch::Clear(const FeatureLayout& layout) {
  size = 0;
  labels.clear();
  user_ids.clear();
  cat_keys.clear();
  dense.clear();
  seq_keys.assign(layout.sequences.size(), {});
  seq_lengths.assign(layout.sequences.size(), {});
}

namespace {

// One sample, ready for batching.
struct Sample {
  float label = 0;
  int64_t user = 0;
  std::vector<uint64_t> cat;
  std::vector<float> dense;
  std::vector<std::vector<uint64_t>> seqs;
};

class BatchReaderImpl : public BatchReader {
 public:
  BatchReaderImpl(FileSystem* fs, std::vector<std::string> files, FeatureLayout layout,
                  const BatchReaderOptions& options)
      : fs_(fs), files_(std::move(files)), layout_(std::move(layout)), options_(options),
        rng_(options.seed) {
    producer_ = std::thread([this] { Produce(); });
  }

  ~BatchReaderImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    producer_.join();
  }

  absl::StatusOr<bool> Next(Batch* batch) override {
    batch->Clear(layout_);
    RETURN_IF_ERROR(error_);  // a failed input stays failed
    while (batch->size < options_.batch_size) {
      // Keep the shuffle buffer full while input lasts.
      while (!input_done_ && static_cast<int>(buffer_.size()) < std::max(1, options_.shuffle_buffer)) {
        error_ = Refill();
        if (!error_.ok()) {
          batch->Clear(layout_);
          return error_;
        }
      }
      if (buffer_.empty()) break;
      if (options_.shuffle_buffer > 0) {
        const size_t pick = std::uniform_int_distribution<size_t>(0, buffer_.size() - 1)(rng_);
        std::swap(buffer_[pick], buffer_.back());
        Append(buffer_.back(), batch);
        buffer_.pop_back();
      } else {  // file order
        Append(buffer_.front(), batch);
        buffer_.pop_front();
      }
    }
    return batch->size > 0;
  }

  int64_t samples() const override { return samples_; }
  int64_t filtered() const override { return filtered_; }

 private:
  // Moves one decoded block's samples from the producer into the buffer.
  absl::Status Refill() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !ready_.empty() || producer_done_; });
    if (ready_.empty()) {
      input_done_ = true;
      return producer_status_;
    }
    std::vector<Sample> samples = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    cv_.notify_all();
    for (Sample& s : samples) buffer_.push_back(std::move(s));
    return absl::OkStatus();
  }

  void Append(const Sample& s, Batch* b) {
    b->labels.push_back(s.label);
    b->user_ids.push_back(s.user);
    b->cat_keys.insert(b->cat_keys.end(), s.cat.begin(), s.cat.end());
    b->dense.insert(b->dense.end(), s.dense.begin(), s.dense.end());
    for (size_t q = 0; q < s.seqs.size(); ++q) {
      b->seq_keys[q].insert(b->seq_keys[q].end(), s.seqs[q].begin(), s.seqs[q].end());
      b->seq_lengths[q].push_back(s.seqs[q].size());
    }
    ++b->size;
    ++samples_;
  }

  // The producer thread: converts the blocks (decoded by decode_threads threads) in file order
  // and hands them over.
  void Produce() {
    ErrorCounter errors(options_.budget);
    absl::Status status;
    for (int epoch = 0; epoch < options_.epochs && status.ok(); ++epoch) {
      status = data::ForEachBlock(fs_, files_, &errors, [&](const data::RowBlock& block) -> absl::Status {
        RETURN_IF_ERROR(CheckBlock(block));
        std::vector<Sample> samples = Convert(block);
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || static_cast<int>(ready_.size()) < options_.prefetch_blocks; });
        if (stop_) return absl::CancelledError("reader closed");
        ready_.push_back(std::move(samples));
        lock.unlock();
        cv_.notify_all();
        return absl::OkStatus();
      }, options_.decode_threads);
    }
    std::lock_guard<std::mutex> lock(mu_);
    producer_status_ = status.code() == absl::StatusCode::kCancelled ? absl::OkStatus() : status;
    producer_done_ = true;
    cv_.notify_all();
  }

  // Every file of a split must have the layout's columns with the layout's types (the layout
  // was built from the first file's schema).
  absl::Status CheckBlock(const data::RowBlock& b) const {
    auto want = [&](int col, data::FieldType type, absl::string_view name) -> absl::Status {
      if (col < 0) return absl::OkStatus();
      if (col >= static_cast<int>(b.num_columns()) || b.column(col).type != type ||
          b.schema().fields(col).name() != name) {
        return absl::FailedPreconditionError(absl::StrCat(
            "a shard's schema differs from the first train file's (field '", name, "' at column ", col,
            "); all files of a dataset must share one schema"));
      }
      return absl::OkStatus();
    };
    const data::Schema& first = layout_.schema;
    for (int col : {layout_.user_column, layout_.click_column, layout_.conversion_column}) {
      if (col >= 0) RETURN_IF_ERROR(want(col, data::INT64, first.fields(col).name()));
    }
    for (const auto& c : layout_.categorical) RETURN_IF_ERROR(want(c.column, data::INT64, c.field));
    for (const auto& d : layout_.dense) RETURN_IF_ERROR(want(d.column, data::FLOAT, d.field));
    for (const auto& q : layout_.sequences) RETURN_IF_ERROR(want(q.column, data::INT64_LIST, q.field));
    return absl::OkStatus();
  }

  std::vector<Sample> Convert(const data::RowBlock& b) {
    std::vector<Sample> out;
    out.reserve(b.num_rows());
    for (size_t r = 0; r < b.num_rows(); ++r) {
      const int64_t click = b.Int(layout_.click_column, r);
      const int64_t conversion = layout_.conversion_column >= 0 ? b.Int(layout_.conversion_column, r) : 0;
      float label = 0;
      switch (layout_.task) {
        case TASK_CVR:
          if (click == 0 && !options_.keep_unclicked) {
            ++filtered_;
            continue;
          }
          label = conversion != 0;
          break;
        case TASK_CTR:
          label = click != 0;
          break;
        case TASK_CTCVR:
          label = conversion != 0;
          break;
      }
      Sample s;
      s.label = label;
      s.user = b.Int(layout_.user_column, r);
      s.cat.reserve(layout_.categorical.size());
      for (const auto& c : layout_.categorical) s.cat.push_back(FeatureKey(c.slot, b.Int(c.column, r)));
      for (const auto& d : layout_.dense) {
        const float x = b.Float(d.column, r);
        s.dense.push_back(std::isfinite(x) ? std::log1p(std::max(0.0f, x)) : 0.0f);
      }
      s.seqs.resize(layout_.sequences.size());
      for (size_t q = 0; q < layout_.sequences.size(); ++q) {
        const auto& seq = layout_.sequences[q];
        const uint32_t slot = layout_.categorical[seq.target].slot;
        auto values = b.IntList(seq.column, r);
        const size_t n = std::min<size_t>(values.size(), layout_.max_seq_len);
        for (size_t k = 0; k < n; ++k) s.seqs[q].push_back(FeatureKey(slot, values[k]));
      }
      out.push_back(std::move(s));
    }
    return out;
  }

  FileSystem* fs_;
  const std::vector<std::string> files_;
  const FeatureLayout layout_;
  const BatchReaderOptions options_;
  std::mt19937_64 rng_;
  std::deque<Sample> buffer_;
  bool input_done_ = false;
  absl::Status error_;
  int64_t samples_ = 0;
  std::atomic<int64_t> filtered_{0};

  // Shared with the producer thread.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<Sample>> ready_;
  bool stop_ = false;
  bool producer_done_ = false;
  absl::Status producer_status_;
  std::thread producer_;  // last: starts after every member above is constructed
};

}  // namespace

absl::StatusOr<std::unique_ptr<BatchReader>> BatchReader::Open(FileSystem* fs,
                                                               std::vector<std::string> files,
                                                               FeatureLayout layout,
                                                               const BatchReaderOptions& options) {
  if (options.batch_size < 1 || options.shuffle_buffer < 0 || options.epochs < 1 ||
      options.prefetch_blocks < 1 || options.decode_threads < 1) {
    return absl::InvalidArgumentError(
        "batch reader: batch_size, epochs, prefetch_blocks, decode_threads must be >= 1");
  }
  if (files.empty()) return absl::InvalidArgumentError("batch reader: no input files");
  return std::unique_ptr<BatchReader>(new BatchReaderImpl(fs, std::move(files), std::move(layout), options));
}

}  // namespace choir::worker
