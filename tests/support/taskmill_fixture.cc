#include "support/taskmill_fixture.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "store/migrate.h"
#include "store/task_store.h"
#include "support/test_functions.h"
#include "support/test_postgres.h"
#include "taskmill/registry.h"

namespace taskmill::testing {

pg::Connection Connect(const std::string& conninfo) {
  return pg::Connection::Open(conninfo, DeadlineIn(std::chrono::seconds(10)));
}

DispatchRequest Request(const std::string& name, nlohmann::json kwargs,
                        std::vector<std::string> exclusive, std::vector<std::string> shared) {
  DispatchRequest req;
  req.name = name;
  req.kwargs = std::move(kwargs);
  req.exclusive_resources = std::move(exclusive);
  req.shared_resources = std::move(shared);
  return req;
}

std::string DispatchTask(pg::Connection& conn, const DispatchRequest& request) {
  auto out = store::DispatchTask(conn, request, std::nullopt, DeadlineIn(std::chrono::seconds(30)));
  if (!out.ok()) {
    ADD_FAILURE() << "dispatch of " << request.name << " refused: " << out.error().message;
    return "";
  }
  return out->id;
}

Task GetTask(pg::Connection& conn, const std::string& id) {
  auto task = store::GetTask(conn, id, DeadlineIn(std::chrono::seconds(30)));
  if (!task.ok()) throw std::runtime_error("task " + id + ": " + task.error().message);
  return *task;
}

bool WaitForState(pg::Connection& conn, const std::string& id, TaskState state,
                  std::chrono::milliseconds limit) {
  return WaitFor([&] { return GetTask(conn, id).state == state; }, limit);
}

bool WaitForFinal(pg::Connection& conn, const std::string& id, std::chrono::milliseconds limit) {
  return WaitFor([&] { return IsFinal(GetTask(conn, id).state); }, limit);
}

int64_t QueryInt(pg::Connection& conn, const std::string& sql) {
  return conn.Exec(sql, DeadlineIn(std::chrono::seconds(30))).GetInt(0, 0);
}

std::map<std::string, std::vector<int>> ReadJournal(const std::string& path) {
  std::map<std::string, std::vector<int>> runs;
  std::ifstream in(path);
  std::string id;
  int pid;
  while (in >> id >> pid) runs[id].push_back(pid);
  return runs;
}

std::string MigratedTestDatabase() {
  std::string conninfo = CreateTestDatabase();
  auto conn = Connect(conninfo);
  auto applied = store::Migrate(conn, DeadlineIn(std::chrono::minutes(1)));
  if (!applied.ok()) throw std::runtime_error(applied.error().message);
  TaskRegistry registry;
  RegisterBuiltins(registry);
  RegisterTestFunctions(registry);
  store::RegisterFunctions(conn, registry.Names(), DeadlineIn(std::chrono::seconds(10)));
  return conninfo;
}

namespace {

Subprocess StartProgram(const char* binary, const std::vector<std::string>& args,
                        std::string* log_path) {
  static std::atomic<int> counter{0};
  std::string log =
      fmt::format("{}/taskmill-test-{}-{}.log", ::testing::TempDir(), getpid(), counter++);
  std::remove(log.c_str());
  SubprocessOptions so;
  so.argv = {binary};
  so.argv.insert(so.argv.end(), args.begin(), args.end());
  so.output_file = log;
  if (log_path != nullptr) *log_path = log;
  return Subprocess::Start(so);
}

}  // namespace

Subprocess StartTaskmill(const std::vector<std::string>& args, std::string* log_path) {
  return StartProgram(TASKMILL_BINARY, args, log_path);
}

Subprocess StartTestProgram(const std::vector<std::string>& args, std::string* log_path) {
  return StartProgram(TASKMILL_TEST_WORKER_BINARY, args, log_path);
}

Subprocess StartWorker(const std::string& db, const std::string& name,
                       const std::vector<std::string>& extra, std::vector<std::string>* logs) {
  std::vector<std::string> args = {"--database-url", db, "worker", "--name", name};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string log;
  Subprocess p = StartTestProgram(args, &log);
  if (logs != nullptr) logs->push_back(log);
  return p;
}

void PrintLogs(const std::vector<std::string>& logs) {
  for (const auto& log : logs) std::cerr << "---- " << log << "\n" << ReadFile(log) << "\n";
}

CommandResult RunTaskmill(const std::vector<std::string>& args,
                          const std::vector<std::string>& env) {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  std::vector<std::string> argv = {TASKMILL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  CommandResult r;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  Deadline deadline = DeadlineIn(std::chrono::seconds(60));
  while (open_fds > 0 && !Expired(deadline)) {
    poll(fds, 2, MillisLeft(deadline));
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  if (open_fds > 0) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = ExitCodeOf(status);
  return r;
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  Deadline deadline = DeadlineIn(limit);
  while (!Expired(deadline)) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace taskmill::testing
