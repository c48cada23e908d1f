#include "bench_results.h"

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

namespace taskmill::bench {
namespace {

using nlohmann::json;

#ifndef TASKMILL_SOURCE_DIR
#define TASKMILL_SOURCE_DIR "."
#endif

// Runs a shell command; its first line of output, and its exit status.
std::pair<std::string, int> Capture(const std::string& cmd) {
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return {"", -1};
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, f)) out += buf;
  int status = pclose(f);
  if (auto nl = out.find('\n'); nl != std::string::npos) out.resize(nl);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

std::string UtcNow() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double MedianOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// What one file says about one scenario with its params.
struct Entry {
  json last_median;                                 // figures of the last median line
  std::map<std::string, std::vector<double>> runs;  // figure -> values of run lines
  std::string commit;

  // The median line's figures, and the median of the runs for any figure
  // the median line leaves out.
  std::map<std::string, double> Medians() const {
    std::map<std::string, double> out;
    for (auto& [k, v] : runs) out[k] = MedianOf(v);
    if (last_median.is_object())
      for (auto& [k, v] : last_median.items())
        if (v.is_number()) out[k] = v.get<double>();
    return out;
  }
};

using Entries = std::map<std::string, Entry>;  // key: scenario + " " + params

Entries Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("cannot read {}", path));
  Entries out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("scenario") || !j["scenario"].is_string() ||
        !j.contains("figures") || !j["figures"].is_object())
      throw std::runtime_error(fmt::format("{}:{}: not a result line", path, n));
    std::string kind = j.value("kind", "run");
    if (kind != "run" && kind != "median") continue;  // e.g. bench-peers' ratio lines
    // json objects keep their keys sorted, so equal params dump equally.
    std::string key = j["scenario"].get<std::string>() + " " +
                      (j.contains("params") ? j["params"].dump() : std::string("{}"));
    Entry& e = out[key];
    if (j.contains("commit") && j["commit"].is_string()) e.commit = j["commit"];
    if (kind == "median") {
      e.last_median = j["figures"];
    } else {
      for (auto& [k, v] : j["figures"].items())
        if (v.is_number()) e.runs[k].push_back(v.get<double>());
    }
  }
  return out;
}

// Figures where less is better, by their names' convention.
bool LowerIsBetter(const std::string& name) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (ends("_per_s")) return false;
  return ends("_ms") || ends("_s") || ends("seconds") || ends("per_task");
}

// The first 12 digits of a sha, and any suffix ("-dirty").
std::string ShortCommit(const std::string& c) {
  auto dash = c.find('-');
  std::string sha = c.substr(0, dash);
  return sha.substr(0, 12) + (dash == std::string::npos ? "" : c.substr(dash));
}

std::string Num(double v) {
  if (v >= 100 || v <= -100) return fmt::format("{:.0f}", v);
  return fmt::format("{:.3g}", v);
}

}  // namespace

std::string SourceCommit() {
  if (const char* env = std::getenv("TASKMILL_BENCH_COMMIT"); env && *env) return env;
  std::string dir = TASKMILL_SOURCE_DIR;
  auto [sha, rc] = Capture(fmt::format("git -C '{}' rev-parse HEAD 2>/dev/null", dir));
  if (rc != 0 || sha.empty()) return "unknown";
  auto [_, dirty] = Capture(fmt::format("git -C '{}' diff --quiet HEAD -- 2>/dev/null", dir));
  return dirty == 0 ? sha : sha + "-dirty";
}

ResultLog::ResultLog(std::string path, std::string commit)
    : path_(std::move(path)), commit_(std::move(commit)) {}

void ResultLog::Write(const std::string& kind, const std::string& scenario, const json& params,
                      const json& figures, int run) const {
  if (path_.empty()) return;
  json j = {{"kind", kind},      {"scenario", scenario},  {"params", params},
            {"commit", commit_}, {"timestamp", UtcNow()}, {"figures", figures}};
  if (run > 0) j["run"] = run;
  std::ofstream out(path_, std::ios::app);
  out << j.dump() << "\n";
  out.flush();
  if (!out) throw std::runtime_error(fmt::format("cannot append to {}", path_));
}

void ResultLog::Scenario::Run(const json& figures) {
  log_->Write("run", name_, params_, figures, ++runs_);
}

void ResultLog::Scenario::Median(const json& figures) const {
  log_->Write("median", name_, params_, figures, 0);
}

int Compare(const std::string& old_path, const std::string& new_path) {
  Entries older, newer;
  try {
    older = Load(old_path);
    newer = Load(new_path);
  } catch (const std::exception& e) {
    std::cerr << "taskmill-bench compare: " << e.what() << "\n";
    return 1;
  }
  std::map<std::string, int> keys;
  for (auto& [k, _] : older) keys[k] |= 1;
  for (auto& [k, _] : newer) keys[k] |= 2;
  fmt::print("old: {}\nnew: {}\n", old_path, new_path);
  for (auto& [key, where] : keys) {
    fmt::print("\n{}\n", key);
    if (where != 3) {
      fmt::print("  only in {}\n", where == 1 ? "old" : "new");
      continue;
    }
    const Entry& o = older.at(key);
    const Entry& n = newer.at(key);
    if (!o.commit.empty() || !n.commit.empty())
      fmt::print("  commits: {} -> {}\n", ShortCommit(o.commit), ShortCommit(n.commit));
    auto om = o.Medians(), nm = n.Medians();
    std::map<std::string, int> figs;
    for (auto& [f, _] : om) figs[f] |= 1;
    for (auto& [f, _] : nm) figs[f] |= 2;
    for (auto& [f, w] : figs) {
      std::string oldv = w & 1 ? Num(om[f]) : "-";
      std::string newv = w & 2 ? Num(nm[f]) : "-";
      std::string ratio = (w == 3 && om[f] != 0) ? fmt::format("{:.2f}x", nm[f] / om[f]) : "";
      fmt::print("  {:<28} old {:>10}  new {:>10}  new/old {:>7}{}\n", f, oldv, newv, ratio,
                 LowerIsBetter(f) ? "  (lower is better)" : "");
    }
  }
  return 0;
}

}  // namespace taskmill::bench
