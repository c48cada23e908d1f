#include "api/connection_pool.h"

namespace taskmill::api {

ConnectionPool::ConnectionPool(std::string database_url, size_t size)
    : url_(std::move(database_url)), available_(size) {}

ConnectionPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Return(std::move(conn_));
}

ConnectionPool::Lease ConnectionPool::Acquire(Deadline deadline) {
  pg::Connection conn;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return available_ > 0; })) {
      throw pg::TimeoutError("no database connection free in the pool before the deadline");
    }
    --available_;
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (!conn.ok()) {
    try {
      conn = pg::Connection::Open(url_, deadline);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      ++available_;
      cv_.notify_one();
      throw;
    }
  }
  return Lease(this, std::move(conn));
}

void ConnectionPool::Return(pg::Connection conn) {
  std::lock_guard<std::mutex> lock(mu_);
  if (conn.ok()) idle_.push_back(std::move(conn));
  ++available_;
  cv_.notify_one();
}

}  // namespace taskmill::api
