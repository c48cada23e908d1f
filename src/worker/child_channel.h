// The messages a task's child process sends its worker, one JSON document
// per line on a pipe:
//
//   {"progress": {"code": ..., "message": ..., ...}}   any number, Pulp's shape
//   {"outcome": {"state": "completed" | "failed" | "canceled",
//                "result": ..., "error": ...}}          once, last
//
// Only taskmill's own code in the child writes to the pipe (a task function
// gets a TaskContext, not the descriptor), so a line that does not parse is
// a bug of ours, not the task's: it is dropped and counted.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "worker/executor.h"

namespace taskmill::worker {

// One line, with its newline.
std::string EncodeProgress(const nlohmann::json& report);
std::string EncodeOutcome(const Outcome& outcome);

struct ChildMessage {
  enum class Kind { kProgress, kOutcome };
  Kind kind = Kind::kProgress;
  nlohmann::json progress;  // kProgress: the report
  Outcome outcome;          // kOutcome
};

// The worker's end: bytes in as they are read, messages out once whole.
class ChildChannelReader {
 public:
  void Append(std::string_view bytes);
  // The next complete message, or nullopt until more bytes arrive.
  std::optional<ChildMessage> Next();
  // Lines that were not a message (see above).
  int malformed() const { return malformed_; }

 private:
  std::string buffer_;
  size_t scanned_ = 0;
  int malformed_ = 0;
};

}  // namespace taskmill::worker
