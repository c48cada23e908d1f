// Subprocess: a child process started with fork+exec, owned.
//
// The object owns the child: its destructor sends SIGKILL (if the child still
// runs) and reaps it, so no test or supervisor leaks processes. Copies are
// deleted, moves noexcept. Standard output and error go to a file (or are
// inherited) so that end-to-end tests can show what a worker logged.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "taskmill/deadline.h"

namespace taskmill {

struct SubprocessOptions {
  std::vector<std::string> argv;  // argv[0] is the program path
  // Extra environment entries "NAME=value", added to (and overriding) ours.
  std::vector<std::string> env;
  // If set, stdout and stderr are appended to this file; else inherited.
  std::optional<std::filesystem::path> output_file;
  // If true, the child gets SIGKILL when this process dies (prctl
  // PR_SET_PDEATHSIG), so it never outlives its owner. Linux ties this to the
  // *thread* that called Start(): start long-lived children from a thread
  // that lives as long as they should.
  bool die_with_parent = true;
  // Put the child in its own process group (so a terminal's Ctrl-C reaches
  // only the owner, which then stops the children in order).
  bool new_process_group = false;
  // If set, the child changes to this directory before exec.
  std::optional<std::filesystem::path> working_dir;
};

class Subprocess {
 public:
  // Starts the program. Throws std::system_error if fork or exec fails
  // (exec failure is reported through a close-on-exec pipe, not as a child
  // that exits 127).
  static Subprocess Start(const SubprocessOptions& options);

  Subprocess() = default;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  Subprocess(Subprocess&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), status_(other.status_) {}
  Subprocess& operator=(Subprocess&& other) noexcept;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();  // reaps without blocking if it exited
  // Sends a signal; false if the process is already gone.
  bool Signal(int signo);
  // Waits for exit until the deadline. Returns the wait status (as from
  // waitpid) or nullopt if still running at the deadline.
  std::optional<int> Wait(Deadline deadline);
  // SIGTERM, wait until the deadline, then SIGKILL and reap. Returns the
  // wait status.
  int Stop(Deadline deadline, int first_signal = 15);
  // Gives the child up: this object forgets it, so its destructor neither
  // kills nor reaps it (a process meant to outlive this one, which its new
  // parent, init, reaps).
  void Release() { pid_ = -1; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Exit code of a wait status, or 128+signal if killed by a signal.
int ExitCodeOf(int wait_status);

}  // namespace taskmill
