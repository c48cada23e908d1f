#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <system_error>
#include <thread>

extern char** environ;

namespace taskmill {

Subprocess Subprocess::Start(const SubprocessOptions& options) {
  if (options.argv.empty()) throw std::invalid_argument("Subprocess: empty argv");
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> argv = options.argv;
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::map<std::string, std::string> env_map;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    env_map[kv.substr(0, eq)] = kv;
  }
  for (const auto& kv : options.env) env_map[kv.substr(0, kv.find('='))] = kv;
  std::vector<std::string> env;
  for (auto& [k, v] : env_map) env.push_back(v);
  std::vector<char*> cenv;
  for (auto& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  std::string out_path = options.output_file ? options.output_file->string() : "";
  std::string work_dir = options.working_dir ? options.working_dir->string() : "";

  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe");
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(err_pipe[0]);
    close(err_pipe[1]);
    throw std::system_error(e, std::generic_category(), "fork");
  }
  if (pid == 0) {
    close(err_pipe[0]);
    auto fail = [&](int e) {
      [[maybe_unused]] ssize_t n = write(err_pipe[1], &e, sizeof(e));
      _exit(127);
    };
    if (options.die_with_parent) {
      if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(errno);
      // The parent may have died before prctl: then nobody would kill us.
      if (getppid() != parent) _exit(127);
    }
    if (options.new_process_group && setpgid(0, 0) != 0) fail(errno);
    if (!out_path.empty()) {
      int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd < 0) fail(errno);
      if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0) fail(errno);
      if (fd > 2) close(fd);
    }
    if (!work_dir.empty() && chdir(work_dir.c_str()) != 0) fail(errno);
    // Dispositions first, then the mask: a signal blocked in the parent and
    // raised now must not run the parent's handler in this copy of it.
    // (Ignored dispositions survive exec, handlers do not.)
    for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (std::strchr(cargv[0], '/') != nullptr) {
      execve(cargv[0], cargv.data(), cenv.data());
    } else {
      environ = cenv.data();  // execvp searches PATH and passes environ
      execvp(cargv[0], cargv.data());
    }
    fail(errno);
  }
  close(err_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(err_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(err_pipe[0]);
  Subprocess p;
  p.pid_ = pid;
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    int status;
    waitpid(pid, &status, 0);
    p.pid_ = -1;
    throw std::system_error(child_errno, std::generic_category(),
                            "cannot start " + options.argv[0]);
  }
  return p;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !status_) {
      kill(pid_, SIGKILL);
      int st;
      waitpid(pid_, &st, 0);
    }
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !status_) {
    kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
  }
}

bool Subprocess::running() {
  if (pid_ <= 0 || status_) return false;
  int st;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    return false;
  }
  return r == 0;
}

bool Subprocess::Signal(int signo) {
  if (!running()) return false;
  return kill(pid_, signo) == 0;
}

std::optional<int> Subprocess::Wait(Deadline deadline) {
  if (status_) return status_;
  if (pid_ <= 0) return std::nullopt;
  auto nap = std::chrono::milliseconds(1);
  for (;;) {
    int st;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      return status_;
    }
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (Expired(deadline)) return std::nullopt;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::milliseconds(20));
  }
}

int Subprocess::Stop(Deadline deadline, int first_signal) {
  if (pid_ <= 0) return status_.value_or(0);
  Signal(first_signal);
  if (auto st = Wait(deadline)) return *st;
  kill(pid_, SIGKILL);
  int st = 0;
  waitpid(pid_, &st, 0);
  status_ = st;
  return st;
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace taskmill
