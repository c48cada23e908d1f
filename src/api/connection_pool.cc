#include "api/connection_pool.h"

#include <libpq-fe.h>

namespace taskmill::api {

ConnectionPool::ConnectionPool(std::string database_url, size_t size)
    : url_(std::move(database_url)), size_(size), available_(size) {}

ConnectionPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Return(std::move(conn_));
}

bool ConnectionPool::Usable(pg::Connection& conn) {
  if (!conn.ok()) return false;
  PGconn* raw = conn.raw();
  // An idle connection (pool connections never LISTEN) has nothing to say.
  // If its socket is readable, the server is most likely closing it (a FATAL
  // message, then end of file: a restart, pg_terminate_backend, an idle
  // timeout); libpq would only notice on the next query. Replace it.
  if (conn.WaitReadable(Clock::now())) return false;
  return PQtransactionStatus(raw) == PQTRANS_IDLE && PQpipelineStatus(raw) == PQ_PIPELINE_OFF;
}

bool ConnectionPool::TakeSlot(pg::Connection* conn) {
  if (available_ == 0) return false;
  --available_;
  if (!idle_.empty()) {
    *conn = std::move(idle_.back());
    idle_.pop_back();
  }
  return true;
}

ConnectionPool::Lease ConnectionPool::Acquire(Deadline deadline) {
  pg::Connection conn;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return available_ > 0; })) {
      throw pg::TimeoutError("no database connection free in the pool before the deadline");
    }
    TakeSlot(&conn);
  }
  return Finish(std::move(conn), deadline);
}

std::optional<ConnectionPool::Lease> ConnectionPool::TryAcquire(Deadline deadline) {
  pg::Connection conn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!TakeSlot(&conn)) return std::nullopt;
  }
  return Finish(std::move(conn), deadline);
}

ConnectionPool::Lease ConnectionPool::Finish(pg::Connection conn, Deadline deadline) {
  // Checked and (re)opened outside the lock: a connect can take a while.
  try {
    if (!Usable(conn)) {
      conn.Close();
      conn = pg::Connection::Open(url_, deadline);
      std::lock_guard<std::mutex> lock(mu_);
      ++opened_;
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    ++available_;
    cv_.notify_one();
    throw;
  }
  return Lease(this, std::move(conn));
}

void ConnectionPool::Return(pg::Connection conn) {
  // A connection handed back in the middle of something (an exception left
  // a query running, a transaction open, or pipeline mode on) is not safe
  // for the next user: close it; the slot is reopened on demand.
  PGconn* raw = conn.raw();
  bool clean = conn.ok() && PQtransactionStatus(raw) == PQTRANS_IDLE &&
               PQpipelineStatus(raw) == PQ_PIPELINE_OFF;
  if (!clean) conn.Close();
  std::lock_guard<std::mutex> lock(mu_);
  if (clean) idle_.push_back(std::move(conn));
  ++available_;
  cv_.notify_one();
}

uint64_t ConnectionPool::opened() const {
  std::lock_guard<std::mutex> lock(mu_);
  return opened_;
}

}  // namespace taskmill::api
