// Prometheus text exposition format, version 0.0.4: histograms with fixed buckets and a writer
// that groups samples into families. Pure: no I/O, no clock; the endpoint is metrics_server.h.
//
// Format rules this writer guarantees
// (https://prometheus.io/docs/instrumenting/exposition_formats/):
//   - every family's "# HELP" and "# TYPE" lines come once, before its first sample, however many
//     times samples of it are added and in whatever order;
//   - label values escape backslash, double quote and newline (\\, \", \n); HELP text escapes
//     backslash and newline;
//   - histogram buckets are cumulative, end with le="+Inf" equal to _count, and _sum and _count
//     follow them.
// Metric and label names are this program's own: an invalid one is a bug (KJ_ASSERT).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace synod::daemon {

// Counts observations into buckets with fixed upper bounds (inclusive: a value equal to a bound
// falls into that bucket), plus an implicit +Inf bucket; keeps their sum and count.
class Histogram {
 public:
  // `upperBounds` must be finite and strictly increasing.
  explicit Histogram(std::vector<double> upperBounds);

  // NaN is ignored (it would poison _sum); negative values count into the first bucket.
  void observe(double value);

  const std::vector<double>& upperBounds() const { return upperBounds_; }
  // Observations per bucket, not cumulative: one entry per upper bound, then the +Inf bucket.
  const std::vector<uint64_t>& bucketCounts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<double> upperBounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Durations in seconds from 50 µs to 10 s: a group commit on a fast SSD takes ~100 µs-1 ms, on a
// slow disk tens of ms.
std::vector<double> latencyBucketsSeconds();
// Powers of two from 1 to 4096: commands batched into one slot.
std::vector<double> slotCommandBuckets();

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class MetricsText {
 public:
  // Each adds one sample (a histogram adds its bucket, _sum and _count samples) to family
  // `name`, declaring the family with `help` on first use. Adding to a family declared with
  // another type is a bug.
  void gauge(std::string_view name, std::string_view help, const MetricLabels& labels,
             double value);
  void counter(std::string_view name, std::string_view help, const MetricLabels& labels,
               double value);
  void histogram(std::string_view name, std::string_view help, const MetricLabels& labels,
                 const Histogram& histogram);

  // The exposition: families in the order they were first used, each family's samples in the
  // order they were added.
  std::string render() const;

 private:
  enum class Type { GAUGE, COUNTER, HISTOGRAM };
  struct Family {
    std::string help;
    Type type;
    std::string samples;  // rendered sample lines
  };
  Family& family(std::string_view name, std::string_view help, Type type);

  std::vector<std::string> order_;
  std::map<std::string, Family, std::less<>> families_;
};

// "\\", "\"" and "\n" in a label value.
std::string escapeLabelValue(std::string_view value);
// "\\" and "\n" in HELP text.
std::string escapeHelp(std::string_view help);
// The shortest text that reads back as `value`, in plain decimal notation unless that would be
// very long; "+Inf", "-Inf", "NaN".
std::string formatMetricValue(double value);

}  // namespace synod::daemon
