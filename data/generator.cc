#include "data/generator.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/config.h"
#include "core/progress.h"
#include "core/status.h"
#include "data/dataset.h"
#include "data/internal/rng.h"
#include "glog/logging.h"

namespace choir::data {
namespace {

using internal::Cumulative;
using internal::Rng;

constexpr int64_t kDay = 86400;
constexpr double kYear = 365.0 * kDay;

// The knobs of the generative story (docs/synthetic-data.md). Fixed here rather than in the
// options: they define what "the default synthetic data" is.
struct Story {
  // Purchases per year: persona.activity * LogNormal(mu, sigma); heavy-tailed.
  double activity_mu = -0.45;
  double activity_sigma = 1.65;
  // Clicks per year: click_base + click_per_purchase * rate^0.9. A share of clicks is noise
  // (drawn by global popularity): noise_floor + noise_sparse * exp(-rate / 2), so sparse users'
  // few clicks say little about them.
  double click_base = 3.0;
  double click_per_purchase = 10.0;
  double noise_floor = 0.25;
  double noise_sparse = 0.5;
  // A user's interests: the persona's, times LogNormal(0, interest_noise) per leaf, plus a
  // background; with mix_prob a second persona contributes mix_share.
  double interest_noise = 0.6;
  double interest_background = 0.02;
  double mix_prob = 0.3;
  double mix_share = 0.25;
  // Impressions in the train and test periods: base + per_rate * rate^0.75.
  double train_impressions_base = 8.0, train_impressions_per_rate = 2.5;
  double test_impressions_base = 5.0, test_impressions_per_rate = 1.2;
  // Share of impressions targeted by the user's interests (the rest by global popularity).
  double targeted_share = 0.55;
  // Labels: logistic models (a = log affinity ratio, q = item quality, pos = rank position).
  double click_bias = -3.0, click_affinity = 0.6, click_quality = 0.3, click_position = -0.08;
  double conv_bias = -4.0, conv_affinity = 0.9, conv_quality = 0.4, conv_price = 3.0,
         conv_user_sd = 0.4, conv_activity = 0.15;
  // A user's price tier: the persona's plus Normal(0, price_tier_sd), clipped to [0, 1].
  double price_tier_sd = 0.12;
  // Probability that each attribute is missing, by purchase rate (< 1, < 5, else).
  double missing_sparse = 0.35, missing_mid = 0.2, missing_active = 0.05;
  // New users first appear within this share of the test period.
  double new_user_window = 0.5;
  // Purchases choose the best price fit among this many popular items of the leaf.
  int purchase_candidates = 4;
  // Rank positions of impressions: 1..positions.
  int positions = 10;
  // Item popularity: exp(popularity_quality * quality); shops: items / items_per_shop.
  double popularity_quality = 0.8;
  int items_per_shop = 20;
  int min_items_per_leaf = 5;
};

constexpr Story kStory;

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double NormalCdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

struct Item {
  int32_t leaf;
  int32_t brand;
  int32_t shop;
  float price;
  float price_pos;  // percentile of the price inside its leaf, 0..1
  float quality;
};

struct Catalogue {
  std::vector<Item> items;                       // item id = index + 1
  std::vector<std::vector<int32_t>> leaf_items;  // item indices per leaf
  std::vector<std::vector<double>> leaf_cum;     // cumulative popularity per leaf
  std::vector<double> leaf_cum_global;           // cumulative leaf weights
};

Catalogue BuildCatalogue(const CompiledTaxonomy& tax, int64_t num_items, uint64_t seed) {
  Catalogue cat;
  Rng rng(seed, /*stream=*/0xCA7A10);
  const size_t num_leaves = tax.leaves.size();
  std::vector<double> leaf_w(num_leaves);
  for (size_t l = 0; l < num_leaves; ++l) leaf_w[l] = tax.leaves[l].weight;
  cat.leaf_cum_global = Cumulative(leaf_w);
  const double total_w = cat.leaf_cum_global.back();
  cat.leaf_items.resize(num_leaves);
  cat.leaf_cum.resize(num_leaves);
  const int32_t num_shops = std::max<int64_t>(50, num_items / kStory.items_per_shop);
  int32_t brand_base = 0;
  for (size_t l = 0; l < num_leaves; ++l) {
    const auto& leaf = tax.leaves[l];
    const int64_t n = std::max<int64_t>(kStory.min_items_per_leaf, std::llround(num_items * leaf.weight / total_w));
    std::vector<double> popularity;
    for (int64_t i = 0; i < n; ++i) {
      Item it;
      it.leaf = l;
      // Brand popularity is Zipf-like: brand b with probability ~ 1/(b+1).
      double u = rng.Uniform();
      it.brand = brand_base + 1 +
                 std::min<int32_t>(leaf.brands - 1, static_cast<int32_t>(std::exp(u * std::log(leaf.brands + 1.0))) - 1);
      it.shop = 1 + rng.Below(num_shops);
      const double z = rng.Normal();
      it.price = static_cast<float>(std::round(leaf.median_price * std::exp(leaf.price_sigma * z) * 100) / 100);
      it.price_pos = static_cast<float>(NormalCdf(z));
      it.quality = static_cast<float>(rng.Normal());
      cat.leaf_items[l].push_back(cat.items.size());
      popularity.push_back(std::exp(kStory.popularity_quality * it.quality));
      cat.items.push_back(it);
    }
    cat.leaf_cum[l] = Cumulative(popularity);
    brand_base += leaf.brands;
  }
  return cat;
}

// Schemas of the splits.
Schema UsersSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", INT64, USER_ID);
  *s.add_fields() = MakeField("gender", INT64, FEATURE, "0 unknown, 1 male, 2 female");
  *s.add_fields() = MakeField("age_bucket", INT64, FEATURE, "0 unknown, 1: 18-24, 2: 25-29, 3: 30-34, 4: 35-39, 5: 40-49, 6: 50+");
  *s.add_fields() = MakeField("city_tier", INT64, FEATURE, "0 unknown, 1 (largest) .. 5");
  *s.add_fields() = MakeField("first_seen", INT64, TIMESTAMP, "first activity, seconds since the epoch");
  return s;
}

Schema ItemsSchema() {
  Schema s;
  *s.add_fields() = MakeField("item_id", INT64, ITEM_ID);
  *s.add_fields() = MakeField("item_category", INT64, FEATURE, "leaf category id (taxonomy.pbtxt order + 1)");
  *s.add_fields() = MakeField("item_l1", INT64, FEATURE, "L1 category id");
  *s.add_fields() = MakeField("item_brand", INT64, FEATURE);
  *s.add_fields() = MakeField("item_shop", INT64, FEATURE);
  *s.add_fields() = MakeField("item_price", FLOAT, FEATURE, "CNY");
  return s;
}

Schema BehaviorsSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", INT64, USER_ID);
  *s.add_fields() = MakeField("item_id", INT64, ITEM_ID);
  *s.add_fields() = MakeField("item_category", INT64, FEATURE, "leaf category id");
  *s.add_fields() = MakeField("item_price", FLOAT, FEATURE, "CNY");
  *s.add_fields() = MakeField("timestamp", INT64, TIMESTAMP);
  *s.add_fields() = MakeField("type", INT64, FEATURE, "1 click, 2 purchase");
  return s;
}

