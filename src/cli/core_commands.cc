// The worker-side subcommands (migrate, worker, dispatch, tasks, workers)
// and `up`, which only the whole command line (RunServerMain) adds.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "api/pulp_json.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "common/subprocess.h"
#include "embedded/local_postgres.h"
#include "pg/connection.h"
#include "pg/transaction.h"
#include "service/task_service.h"
#include "store/migrate.h"
#include "store/task_store.h"
#include "taskmill/worker.h"

namespace taskmill::cli {

namespace fs = std::filesystem;

namespace {

constexpr auto kCliTimeout = std::chrono::seconds(30);

[[noreturn]] void Fail(int code, const std::string& message) {
  std::cerr << "taskmill: " << message << "\n";
  throw CLI::RuntimeError(code);
}

[[noreturn]] void Fail(const Error& e) { Fail(ExitCodeFor(e.code), e.message); }

fs::path ExecutablePath() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("taskmill") : p;
}

// Where `taskmill up` keeps its embedded PostgreSQL: $TASKMILL_HOME, else
// .taskmill/ in the project (beside build/). When root runs a checkout that
// the postgres user cannot reach (under /root, say), the server cannot live
// there: then /var/lib/taskmill/<the project path, flattened>.
fs::path TaskmillHome() {
  if (const char* home = std::getenv("TASKMILL_HOME"); home != nullptr && *home != '\0') {
    return fs::absolute(home);
  }
  fs::path project = ExecutablePath().parent_path().parent_path();
  if (PostgresCanReach(project)) return project / ".taskmill";
  std::string flat;
  for (char c : project.string()) flat += (c == '/') ? '_' : c;
  return fs::path("/var/lib/taskmill") / flat;
}

std::string EmbeddedConnInfo(const fs::path& home) {
  return fmt::format("host={} port=5432 user=postgres dbname=taskmill", (home / "socket").string());
}

// Connects for a CLI command; exits with a clear message if it cannot.
pg::Connection ConnectOrFail(const GlobalOptions& options) {
  auto url = ResolveDatabaseUrl(options);
  if (!url.ok()) Fail(url.error());
  try {
    auto conn = pg::Connection::Open(*url, DeadlineIn(std::chrono::seconds(10)));
    auto schema = store::CheckSchema(conn, DeadlineIn(kCliTimeout));
    if (!schema.ok()) Fail(schema.error());
    return conn;
  } catch (const pg::Error& e) {
    Fail(kExitUnavailable, fmt::format("cannot use the database: {}", e.what()));
  }
}

nlohmann::json ParseJsonFlag(const std::string& flag, const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) Fail(kExitBadInput, fmt::format("{} is not valid JSON: {}", flag, text));
  return j;
}

void PrintTaskTable(const std::vector<Task>& tasks) {
  fmt::print("{:<36}  {:<9}  {:<24}  {:<27}  {}\n", "ID", "STATE", "NAME", "CREATED", "RESOURCES");
  for (const auto& t : tasks) {
    std::string res;
    for (const auto& r : t.exclusive_resources) res += (res.empty() ? "" : ",") + r;
    for (const auto& r : t.shared_resources) res += (res.empty() ? "shared:" : ",shared:") + r;
    fmt::print("{:<36}  {:<9}  {:<24}  {:<27}  {}\n", t.id, TaskStateName(t.state), t.name,
               t.created_at, res);
  }
}

void AddMigrate(CLI::App& app, GlobalOptions& options) {
  auto* cmd = app.add_subcommand("migrate", "Create or upgrade taskmill's schema in the database");
  cmd->callback([&options] {
    auto url = ResolveDatabaseUrl(options);
    if (!url.ok()) Fail(url.error());
    try {
      auto conn = pg::Connection::Open(*url, DeadlineIn(std::chrono::seconds(10)));
      auto applied = store::Migrate(conn, DeadlineIn(std::chrono::minutes(5)));
      if (!applied.ok()) Fail(applied.error());
      if (options.registry != nullptr) {
        store::RegisterFunctions(conn, options.registry->Names(), DeadlineIn(kCliTimeout));
      }
      fmt::print("schema at version {} ({} migration(s) applied)\n", store::LatestSchemaVersion(),
                 *applied);
    } catch (const pg::Error& e) {
      Fail(kExitUnavailable, fmt::format("migration failed: {}", e.what()));
    }
  });
}

