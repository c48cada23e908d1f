// HttpServer: the API's HTTP/1.1 front (plain TCP or TLS), built so that
// slow or idle clients cannot take the threads that answer requests.
//
// Thread model. One reactor thread owns the listening socket and every
// connection: it accepts, performs TLS handshakes, and reads requests
// non-blocking (epoll). It checks every limit of `HttpLimits` while it reads:
// the sizes of the request line, of each header and of the whole head, the
// header count, the body size whether sent with Content-Length or chunked,
// a deadline for the head and one for the body, an idle timeout between
// keep-alive requests, and caps on connections per client address and in
// total. Only a complete request within those limits goes to the pool of
// `threads` worker threads that run the handler; a connection has at most one
// request at a worker (pipelined requests wait in its buffer, unread past the
// limits). The worker writes the answer itself if the socket takes it at
// once, else the reactor finishes writing it under the write deadline.
// Requests that break a limit are answered by the reactor itself (400, 408,
// 413, 414, 431, 503) with a JSON body, and the connection is closed.
//
// Request and response are httplib's plain data types (only their data
// members and helpers are used: no httplib server code runs). `path` is the
// percent-decoded path; `params` the decoded query; `body` the decoded body
// (chunked bodies are de-chunked). Form bodies are never parsed into params.
// `Range` is ignored (every answer is complete).
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <httplib.h>

namespace taskmill::api::http {

struct HttpLimits {
  size_t max_request_line = 8192;             // bytes; 414 above
  size_t max_header_bytes = 8192;             // one header line; 431 above
  size_t max_head_bytes = 32768;              // request line + headers; 431 above
  size_t max_headers = 100;                   // header count; 431 above
  size_t max_body_bytes = 1 << 20;            // decoded body; 413 above
  double head_timeout = 10;                   // s from a request's first byte to its head's end
  double body_timeout = 30;                   // s from the head's end to the body's end
  double idle_timeout = 5;                    // s a keep-alive connection may wait idle
  double write_timeout = 30;                  // s to write one answer
  size_t max_connections = 1024;              // open connections; 503 at accept above
  size_t max_connections_per_address = 256;   // open connections per client IP address
  size_t max_requests_per_connection = 1000;  // then the connection is closed after answering
};

struct HttpServerOptions {
  HttpLimits limits;
  int threads = 16;      // worker threads running the handler
  std::string tls_cert;  // PEM certificate chain file; empty: plain TCP
  std::string tls_key;   // PEM private key file
};

// Runs one request; fills the response (status and body; Content-Length and
// Connection are the server's).
using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
// Told of every request the front answers itself without calling the
// handler (a broken limit or a malformed request): its method ("-" if the
// request line was not read yet) and status; and of every connection refused
// at accept (method "", status 503). Called on the reactor thread.
using RejectObserver = std::function<void(const std::string& method, int status)>;

// A resolved listening address.
struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;  // numeric, e.g. "127.0.0.1:24817" or "[::1]:24817"
  bool loopback = false;
};

// Resolves `host` (a name or a numeric address) and `port` with
// getaddrinfo. Returns the first address, or an error message. `loopback`
// is judged on the resolved address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104),
// never on the name's text.
std::string ResolveListenAddress(const std::string& host, int port, ListenAddress* out);

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, Handler handler, RejectObserver observer);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the TLS certificate and key if configured, binds and listens
  // (backlog SOMAXCONN, SO_REUSEADDR only: a port in use is an error, never
  // shared). Returns "" or a message saying what failed (EADDRINUSE: "address
  // already in use").
  std::string Listen(const ListenAddress& address);

  // Serves until Stop(): then stops accepting, closes connections without a
  // request at a worker, answers the requests at workers (within the write
  // deadline), joins the workers and returns.
  void Run();

  // Thread-safe; async-signal-unsafe. Run() returns soon after.
  void Stop();

  bool tls() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace taskmill::api::http