Schema ImpressionsSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", INT64, USER_ID);
  *s.add_fields() = MakeField("item_id", INT64, ITEM_ID);
  *s.add_fields() = MakeField("timestamp", INT64, TIMESTAMP);
  *s.add_fields() = MakeField("click", INT64, LABEL_CLICK);
  *s.add_fields() = MakeField("conversion", INT64, LABEL_CONVERSION);
  *s.add_fields() = MakeField("user_gender", INT64, FEATURE, "0 unknown, 1 male, 2 female");
  *s.add_fields() = MakeField("user_age", INT64, FEATURE, "age bucket, 0 unknown");
  *s.add_fields() = MakeField("user_city", INT64, FEATURE, "city tier, 0 unknown");
  *s.add_fields() = MakeField("item_category", INT64, FEATURE, "leaf category id");
  *s.add_fields() = MakeField("item_l1", INT64, FEATURE, "L1 category id");
  *s.add_fields() = MakeField("item_brand", INT64, FEATURE);
  *s.add_fields() = MakeField("item_shop", INT64, FEATURE);
  *s.add_fields() = MakeField("item_price", FLOAT, FEATURE, "CNY");
  *s.add_fields() = MakeField("ctx_position", INT64, FEATURE, "rank position 1..10");
  *s.add_fields() = MakeField("ctx_hour", INT64, FEATURE, "hour of day 0..23 (UTC)");
  *s.add_fields() = MakeField("hist_item", INT64_LIST, SEQUENCE, "recent behaviours' items, most recent first");
  *s.add_fields() = MakeField("hist_cate", INT64_LIST, SEQUENCE, "their leaf categories");
  *s.add_fields() = MakeField("hist_type", INT64_LIST, SEQUENCE, "their types: 1 click, 2 purchase");
  return s;
}

