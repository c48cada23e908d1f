// Benchmark results as JSON lines, and the comparison of two result files.
//
// One line per run and one per median, each an object:
//   {"kind": "run" | "median", "scenario": "...", "params": {...},
//    "commit": "<git sha>[-dirty]", "timestamp": "2026-12-01T23:00:00Z",
//    "figures": {"tasks_per_s": 1234.5, ...}, "run": 1}
// ("run" only on run lines.) A scenario with its params is what two files are
// compared by; scripts/bench-peers.sh writes the same format.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace taskmill::bench {

// The commit the results belong to: $TASKMILL_BENCH_COMMIT if set, else
// `git rev-parse HEAD` of the source tree this program was built from, with
// "-dirty" appended if tracked files differ from it; "unknown" if neither
// works. (The binary may be older than the tree: rebuild before measuring.)
std::string SourceCommit();

// Appends result lines to a file. An empty path writes nothing. Each line is
// written and flushed on its own, so a run that dies keeps what it measured.
class ResultLog {
 public:
  ResultLog() = default;
  ResultLog(std::string path, std::string commit);

  // One scenario with fixed params: Run() for each run (numbered from 1),
  // Median() once. Throws std::runtime_error if the file cannot be written.
  class Scenario {
   public:
    void Run(const nlohmann::json& figures);
    void Median(const nlohmann::json& figures) const;

   private:
    friend class ResultLog;
    Scenario(const ResultLog* log, std::string name, nlohmann::json params)
        : log_(log), name_(std::move(name)), params_(std::move(params)) {}
    const ResultLog* log_;
    std::string name_;
    nlohmann::json params_;
    int runs_ = 0;
  };

  Scenario Begin(std::string scenario, nlohmann::json params) const {
    return Scenario(this, std::move(scenario), std::move(params));
  }

  // Writes one line of the format above (run = 0 leaves "run" out).
  void Write(const std::string& kind, const std::string& scenario, const nlohmann::json& params,
             const nlohmann::json& figures, int run) const;

 private:
  std::string path_;
  std::string commit_;
};

// Reads two result files and prints, for every scenario and params found in
// either, each figure's old and new median and new/old. A key's median of a
// figure is the one on its last "median" line, or, if that line has none,
// the median of its "run" lines. Returns 0, or 1 (with a message on stderr) if a file cannot be
// read or has a line that is not a result object.
int Compare(const std::string& old_path, const std::string& new_path);

}  // namespace taskmill::bench