void AddWorker(CLI::App& app, GlobalOptions& options) {
  auto* cmd = app.add_subcommand("worker", "Run a worker: claim ready tasks and run them");
  auto wo = std::make_shared<WorkerOptions>();
  auto no_listen = std::make_shared<bool>(false);
  auto no_janitor = std::make_shared<bool>(false);
  cmd->add_option("--name", wo->name, "Worker name (default <pid>@<hostname>)");
  cmd->add_option("--concurrency", wo->concurrency,
                  "Tasks this process runs at once (slots); one connection and one heartbeat "
                  "whatever the number")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--in-process", wo->in_process,
                "Run tasks on threads of the worker instead of a child process each");
  cmd->add_option("--heartbeat-interval", wo->heartbeat_interval, "Seconds between heartbeats")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  cmd->add_option("--ttl", wo->ttl, "Seconds without heartbeat before declared missing")
      ->check(CLI::Range(0.2, 86400.0))
      ->capture_default_str();
  cmd->add_option("--poll-interval", wo->poll_interval,
                  "Seconds between idle polls (jittered +-50%), the fallback for lost wakeups")
      ->check(CLI::Range(0.01, 60.0))
      ->capture_default_str();
  cmd->add_option("--cancel-grace", wo->cancel_grace,
                  "Seconds a canceled task may take to stop before SIGKILL")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  cmd->add_option("--grace", wo->shutdown_grace,
                  "On SIGINT: seconds before the running task is aborted")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--immediate-timeout", wo->immediate_timeout, "Time limit of immediate tasks")
      ->check(CLI::Range(0.01, 3600.0))
      ->capture_default_str();
  cmd->add_option("--listen-url", wo->listen_url,
                  "Database URL for LISTEN (default: the database URL); bypass poolers here");
  cmd->add_flag("--no-listen", *no_listen, "Do not LISTEN; rely on polling alone");
  cmd->add_flag("--no-janitor", *no_janitor, "Take no part in janitor duties");
  cmd->add_option("--snapshot-warning", wo->snapshot_warning,
                  "Janitor: warn when a snapshot older than this many seconds holds back vacuum "
                  "(0: never)")
      ->check(CLI::Range(0.0, 86400.0 * 365))
      ->capture_default_str();
  cmd->add_flag("--burst", wo->burst, "Exit once no task is ready");
  cmd->callback([&options, wo, no_listen, no_janitor] {
    if (auto live = service::CheckLiveness(wo->ttl, wo->heartbeat_interval); !live.ok()) {
      Fail(live.error());
    }
    auto url = ResolveDatabaseUrl(options);
    if (!url.ok()) Fail(url.error());
    WorkerOptions o = *wo;
    o.database_url = *url;
    o.listen = !*no_listen;
    o.janitor = !*no_janitor;
    SetupLogging(options.log_level,
                 o.name.empty() ? fmt::format("worker {}", getpid()) : "worker " + o.name);
    Worker worker(o, *options.registry);
    WorkerSignals signals(worker);
    int rc = worker.Run();
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

// `taskmill dispatch --file F`: one task per line, as JSON objects in the
// form of taskmill.dispatch_many; blank lines are skipped. The whole file is
// one transaction (all or nothing), sent in statements of at most
// store::kMaxDispatchBatch tasks; prints the ids in file order.
void DispatchFile(const GlobalOptions& options, const std::string& path) {
  std::ifstream file_stream;
  std::istream* in = &std::cin;
  if (path != "-") {
    file_stream.open(path);
    if (!file_stream)
      Fail(kExitBadInput, fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    in = &file_stream;
  }
  nlohmann::json batch = nlohmann::json::array();
  std::vector<int> line_of;  // batch index -> line number
  std::string line;
  for (int number = 1; std::getline(*in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto task = nlohmann::json::parse(line, nullptr, false);
    if (task.is_discarded())
      Fail(kExitBadInput, fmt::format("{}:{}: not valid JSON", path, number));
    if (!task.is_object()) {
      Fail(kExitBadInput, fmt::format("{}:{}: a task must be a JSON object", path, number));
    }
    batch.push_back(std::move(task));
    line_of.push_back(number);
  }
  if (in->bad()) Fail(kExitBadInput, fmt::format("cannot read {}", path));
  if (batch.empty()) Fail(kExitBadInput, fmt::format("{}: no tasks", path));

  auto conn = ConnectOrFail(options);
  auto deadline = DeadlineIn(kCliTimeout + std::chrono::seconds(batch.size() / 1000));
  std::vector<std::string> ids;
  try {
    pg::Transaction transaction(conn, deadline);
    for (size_t start = 0; start < batch.size(); start += store::kMaxDispatchBatch) {
      size_t end = std::min(batch.size(), start + store::kMaxDispatchBatch);
      nlohmann::json chunk(batch.begin() + start, batch.begin() + end);
      auto out = service::DispatchManyJson(conn, chunk, deadline);
      if (!out.ok()) {
        transaction.Rollback(deadline);
        // "tasks[i]: reason" -> "FILE:LINE: reason"
        std::string message = out.error().message;
        if (message.rfind("tasks[", 0) == 0) {
          size_t close = message.find("]: ");
          if (close != std::string::npos) {
            size_t index = start + std::stoul(message.substr(6, close - 6));
            if (index < line_of.size()) {
              message = fmt::format("{}:{}: {}", path, line_of[index], message.substr(close + 3));
            }
          }
        }
        Fail(ExitCodeFor(out.error().code), message + " (nothing was dispatched)");
      }
      ids.insert(ids.end(), out->begin(), out->end());
    }
    transaction.Commit(deadline);
  } catch (const pg::Error& e) {
    Fail(kExitUnavailable, fmt::format("dispatch failed (nothing was dispatched): {}", e.what()));
  }
  for (const auto& id : ids) fmt::print("{}\n", id);
}

void AddDispatch(CLI::App& app, GlobalOptions& options) {
  struct Flags {
    std::string name, args = "[]", kwargs = "{}", task_group, logging_cid, file;
    std::vector<std::string> exclusive, shared;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("dispatch", "Create a task and print its id");
  auto* name = cmd->add_option("name", f->name, "Registered function name");
  cmd->add_option("--args", f->args, "Positional arguments, a JSON array")->capture_default_str();
  cmd->add_option("--kwargs", f->kwargs, "Keyword arguments, a JSON object")->capture_default_str();
  cmd->add_option("--exclusive", f->exclusive, "Resource held exclusively (repeatable)");
  cmd->add_option("--shared", f->shared, "Resource held shared (repeatable)");
  cmd->add_option("--task-group", f->task_group, "Task group id");
  cmd->add_option("--logging-cid", f->logging_cid, "Correlation id for logs");
  auto* file = cmd->add_option(
      "--file", f->file,
      "Dispatch the tasks of a file, one JSON object per line ({\"name\": ..., \"args\": [...], "
      "\"kwargs\": {...}, \"exclusive_resources\": [...], \"shared_resources\": [...]}), all "
      "or nothing, in file order; - reads standard input. Prints one id per line");
  file->excludes(name);
  cmd->callback([&options, f, name, file] {
    if (file->count() > 0) {
      DispatchFile(options, f->file);
      return;
    }
    if (name->count() == 0) Fail(kExitBadInput, "dispatch needs a function NAME or --file FILE");
    DispatchRequest req;
    req.name = f->name;
    req.args = ParseJsonFlag("--args", f->args);
    req.kwargs = ParseJsonFlag("--kwargs", f->kwargs);
    // Checked before connecting: bad input is exit 2 even without a database.
    // The service's message names the field ("args ..."), here a flag.
    if (auto st = service::CheckDispatchRequest(req); !st.ok()) {
      Fail(ExitCodeFor(st.error().code), "--" + st.error().message);
    }
    req.exclusive_resources = f->exclusive;
    req.shared_resources = f->shared;
    if (!f->task_group.empty()) req.task_group = f->task_group;
    req.logging_cid = f->logging_cid;
    auto conn = ConnectOrFail(options);
    try {
      auto out = service::Dispatch(conn, req, std::nullopt, DeadlineIn(kCliTimeout));
      if (!out.ok()) Fail(out.error());
      fmt::print("{}\n", out->id);
    } catch (const pg::Error& e) {
      Fail(kExitUnavailable, fmt::format("dispatch failed: {}", e.what()));
    }
  });
}

void AddTasks(CLI::App& app, GlobalOptions& options) {
  auto* tasks = app.add_subcommand("tasks", "Inspect and cancel tasks");
  tasks->require_subcommand(1);

  struct ListFlags {
    std::vector<std::string> states;
    std::string name;
    int limit = 50;
    bool json = false;
  };
  auto lf = std::make_shared<ListFlags>();
  auto* list = tasks->add_subcommand("list", "List tasks, newest first");
  list->add_option("--state", lf->states, "Only tasks in this state (repeatable)");
  list->add_option("--name", lf->name, "Only tasks of this function");
  list->add_option("--limit", lf->limit, "At most this many (0: all)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  list->add_flag("--json", lf->json, "Print one JSON array");
  list->callback([&options, lf] {
    store::TaskFilter filter;
    for (const auto& s : lf->states) {
      auto st = ParseTaskState(s);
      if (!st) {
        Fail(kExitBadInput, fmt::format("unknown state \"{}\" (waiting, running, completed, "
                                        "failed, canceling, canceled)",
                                        s));
      }
      filter.states.push_back(*st);
    }
    if (!lf->name.empty()) filter.name = lf->name;
    filter.limit = lf->limit;
    auto conn = ConnectOrFail(options);
    auto rows = store::ListTasks(conn, filter, DeadlineIn(kCliTimeout));
    if (lf->json) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& t : rows) arr.push_back(api::TaskToJson(t));
      fmt::print("{}\n", arr.dump(2));
    } else {
      PrintTaskTable(rows);
    }
  });

  auto show_id = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  auto* show = tasks->add_subcommand("show", "Show one task");
  show->add_option("id", *show_id, "Task id")->required();
  show->add_flag("--json", *show_json, "Print JSON");
  show->callback([&options, show_id, show_json] {
    auto conn = ConnectOrFail(options);
    auto t = store::GetTask(conn, *show_id, DeadlineIn(kCliTimeout));
    if (!t.ok()) Fail(t.error());
    auto j = api::TaskToJson(*t);
    if (*show_json) {
      fmt::print("{}\n", j.dump(2));
      return;
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
      fmt::print("{:<26} {}\n", it.key() + ":",
                 it->is_string() ? it->get<std::string>() : it->dump());
    }
  });

  auto cancel_id = std::make_shared<std::string>();
  auto* cancel = tasks->add_subcommand("cancel", "Cancel a task");
  cancel->add_option("id", *cancel_id, "Task id")->required();
  cancel->callback([&options, cancel_id] {
    auto conn = ConnectOrFail(options);
    auto st = service::Cancel(conn, *cancel_id, DeadlineIn(kCliTimeout));
    if (!st.ok()) Fail(st.error());
    fmt::print("{}\n", TaskStateName(*st));
  });
}

void AddWorkers(CLI::App& app, GlobalOptions& options) {
  auto* workers = app.add_subcommand("workers", "Inspect workers");
  workers->require_subcommand(1);
  auto json = std::make_shared<bool>(false);
  auto* list = workers->add_subcommand("list", "List registered workers");
  list->add_flag("--json", *json, "Print one JSON array");
  list->callback([&options, json] {
    auto conn = ConnectOrFail(options);
    auto apps = store::ListApps(conn, std::string("worker"), DeadlineIn(kCliTimeout));
    if (*json) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& a : apps) arr.push_back(api::AppToJson(a));
      fmt::print("{}\n", arr.dump(2));
      return;
    }
    fmt::print("{:<36}  {:<28}  {:<7}  {:<27}  {:<9}  {}\n", "ID", "NAME", "ONLINE",
               "LAST HEARTBEAT", "BUSY", "CURRENT TASKS");
    for (const auto& a : apps) {
      std::string tasks = a.current_tasks.empty() ? "-" : fmt::format("{}", fmt::join(a.current_tasks, ","));
      fmt::print("{:<36}  {:<28}  {:<7}  {:<27}  {:<9}  {}\n", a.id, a.name,
                 a.online ? "yes" : "no", a.last_heartbeat,
                 fmt::format("{}/{}", a.current_tasks.size(), a.slots), tasks);
    }
  });
}

}  // namespace

// `taskmill up`: the whole system on one machine, until Ctrl-C.
void AddUp(CLI::App& app, GlobalOptions& options) {
  struct UpFlags {
    int workers = 2;
    int concurrency = 1;
    bool no_api = false;
    std::string api_listen = "127.0.0.1:24817";
    std::vector<std::string> worker_args;
  };
  auto f = std::make_shared<UpFlags>();
  auto* cmd = app.add_subcommand(
      "up",
      "Run taskmill here: an embedded PostgreSQL (unless a database URL is given), the "
      "schema, workers and the API server, until Ctrl-C");
  cmd->add_option("--workers", f->workers, "Number of worker processes")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  cmd->add_option("--concurrency", f->concurrency, "Tasks each worker process runs at once")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--no-api", f->no_api, "Do not start the API server");
  cmd->add_option("--api-listen", f->api_listen, "Address of the API server")
      ->capture_default_str();
  cmd->callback([&options, f] {
    SetupLogging(options.log_level, "up");
    std::optional<LocalPostgres> embedded;
    std::string url = options.database_url;
    if (url.empty()) {
      if (const char* env = std::getenv("TASKMILL_DATABASE_URL")) url = env;
    }
    if (url.empty()) {
      fs::path home = TaskmillHome();
      spdlog::info("starting the embedded PostgreSQL in {}", home.string());
      LocalPostgresOptions lo;
      lo.data_dir = home / "pgdata";
      lo.socket_dir = home / "socket";
      lo.log_file = home / "postgres.log";
      try {
        embedded.emplace(LocalPostgres::Start(lo, DeadlineIn(std::chrono::minutes(2))));
        embedded->CreateDatabase("taskmill", DeadlineIn(kCliTimeout));
      } catch (const std::exception& e) {
        Fail(kExitUnavailable, fmt::format("cannot start the embedded PostgreSQL: {}", e.what()));
      }
      url = embedded->ConnInfo("taskmill");
    }
    try {
      auto conn = pg::Connection::Open(url, DeadlineIn(std::chrono::seconds(30)));
      auto applied = store::Migrate(conn, DeadlineIn(std::chrono::minutes(5)));
      if (!applied.ok()) Fail(applied.error());
      store::RegisterFunctions(conn, options.registry->Names(), DeadlineIn(kCliTimeout));
    } catch (const pg::Error& e) {
      Fail(kExitUnavailable, fmt::format("cannot prepare the database: {}", e.what()));
    }

    // Children get their own process group: a Ctrl-C reaches only us, and we
    // stop them in order.
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, &old);

    std::string exe = ExecutablePath().string();
    auto start_child = [&](const std::vector<std::string>& args) {
      SubprocessOptions so;
      so.argv = {exe};
      so.argv.insert(so.argv.end(), args.begin(), args.end());
      so.env = {"TASKMILL_DATABASE_URL=" + url};
      so.new_process_group = true;
      return Subprocess::Start(so);
    };
    std::vector<std::vector<std::string>> specs;
    for (int i = 0; i < f->workers; ++i) {
      specs.push_back({"--log-level", options.log_level, "worker", "--name",
                       fmt::format("worker-{}@{}", i + 1, getpid()), "--concurrency",
                       std::to_string(f->concurrency)});
    }
    if (!f->no_api)
      specs.push_back({"--log-level", options.log_level, "api", "--listen", f->api_listen});
    std::vector<Subprocess> children;
    for (const auto& s : specs) children.push_back(start_child(s));
    spdlog::info("taskmill is up: {} worker(s){}; database {}; Ctrl-C stops everything", f->workers,
                 f->no_api ? "" : ", API on http://" + f->api_listen,
                 embedded ? "embedded" : "from the URL");

    timespec tick{0, 200 * 1000 * 1000};
    siginfo_t info;
    for (;;) {
      int sig = sigtimedwait(&mask, &info, &tick);
      if (sig == SIGINT || sig == SIGTERM) break;
      for (size_t i = 0; i < children.size(); ++i) {
        if (!children[i].running()) {
          spdlog::warn("{} exited; restarting it", specs[i][2]);
          std::this_thread::sleep_for(std::chrono::seconds(1));
          children[i] = start_child(specs[i]);
        }
      }
    }
    spdlog::info("stopping: workers finish their running task (up to 30 s), then the database");
    for (auto& c : children) c.Signal(SIGTERM);
    for (auto& c : children) c.Stop(DeadlineIn(std::chrono::seconds(30)));
    if (embedded) embedded->Stop(DeadlineIn(std::chrono::seconds(60)));
    sigprocmask(SIG_SETMASK, &old, nullptr);
    spdlog::info("stopped");
  });
}

Result<std::string> ResolveDatabaseUrl(const GlobalOptions& options) {
  if (!options.database_url.empty()) return options.database_url;
  if (const char* env = std::getenv("TASKMILL_DATABASE_URL"); env != nullptr && *env != '\0') {
    return std::string(env);
  }
  fs::path home = TaskmillHome();
  if (fs::exists(home / "socket" / ".s.PGSQL.5432")) return EmbeddedConnInfo(home);
  return MakeError(ErrorCode::kInvalidArgument,
                   "no database given: use --database-url URL, set TASKMILL_DATABASE_URL, or run "
                   "`taskmill up` (embedded PostgreSQL)");
}

void SetupLogging(const std::string& level, const std::string& process_name) {
  auto logger = spdlog::stderr_color_mt(process_name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

void AddCoreCommands(CLI::App& app, GlobalOptions& options) {
  AddMigrate(app, options);
  AddWorker(app, options);
  AddDispatch(app, options);
  AddTasks(app, options);
  AddWorkers(app, options);
}

}  // namespace taskmill::cli