// One chunk of users' output.
struct ChunkOut {
  RowBlock users{UsersSchema()};
  RowBlock behaviors{BehaviorsSchema()};
  RowBlock train{ImpressionsSchema()};
  RowBlock test{ImpressionsSchema()};
  std::string truth;  // truth/users.tsv lines
  GeneratorReport counts;

  // Empties the chunk but keeps its buffers, so rounds reuse memory instead of churning the
  // allocator (fresh buffers per round let glibc's per-thread arenas grow the peak).
  void Clear() {
    users.Clear();
    behaviors.Clear();
    train.Clear();
    test.Clear();
    truth.clear();
    counts = GeneratorReport();
  }
};

// What the labels of a user's impressions depend on.
struct UserState {
  int64_t user_id;
  std::vector<double> w, w_cum;  // interest per leaf and its cumulative table
  double price_tier, price_sensitivity, conv_user, rate;
  int64_t gender, age, city;
};

struct Event {
  int64_t ts;
  int32_t item;  // index
  int32_t type;  // 1 click, 2 purchase
};

class UserGenerator {
 public:
  UserGenerator(const CompiledTaxonomy& tax, const Catalogue& cat, const GeneratorOptions& opt)
      : tax_(tax), cat_(cat), opt_(opt) {
    std::vector<double> pw;
    for (const auto& p : tax.personas) pw.push_back(p.weight);
    persona_cum_ = Cumulative(pw);
    for (const auto& p : tax.personas) {
      age_cum_.push_back(Cumulative(p.age_weights));
      city_cum_.push_back(Cumulative(p.city_tier_weights));
    }
  }

