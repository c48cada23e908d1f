#include "worker/child_run.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

namespace taskmill::worker {

namespace {

// Set by SIGUSR1 in a task's child process (only there: the worker never
// installs this handler for itself).
std::atomic<bool> child_canceled{false};
void OnChildCancel(int) { child_canceled.store(true); }

void WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    off += static_cast<size_t>(n);
  }
}

// The child: never returns. It must not touch the worker's database
// connections (their sockets are shared), so it leaves with _exit, which
// runs no destructor that could send anything on them.
[[noreturn]] void RunChild(const TaskRegistry& registry, const Task& task, int out, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(70);
  std::signal(SIGINT, SIG_IGN);  // the worker decides what a Ctrl-C means
  std::signal(SIGTERM, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGUSR1, OnChildCancel);
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // Nothing may propagate out of here: it would unwind into the worker's
  // loop, in a copy of the worker.
  try {
    ProgressSink progress = [out](const nlohmann::json& report) {
      WriteAll(out, EncodeProgress(report));
    };
    Outcome o = RunFunction(registry, task, child_canceled, progress);
    WriteAll(out, EncodeOutcome(o));
  } catch (...) {
    _exit(71);
  }
  _exit(0);
}

}  // namespace

std::string SignalDescription(int signo) {
  const char* abbrev = sigabbrev_np(signo);
  return abbrev != nullptr ? fmt::format("signal {} (SIG{})", signo, abbrev)
                           : fmt::format("signal {}", signo);
}

ChildRun::ChildRun(const TaskRegistry& registry, const Task& task) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    throw std::system_error(err, std::generic_category(), "fork");
  }
  if (pid == 0) {
    close(fds[0]);
    RunChild(registry, task, fds[1], parent);
  }
  close(fds[1]);
  pid_ = pid;
  pipe_fd_ = fds[0];
  fcntl(pipe_fd_, F_SETFL, fcntl(pipe_fd_, F_GETFL) | O_NONBLOCK);
#ifdef SYS_pidfd_open
  long pfd = syscall(SYS_pidfd_open, pid, 0);
  if (pfd >= 0) {
    pid_fd_ = static_cast<int>(pfd);
    fcntl(pid_fd_, F_SETFD, FD_CLOEXEC);
  }
#endif
}

ChildRun::~ChildRun() {
  if (!done_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    int st;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (pipe_fd_ >= 0) close(pipe_fd_);
  if (pid_fd_ >= 0) close(pid_fd_);
}

void ChildRun::ReadPipe() {
  if (pipe_fd_ < 0) return;
  char chunk[65536];
  for (;;) {
    ssize_t got = read(pipe_fd_, chunk, sizeof(chunk));
    if (got > 0) {
      reader_.Append(std::string_view(chunk, static_cast<size_t>(got)));
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    if (got == 0) {
      close(pipe_fd_);
      pipe_fd_ = -1;
    }
    break;
  }
  while (auto m = reader_.Next()) {
    if (m->kind == ChildMessage::Kind::kProgress) {
      std::string code = m->progress.value("code", "");
      progress_[code] = std::move(m->progress);
    } else {
      sent_ = std::move(m->outcome);
    }
  }
}

bool ChildRun::Poll() {
  if (done_) return true;
  ReadPipe();
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG | WUNTRACED);
  if (r == pid_ && WIFSTOPPED(st)) {
    if (!stopped_by_) stopped_by_ = WSTOPSIG(st);
    kill(pid_, SIGKILL);
    return false;
  }
  if (r == pid_) {
    // Everything it wrote is in the pipe by now; a process it left behind
    // holding the pipe open must not keep the task running.
    status_ = st;
    done_ = true;
    ReadPipe();
    if (pipe_fd_ >= 0) {
      close(pipe_fd_);
      pipe_fd_ = -1;
    }
    if (pid_fd_ >= 0) {
      close(pid_fd_);
      pid_fd_ = -1;
    }
  }
  return done_;
}

void ChildRun::Signal(int signo) {
  if (!done_ && pid_ > 0) kill(pid_, signo);
}

std::map<std::string, nlohmann::json> ChildRun::TakeProgress() {
  std::map<std::string, nlohmann::json> out;
  out.swap(progress_);
  return out;
}

Outcome ChildRun::outcome() const {
  Outcome out;
  out.state = TaskState::kFailed;
  if (stopped_by_) {
    out.error = {{"description",
                  fmt::format("Task process was stopped by {} and killed: a stopped task cannot "
                              "finish.",
                              SignalDescription(*stopped_by_))}};
  } else if (sent_ && WIFEXITED(status_) && WEXITSTATUS(status_) == 0) {
    out = *sent_;
  } else if (WIFSIGNALED(status_)) {
    out.error = {{"description", fmt::format("Task process was killed by {}.",
                                             SignalDescription(WTERMSIG(status_)))}};
  } else {
    out.error = {{"description", fmt::format("Task process died unexpectedly with exit code {}.",
                                             WIFEXITED(status_) ? WEXITSTATUS(status_) : -1)}};
  }
  return out;
}

}  // namespace taskmill::worker
