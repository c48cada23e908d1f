// ConnectionPool: a fixed number of database connections shared by the API
// server's request threads.
//
// The pool owns its connections. A Lease lends one to one thread and gives it
// back when destroyed; while lent, only that thread uses it (pg::Connection is
// not thread-safe). The pool is sized to the HTTP thread pool, so a request
// thread that holds at most one lease never waits for one.
//
// Broken connections never reach a caller: a connection that comes back
// closed, mid-query, inside a transaction or still in pipeline mode (an
// exception interrupted its user) is dropped, and an idle connection that the
// server has closed meanwhile (restart, pg_terminate_backend, idle timeout)
// is noticed at acquire time and replaced by a fresh one. Acquire waits at
// most until its deadline, both for a free slot and for the connect.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pg/connection.h"
#include "taskmill/deadline.h"

namespace taskmill::api {

class ConnectionPool {
 public:
  ConnectionPool(std::string database_url, size_t size);
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // One borrowed connection; gives it back (or drops it if it is not clean)
  // when destroyed. Movable, not copyable.
  class Lease {
   public:
    Lease(ConnectionPool* pool, pg::Connection conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    pg::Connection& operator*() { return conn_; }
    pg::Connection* operator->() { return &conn_; }

   private:
    ConnectionPool* pool_;
    pg::Connection conn_;
  };

  // A connection, opened (or reopened) if needed. Throws pg::TimeoutError if
  // no slot is free by the deadline, pg::ConnectionError if the database
  // cannot be reached.
  Lease Acquire(Deadline deadline);
  // A connection only if a slot is free right now (nullopt otherwise); the
  // connect, if one is needed, waits at most until `deadline`. For a request
  // that would like a second connection: it must never wait for one, or
  // requests holding one each could wait on each other.
  std::optional<Lease> TryAcquire(Deadline deadline);

  size_t size() const { return size_; }
  // Connections opened since start (reconnects included); for /metrics.
  uint64_t opened() const;

 private:
  void Return(pg::Connection conn);
  // True if `conn` can be handed out as is.
  static bool Usable(pg::Connection& conn);
  // Takes a slot (and an idle connection, if any) under mu_; false if none.
  bool TakeSlot(pg::Connection* conn);
  // Makes `conn` usable (reopening it) or gives the slot back and throws.
  Lease Finish(pg::Connection conn, Deadline deadline);

  const std::string url_;
  const size_t size_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pg::Connection> idle_;  // under mu_
  size_t available_;                  // under mu_: idle connections plus slots not yet opened
  uint64_t opened_ = 0;               // under mu_
};

}  // namespace taskmill::api
