// ConnectionPool: a fixed number of database connections shared by the API
// server's request threads.
//
// The pool owns its connections; a Lease lends one to a thread and gives it
// back when destroyed (a broken connection is dropped and reopened on the
// next acquire). Acquire waits at most until its deadline.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "pg/connection.h"

namespace taskmill::api {

class ConnectionPool {
 public:
  ConnectionPool(std::string database_url, size_t size);
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  class Lease {
   public:
    Lease(ConnectionPool* pool, pg::Connection conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}
    ~Lease();
    pg::Connection& operator*() { return conn_; }
    pg::Connection* operator->() { return &conn_; }

   private:
    ConnectionPool* pool_;
    pg::Connection conn_;
  };

  // A connection, opened if needed. Throws pg::TimeoutError if none is free
  // by the deadline, pg::ConnectionError if the database cannot be reached.
  Lease Acquire(Deadline deadline);

 private:
  void Return(pg::Connection conn);

  std::string url_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pg::Connection> idle_;
  size_t available_;  // idle connections plus slots not yet opened
};

}  // namespace taskmill::api