  void Generate(int64_t user_id, ChunkOut* out) const {
    Rng rng(opt_.seed, static_cast<uint64_t>(user_id));
    const size_t num_leaves = tax_.leaves.size();
    const int persona = rng.FromCumulative(persona_cum_);
    const auto& P = tax_.personas[persona];

    // Activity: heavy-tailed purchase rate per year.
    const double rate = P.activity * std::exp(kStory.activity_mu + kStory.activity_sigma * rng.Normal());
    const double click_rate = kStory.click_base + kStory.click_per_purchase * std::pow(rate, 0.9);
    const double click_noise = kStory.noise_floor + kStory.noise_sparse * std::exp(-rate / 2);

    // Interests: persona, per-user noise, sometimes a second persona, and a background.
    UserState st;
    st.user_id = user_id;
    std::vector<double>& w = st.w;
    w.resize(num_leaves);
    const bool mixed = rng.Bernoulli(kStory.mix_prob);
    const int other = mixed ? rng.FromCumulative(persona_cum_) : persona;
    for (size_t l = 0; l < num_leaves; ++l) {
      double base = P.interest[l];
      if (mixed) base = (1 - kStory.mix_share) * base + kStory.mix_share * tax_.personas[other].interest[l];
      w[l] = base * std::exp(kStory.interest_noise * rng.Normal()) + kStory.interest_background / num_leaves;
    }
    double wsum = 0;
    for (double x : w) wsum += x;
    for (double& x : w) x /= wsum;
    st.w_cum = Cumulative(w);
    const std::vector<double>& w_cum = st.w_cum;
    const double price_tier = std::clamp(P.price_tier + kStory.price_tier_sd * rng.Normal(), 0.0, 1.0);
    st.price_tier = price_tier;
    st.price_sensitivity = P.price_sensitivity;
    st.conv_user = kStory.conv_user_sd * rng.Normal();
    st.rate = rate;

    // Attributes; sparse users leave more of them empty.
    const double missing = rate < 1 ? kStory.missing_sparse : (rate < 5 ? kStory.missing_mid : kStory.missing_active);
    const int64_t gender = rng.Bernoulli(missing) ? 0 : (rng.Bernoulli(P.female_prob) ? 2 : 1);
    const int64_t age = rng.Bernoulli(missing) ? 0 : 1 + rng.FromCumulative(age_cum_[persona]);
    const int64_t city = rng.Bernoulli(missing) ? 0 : 1 + rng.FromCumulative(city_cum_[persona]);
    st.gender = gender;
    st.age = age;
    st.city = city;

    // Timeline.
    const int64_t split = opt_.split_time;
    const int64_t log_start = split - opt_.history_days * kDay;
    const int64_t end = split + opt_.test_days * kDay;
    const bool is_new = rng.Bernoulli(opt_.new_user_fraction);
    const int64_t first_seen =
        is_new ? split + static_cast<int64_t>(rng.Uniform() * opt_.test_days * kDay * kStory.new_user_window) : log_start;
    const double years = (end - first_seen) / kYear;

    // The behaviour log: purchases (price-aware choice in an interesting leaf) and clicks
    // (some of them noise, drawn by global popularity).
    std::vector<Event> events;
    const int64_t purchases = rng.Poisson(rate * years);
    const int64_t clicks = rng.Poisson(click_rate * years);
    events.reserve(purchases + clicks);
    for (int64_t i = 0; i < purchases; ++i) {
      const size_t leaf = rng.FromCumulative(w_cum);
      int32_t best = PickItem(leaf, &rng);
      for (int k = 0; k + 1 < kStory.purchase_candidates; ++k) {
        const int32_t c = PickItem(leaf, &rng);
        if (std::abs(cat_.items[c].price_pos - price_tier) < std::abs(cat_.items[best].price_pos - price_tier)) best = c;
      }
      events.push_back({first_seen + static_cast<int64_t>(rng.Uniform() * (end - first_seen)), best, 2});
    }
    for (int64_t i = 0; i < clicks; ++i) {
      const size_t leaf = rng.Bernoulli(click_noise) ? rng.FromCumulative(cat_.leaf_cum_global)
                                                                 : rng.FromCumulative(w_cum);
      events.push_back({first_seen + static_cast<int64_t>(rng.Uniform() * (end - first_seen)), PickItem(leaf, &rng), 1});
    }
    std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
      return a.ts != b.ts ? a.ts < b.ts : (a.type != b.type ? a.type < b.type : a.item < b.item);
    });

    // Users table, truth and the log.
    RowBlock& u = out->users;
    u.AppendInt(0, user_id);
    u.AppendInt(1, gender);
    u.AppendInt(2, age);
    u.AppendInt(3, city);
    u.AppendInt(4, first_seen);
    u.FinishRow();
    absl::StrAppendFormat(&out->truth, "%d\t%d\t%s\t%s\t%.4f\t%.3f\t%d\n", user_id, persona, P.name,
                          mixed ? tax_.personas[other].name : "-", rate, price_tier, is_new ? 1 : 0);
    for (const Event& e : events) {
      const Item& it = cat_.items[e.item];
      RowBlock& b = out->behaviors;
      b.AppendInt(0, user_id);
      b.AppendInt(1, e.item + 1);
      b.AppendInt(2, it.leaf + 1);
      b.AppendFloat(3, it.price);
      b.AppendInt(4, e.ts);
      b.AppendInt(5, e.type);
      b.FinishRow();
    }
    out->counts.users++;
    out->counts.new_users += is_new;
    out->counts.behavior_rows += events.size();

    // Impressions in the train period (existing users) and the test period (everyone).
    const double imp_scale = std::pow(rate, 0.75);
    if (!is_new) {
      const int64_t n = rng.Poisson(kStory.train_impressions_base + kStory.train_impressions_per_rate * imp_scale);
      EmitImpressions(st, n, split - opt_.train_days * kDay, split, events, &rng, &out->train, &out->counts, true);
    }
    const int64_t n_test =
        std::max<int64_t>(is_new ? 1 : 0, rng.Poisson(kStory.test_impressions_base + kStory.test_impressions_per_rate * imp_scale));
    EmitImpressions(st, n_test, std::max(split, first_seen), end, events, &rng, &out->test, &out->counts, false);
  }

 private:
  int32_t PickItem(size_t leaf, Rng* rng) const {
    return cat_.leaf_items[leaf][rng->FromCumulative(cat_.leaf_cum[leaf])];
  }

  void EmitImpressions(const UserState& st, int64_t n, int64_t from, int64_t to, const std::vector<Event>& events,
                       Rng* rng, RowBlock* out, GeneratorReport* counts, bool train) const {
    std::vector<int64_t> times(n);
    for (auto& t : times) t = from + static_cast<int64_t>(rng->Uniform() * (to - from));
    std::sort(times.begin(), times.end());
    const double num_leaves = tax_.leaves.size();
    for (int64_t ts : times) {
      const size_t leaf = rng->Bernoulli(kStory.targeted_share) ? rng->FromCumulative(st.w_cum)
                                                               : rng->FromCumulative(cat_.leaf_cum_global);
      const int32_t item = PickItem(leaf, rng);
      const Item& it = cat_.items[item];
      const int64_t position = 1 + rng->Below(kStory.positions);
      const double affinity = std::clamp(std::log(st.w[leaf] * num_leaves), -3.0, 3.0);
      const double p_click = Sigmoid(kStory.click_bias + kStory.click_affinity * affinity +
                                     kStory.click_quality * it.quality + kStory.click_position * position);
      const bool click = rng->Bernoulli(p_click);
      const double price_miss = std::abs(it.price_pos - st.price_tier);
      const double p_conv =
          Sigmoid(kStory.conv_bias + kStory.conv_affinity * affinity + kStory.conv_quality * it.quality -
                  kStory.conv_price * st.price_sensitivity * price_miss + st.conv_user +
                  kStory.conv_activity * std::log1p(st.rate));
      const bool conversion = click && rng->Bernoulli(p_conv);
      out->AppendInt(0, st.user_id);
      out->AppendInt(1, item + 1);
      out->AppendInt(2, ts);
      out->AppendInt(3, click);
      out->AppendInt(4, conversion);
      out->AppendInt(5, st.gender);
      out->AppendInt(6, st.age);
      out->AppendInt(7, st.city);
      out->AppendInt(8, it.leaf + 1);
      out->AppendInt(9, tax_.leaves[it.leaf].l1 + 1);
      out->AppendInt(10, it.brand);
      out->AppendInt(11, it.shop);
      out->AppendFloat(12, it.price);
      out->AppendInt(13, position);
      out->AppendInt(14, (ts % kDay) / 3600);
      // The behaviour sequence: events strictly before the impression, most recent first.
      auto stop = std::lower_bound(events.begin(), events.end(), ts,
                                   [](const Event& e, int64_t t) { return e.ts < t; });
      const int64_t len = std::min<int64_t>(opt_.max_seq_len, stop - events.begin());
      for (int64_t k = 1; k <= len; ++k) {
        const Event& e = *(stop - k);
        out->AppendListInt(15, e.item + 1);
        out->AppendListInt(16, cat_.items[e.item].leaf + 1);
        out->AppendListInt(17, e.type);
      }
      out->FinishRow();
      if (train) {
        counts->train_rows++;
        counts->train_clicks += click;
        counts->train_conversions += conversion;
      } else {
        counts->test_rows++;
      }
    }
  }

  const CompiledTaxonomy& tax_;
  const Catalogue& cat_;
  const GeneratorOptions& opt_;
  std::vector<double> persona_cum_;
  std::vector<std::vector<double>> age_cum_, city_cum_;
};

