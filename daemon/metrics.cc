#include "daemon/metrics.h"

#include <kj/debug.h>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace synod::daemon {

namespace {

bool validName(std::string_view name, bool allowColon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allowColon && c == ':');
    bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

void appendSample(std::string& out, std::string_view name, std::string_view suffix,
                  const MetricLabels& labels, const std::pair<std::string, std::string>* extra,
                  std::string_view value) {
  out.append(name).append(suffix);
  if (!labels.empty() || extra != nullptr) {
    out.push_back('{');
    bool first = true;
    auto add = [&](const std::pair<std::string, std::string>& label) {
      KJ_ASSERT(validName(label.first, false) && label.first.rfind("__", 0) != 0,
                "invalid label name", label.first.c_str());
      if (!first) out.push_back(',');
      first = false;
      out.append(label.first).append("=\"").append(escapeLabelValue(label.second)).push_back('"');
    };
    for (const auto& label : labels)
      add(label);
    if (extra != nullptr) add(*extra);
    out.push_back('}');
  }
  out.push_back(' ');
  out.append(value).push_back('\n');
}

}  // namespace

Histogram::Histogram(std::vector<double> upperBounds)
    : upperBounds_(std::move(upperBounds)), counts_(upperBounds_.size() + 1, 0) {
  for (size_t i = 0; i < upperBounds_.size(); ++i) {
    KJ_ASSERT(std::isfinite(upperBounds_[i]), "histogram bounds must be finite");
    KJ_ASSERT(i == 0 || upperBounds_[i - 1] < upperBounds_[i],
              "histogram bounds must increase strictly");
  }
}

void Histogram::observe(double value) {
  if (std::isnan(value)) return;
  auto bucket = std::lower_bound(upperBounds_.begin(), upperBounds_.end(), value);
  ++counts_[static_cast<size_t>(bucket - upperBounds_.begin())];
  sum_ += value;
  ++count_;
}

std::vector<double> latencyBucketsSeconds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
}

std::vector<double> slotCommandBuckets() {
  std::vector<double> bounds;
  for (double b = 1; b <= 4096; b *= 2)
    bounds.push_back(b);
  return bounds;
}

std::string escapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string escapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string formatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[128];
  // Plain decimals where they stay short ("0.0005", not "5e-04"): bucket bounds read as people
  // write them, and le="..." labels stay the same text across versions of this code.
  double magnitude = std::fabs(value);
  bool plain = value == 0 || (magnitude >= 1e-9 && magnitude < 1e21);
  auto result =
      plain ? std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::fixed)
            : std::to_chars(buffer, buffer + sizeof(buffer), value);
  KJ_ASSERT(result.ec == std::errc());
  return std::string(buffer, result.ptr);
}

MetricsText::Family& MetricsText::family(std::string_view name, std::string_view help, Type type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    KJ_ASSERT(validName(name, true), "invalid metric name", std::string(name).c_str());
    order_.emplace_back(name);
    it = families_.emplace(std::string(name), Family{std::string(help), type, {}}).first;
  }
  KJ_ASSERT(it->second.type == type, "metric family used with two types", it->first.c_str());
  return it->second;
}

void MetricsText::gauge(std::string_view name, std::string_view help, const MetricLabels& labels,
                        double value) {
  appendSample(family(name, help, Type::GAUGE).samples, name, "", labels, nullptr,
               formatMetricValue(value));
}

void MetricsText::counter(std::string_view name, std::string_view help, const MetricLabels& labels,
                          double value) {
  appendSample(family(name, help, Type::COUNTER).samples, name, "", labels, nullptr,
               formatMetricValue(value));
}

void MetricsText::histogram(std::string_view name, std::string_view help,
                            const MetricLabels& labels, const Histogram& histogram) {
  std::string& out = family(name, help, Type::HISTOGRAM).samples;
  const auto& bounds = histogram.upperBounds();
  const auto& counts = histogram.bucketCounts();
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    std::pair<std::string, std::string> le{
        "le", i < bounds.size() ? formatMetricValue(bounds[i]) : std::string("+Inf")};
    appendSample(out, name, "_bucket", labels, &le, std::to_string(cumulative));
  }
  appendSample(out, name, "_sum", labels, nullptr, formatMetricValue(histogram.sum()));
  appendSample(out, name, "_count", labels, nullptr, std::to_string(histogram.count()));
}

std::string MetricsText::render() const {
  std::string out;
  for (const auto& name : order_) {
    const Family& f = families_.find(name)->second;
    const char* type = f.type == Type::GAUGE     ? "gauge"
                       : f.type == Type::COUNTER ? "counter"
                                                 : "histogram";
    out.append("# HELP ").append(name).append(" ").append(escapeHelp(f.help)).push_back('\n');
    out.append("# TYPE ").append(name).append(" ").append(type).push_back('\n');
    out.append(f.samples);
  }
  return out;
}

}  // namespace synod::daemon
