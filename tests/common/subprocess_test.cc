// Subprocess: owned child processes, for real.
#include "common/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace taskmill {
namespace {

SubprocessOptions Argv(std::vector<std::string> argv) {
  SubprocessOptions o;
  o.argv = std::move(argv);
  return o;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Gone, or a zombie that is no longer our child (reparented, not yet reaped).
bool Dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

bool WaitDead(pid_t pid, std::chrono::seconds limit) {
  Deadline d = DeadlineIn(limit);
  while (!Dead(pid)) {
    if (Expired(d)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

TEST(SubprocessTest, ExitCodes) {
  auto p = Subprocess::Start(Argv({"/bin/sh", "-c", "exit 3"}));
  EXPECT_GT(p.pid(), 0);
  auto st = p.Wait(DeadlineIn(std::chrono::seconds(10)));
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFEXITED(*st));
  EXPECT_EQ(ExitCodeOf(*st), 3);
  EXPECT_FALSE(p.running());
  // Waiting again returns the same status.
  EXPECT_EQ(p.Wait(DeadlineIn(std::chrono::seconds(1))), st);
  EXPECT_EQ(p.Stop(DeadlineIn(std::chrono::seconds(1))), *st);
}

TEST(SubprocessTest, SignalsAndDeadlines) {
  auto sleeper = Subprocess::Start(Argv({"/bin/sleep", "10"}));
  EXPECT_TRUE(sleeper.running());
  EXPECT_FALSE(sleeper.Wait(DeadlineIn(std::chrono::milliseconds(100))).has_value());
  EXPECT_TRUE(sleeper.running());
  EXPECT_TRUE(sleeper.Signal(SIGTERM));
  auto killed = sleeper.Wait(DeadlineIn(std::chrono::seconds(10)));
  ASSERT_TRUE(killed.has_value());
  EXPECT_TRUE(WIFSIGNALED(*killed));
  EXPECT_EQ(ExitCodeOf(*killed), 128 + SIGTERM);
  EXPECT_FALSE(sleeper.Signal(SIGTERM));  // gone
}

TEST(SubprocessTest, StopIsGracefulWhenTheChildListens) {
  auto p = Subprocess::Start(Argv({"/bin/sleep", "30"}));
  int st = p.Stop(DeadlineIn(std::chrono::seconds(10)));
  EXPECT_EQ(ExitCodeOf(st), 128 + SIGTERM);
}

TEST(SubprocessTest, StopEscalatesToSigkill) {
  std::string ready = ::testing::TempDir() + "/subprocess-trap-ready";
  std::remove(ready.c_str());
  auto stubborn = Subprocess::Start(
      Argv({"/bin/sh", "-c", "trap '' TERM; touch \"$0\"; exec sleep 30", ready}));
  // Only once the trap is set does SIGTERM test anything.
  Deadline d = DeadlineIn(std::chrono::seconds(10));
  while (!std::filesystem::exists(ready) && !Expired(d)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  int st = stubborn.Stop(DeadlineIn(std::chrono::milliseconds(300)));
  EXPECT_TRUE(WIFSIGNALED(st));
  EXPECT_EQ(WTERMSIG(st), SIGKILL);
  EXPECT_FALSE(stubborn.running());
}

TEST(SubprocessTest, ExecFailureIsAnException) {
  try {
    Subprocess::Start(Argv({"/no/such/program"}));
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("/no/such/program"), std::string::npos);
  }
  EXPECT_THROW(Subprocess::Start(Argv({"taskmill-no-such-program-on-path"})), std::system_error);
  EXPECT_THROW(Subprocess::Start(Argv({"/etc/passwd"})), std::system_error);  // not executable
  EXPECT_THROW(Subprocess::Start(Argv({})), std::invalid_argument);
  SubprocessOptions bad_output = Argv({"/bin/true"});
  bad_output.output_file = "/no/such/dir/out.txt";
  EXPECT_THROW(Subprocess::Start(bad_output), std::system_error);
}

TEST(SubprocessTest, ANameWithoutSlashIsSearchedOnPath) {
  auto p = Subprocess::Start(Argv({"sh", "-c", "exit 5"}));
  auto st = p.Wait(DeadlineIn(std::chrono::seconds(10)));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(ExitCodeOf(*st), 5);
}

TEST(SubprocessTest, OutputFileEnvironmentAndWorkingDirectory) {
  std::string out = ::testing::TempDir() + "/subprocess-out.txt";
  std::remove(out.c_str());
  setenv("TASKMILL_TEST_INHERITED", "inherited", 1);
  setenv("TASKMILL_TEST_OVERRIDDEN", "old", 1);
  SubprocessOptions o;
  o.argv = {"/bin/sh", "-c",
            "echo \"value=$TASKMILL_TEST_VAR\"; echo \"$TASKMILL_TEST_INHERITED\"; "
            "echo \"over=$TASKMILL_TEST_OVERRIDDEN\"; echo \"cwd=$(pwd)\"; echo oops >&2"};
  o.env = {"TASKMILL_TEST_VAR=42", "TASKMILL_TEST_OVERRIDDEN=new"};
  o.output_file = out;
  o.working_dir = "/";
  for (int run = 0; run < 2; ++run) {
    auto p = Subprocess::Start(o);
    auto st = p.Wait(DeadlineIn(std::chrono::seconds(10)));
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(ExitCodeOf(*st), 0);
  }
  std::string text = ReadFile(out);
  EXPECT_NE(text.find("value=42"), std::string::npos) << text;
  EXPECT_NE(text.find("inherited"), std::string::npos) << text;
  EXPECT_NE(text.find("over=new"), std::string::npos) << text;
  EXPECT_EQ(text.find("over=old"), std::string::npos) << text;
  EXPECT_NE(text.find("cwd=/\n"), std::string::npos) << text;
  EXPECT_NE(text.find("oops"), std::string::npos) << text;
  // Appended, not truncated: both runs are there.
  EXPECT_NE(text.find("value=42"), text.rfind("value=42")) << text;
  unsetenv("TASKMILL_TEST_INHERITED");
  unsetenv("TASKMILL_TEST_OVERRIDDEN");
}

TEST(SubprocessTest, SignalMaskAndIgnoredSignalsAreReset) {
  sigset_t term, old_mask;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, &old_mask);
  struct sigaction ignore {
  }, old_int{};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ignore, &old_int);
  auto a = Subprocess::Start(Argv({"/bin/sleep", "30"}));
  auto b = Subprocess::Start(Argv({"/bin/sleep", "30"}));
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  sigaction(SIGINT, &old_int, nullptr);
  a.Signal(SIGTERM);
  b.Signal(SIGINT);
  auto sa = a.Wait(DeadlineIn(std::chrono::seconds(10)));
  auto sb = b.Wait(DeadlineIn(std::chrono::seconds(10)));
  ASSERT_TRUE(sa.has_value());
  ASSERT_TRUE(sb.has_value());
  EXPECT_EQ(ExitCodeOf(*sa), 128 + SIGTERM);
  EXPECT_EQ(ExitCodeOf(*sb), 128 + SIGINT);
}

TEST(SubprocessTest, NewProcessGroup) {
  SubprocessOptions o = Argv({"/bin/sleep", "30"});
  o.new_process_group = true;
  auto p = Subprocess::Start(o);
  // The child calls setpgid before exec, and Start returns only after exec.
  EXPECT_EQ(getpgid(p.pid()), p.pid());
  auto same = Subprocess::Start(Argv({"/bin/sleep", "30"}));
  EXPECT_EQ(getpgid(same.pid()), getpgrp());
}

TEST(SubprocessTest, DestructorAndMoveAssignmentKill) {
  pid_t pid;
  {
    auto sleeper = Subprocess::Start(Argv({"/bin/sleep", "30"}));
    pid = sleeper.pid();
  }
  // Killed and reaped by the destructor: it is no longer our child.
  EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_TRUE(Dead(pid));

  auto first = Subprocess::Start(Argv({"/bin/sleep", "30"}));
  pid_t first_pid = first.pid();
  auto second = Subprocess::Start(Argv({"/bin/sleep", "30"}));
  pid_t second_pid = second.pid();
  first = std::move(second);
  EXPECT_TRUE(Dead(first_pid));
  EXPECT_EQ(first.pid(), second_pid);
  EXPECT_EQ(second.pid(), -1);  // NOLINT: moved-from owns nothing
  EXPECT_FALSE(second.running());
  EXPECT_TRUE(first.running());
  Subprocess moved(std::move(first));
  EXPECT_EQ(moved.pid(), second_pid);
  EXPECT_TRUE(moved.running());
}

TEST(SubprocessTest, ChildDiesWithItsParent) {
  // An intermediate process owns a child and exits without cleaning up; the
  // child gets SIGKILL from the kernel.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t owner = fork();
  ASSERT_GE(owner, 0);
  if (owner == 0) {
    close(fds[0]);
    auto p = Subprocess::Start(Argv({"/bin/sleep", "30"}));
    pid_t pid = p.pid();
    [[maybe_unused]] auto n = write(fds[1], &pid, sizeof(pid));
    _exit(0);  // no destructor runs
  }
  close(fds[1]);
  pid_t child = 0;
  ASSERT_EQ(read(fds[0], &child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  close(fds[0]);
  waitpid(owner, nullptr, 0);
  EXPECT_TRUE(WaitDead(child, std::chrono::seconds(10)));
}

TEST(SubprocessTest, ExitCodeOf) {
  EXPECT_EQ(ExitCodeOf(0), 0);
  EXPECT_EQ(ExitCodeOf(7 << 8), 7);
  EXPECT_EQ(ExitCodeOf(SIGKILL), 128 + SIGKILL);
}

}  // namespace
}  // namespace taskmill