absl::Status WriteItems(FileSystem* fs, const Catalogue& cat, const CompiledTaxonomy& tax,
                        const GeneratorOptions& opt, const std::string& dir, DatasetManifest* manifest) {
  SplitWriter writer(fs, dir, "items", ItemsSchema(), opt.shard, opt.rows_per_file);
  RowBlock block(ItemsSchema());
  for (size_t i = 0; i < cat.items.size(); ++i) {
    const Item& it = cat.items[i];
    block.AppendInt(0, i + 1);
    block.AppendInt(1, it.leaf + 1);
    block.AppendInt(2, tax.leaves[it.leaf].l1 + 1);
    block.AppendInt(3, it.brand);
    block.AppendInt(4, it.shop);
    block.AppendFloat(5, it.price);
    block.FinishRow();
    if (block.num_rows() == 65536 || i + 1 == cat.items.size()) {
      RETURN_IF_ERROR(writer.Write(block));
      block.Clear();
    }
  }
  ASSIGN_OR_RETURN(*manifest->add_splits(), writer.Finish());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GeneratorReport> GenerateDataset(FileSystem* fs, const CompiledTaxonomy& taxonomy,
                                                const GeneratorOptions& opt, const std::string& out_dir) {
  if (opt.users < 1) return absl::InvalidArgumentError("data gen: --users must be at least 1");
  if (opt.items < 0 || opt.items > kMaxItems) {
    return absl::InvalidArgumentError(absl::StrCat("data gen: --items must be in [0, ", kMaxItems, "]"));
  }
  if (opt.threads < 1 || opt.users_per_chunk < 1 || opt.max_seq_len < 0 || opt.train_days < 1 ||
      opt.test_days < 1 || opt.history_days < opt.train_days || opt.new_user_fraction < 0 ||
      opt.new_user_fraction > 1) {
    return absl::InvalidArgumentError("data gen: invalid generator options");
  }
  RETURN_IF_ERROR(PrepareDatasetDir(fs, out_dir, {"users", "items", "behaviors", "train", "test"}));
  RETURN_IF_ERROR(fs->CreateDirs(JoinPath(out_dir, kTruthDir)));

  const int64_t num_items =
      opt.items > 0 ? opt.items : std::clamp<int64_t>(opt.users / 4, 2000, 2000000);
  const Catalogue cat = BuildCatalogue(taxonomy, num_items, opt.seed);
  DatasetManifest manifest;
  manifest.set_source("synthetic");
  manifest.set_split_time(opt.split_time);
  manifest.set_provenance(absl::StrFormat(
      "choir data gen --users %d --seed %d --items %d (max_seq_len %d, new_user_fraction %g, "
      "history/train/test days %d/%d/%d)",
      opt.users, opt.seed, static_cast<int64_t>(cat.items.size()), opt.max_seq_len, opt.new_user_fraction,
      opt.history_days, opt.train_days, opt.test_days));
  RETURN_IF_ERROR(WriteItems(fs, cat, taxonomy, opt, out_dir, &manifest));

  // Category names for later steps (profiles); personas stay in truth/.
  Taxonomy categories_only;
  *categories_only.mutable_categories() = taxonomy.proto.categories();
  RETURN_IF_ERROR(fs->WriteStringToFileAtomic(
      JoinPath(out_dir, kTaxonomyName),
      "# Category names of this dataset; leaf ids are file order + 1 (L1 ids likewise).\n" +
          ToTextProto(categories_only)));
  Taxonomy personas_only;
  *personas_only.mutable_personas() = taxonomy.proto.personas();
  RETURN_IF_ERROR(fs->WriteStringToFileAtomic(JoinPath(out_dir, "truth/personas.pbtxt"), ToTextProto(personas_only)));

  SplitWriter users(fs, out_dir, "users", UsersSchema(), opt.shard, opt.rows_per_file);
  SplitWriter behaviors(fs, out_dir, "behaviors", BehaviorsSchema(), opt.shard, opt.rows_per_file);
  SplitWriter train(fs, out_dir, "train", ImpressionsSchema(), opt.shard, opt.rows_per_file);
  SplitWriter test(fs, out_dir, "test", ImpressionsSchema(), opt.shard, opt.rows_per_file);
  const std::string truth_path = JoinPath(out_dir, "truth/users.tsv");
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> truth, fs->NewWritableFile(truth_path + ".tmp"));
  RETURN_IF_ERROR(truth->Append("user_id\tpersona_id\tpersona\tmixed_with\tpurchase_rate\tprice_tier\tis_new\n"));

  const UserGenerator gen(taxonomy, cat, opt);
  GeneratorReport report;
  report.items = cat.items.size();
  Progress progress("users generated", opt.users);
  // Writes one round of chunks in user order (compression happens here).
  auto write_round = [&](std::vector<ChunkOut>& round) -> absl::Status {
    for (ChunkOut& c : round) {
      if (c.users.num_rows() == 0) continue;
      RETURN_IF_ERROR(users.Write(c.users));
      RETURN_IF_ERROR(behaviors.Write(c.behaviors));
      RETURN_IF_ERROR(train.Write(c.train));
      RETURN_IF_ERROR(test.Write(c.test));
      RETURN_IF_ERROR(truth->Append(c.truth));
      report.users += c.counts.users;
      report.new_users += c.counts.new_users;
      report.behavior_rows += c.counts.behavior_rows;
      report.train_rows += c.counts.train_rows;
      report.test_rows += c.counts.test_rows;
      report.train_clicks += c.counts.train_clicks;
      report.train_conversions += c.counts.train_conversions;
      progress.Add(c.counts.users);
    }
    return absl::OkStatus();
  };
  // Two rounds in flight: `threads` generators fill `generating` while one writer thread
  // compresses and writes `writing`, the round before.
  std::vector<ChunkOut> generating(opt.threads), writing(opt.threads);
  std::future<absl::Status> pending;
  const int64_t step = static_cast<int64_t>(opt.threads) * opt.users_per_chunk;
  for (int64_t first = 1; first <= opt.users; first += step) {
    std::vector<std::thread> threads;
    for (int t = 0; t < opt.threads; ++t) {
      const int64_t lo = first + static_cast<int64_t>(t) * opt.users_per_chunk;
      const int64_t hi = std::min(opt.users + 1, lo + opt.users_per_chunk);
      generating[t].Clear();
      if (lo >= hi) continue;
      threads.emplace_back([&gen, &generating, t, lo, hi] {
        for (int64_t u = lo; u < hi; ++u) gen.Generate(u, &generating[t]);
      });
    }
    for (auto& th : threads) th.join();
    if (pending.valid()) RETURN_IF_ERROR(pending.get());
    std::swap(generating, writing);
    pending = std::async(std::launch::async, [&write_round, &writing] { return write_round(writing); });
  }
  if (pending.valid()) RETURN_IF_ERROR(pending.get());
  RETURN_IF_ERROR(truth->Sync());
  RETURN_IF_ERROR(truth->Close());
  RETURN_IF_ERROR(fs->Rename(truth_path + ".tmp", truth_path));
  for (SplitWriter* w : {&users, &behaviors, &train, &test}) {
    ASSIGN_OR_RETURN(*manifest.add_splits(), w->Finish());
  }
  auto& counters = *manifest.mutable_counters();
  counters["users"] = report.users;
  counters["new_users"] = report.new_users;
  counters["items"] = report.items;
  counters["behavior_rows"] = report.behavior_rows;
  counters["train_rows"] = report.train_rows;
  counters["test_rows"] = report.test_rows;
  counters["train_clicks"] = report.train_clicks;
  counters["train_conversions"] = report.train_conversions;
  RETURN_IF_ERROR(WriteManifest(fs, out_dir, manifest));
  return report;
}

}  // namespace choir::data
