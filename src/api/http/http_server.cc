#include "api/http/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "taskmill/deadline.h"

namespace taskmill::api::http {

namespace {

constexpr uint64_t kListenId = 0;
constexpr uint64_t kWakeId = 1;
constexpr size_t kReadChunk = 16384;
constexpr size_t kMaxChunkLine = 1024;  // a chunk-size line with its extensions
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr auto kSweepEvery = std::chrono::milliseconds(100);

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

const char* Reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 417:
      return "Expectation Failed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsTokenChar(unsigned char c) {
  return std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// True if the comma-separated header value lists `item` (case-insensitive).
bool ListHas(std::string_view value, std::string_view item) {
  while (!value.empty()) {
    auto comma = value.find(',');
    if (IEquals(Trim(value.substr(0, comma)), item)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding; `plus_is_space` for query components. An invalid escape
// stays as it is (as most servers do).
std::string PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

void ParseQuery(std::string_view q, httplib::Params& params) {
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    if (!part.empty()) {
      auto eq = part.find('=');
      std::string key = PercentDecode(part.substr(0, eq), true);
      std::string value =
          eq == std::string_view::npos ? "" : PercentDecode(part.substr(eq + 1), true);
      params.emplace(std::move(key), std::move(value));
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
}

std::string ErrorBody(const std::string& detail, const std::string& limit) {
  nlohmann::json j{{"detail", detail}};
  if (!limit.empty()) j["limit"] = limit;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

enum class Phase { kHandshake, kIdle, kHead, kBody, kProcessing, kWriting, kLinger };
enum class ChunkState { kSize, kData, kDataEnd, kTrailer };

struct Conn {
  uint64_t id = 0;
  int fd = -1;
  SSL* ssl = nullptr;
  std::string peer;
  int peer_port = 0;
  Phase phase = Phase::kIdle;
  Clock::time_point deadline;
  bool armed_in = false;  // what epoll waits for (one-shot)
  bool tls_want_write = false;
  bool tls_want_read = false;

  std::string in;         // bytes read and not yet consumed
  size_t scan = 0;        // head: where the search for its end resumes
  size_t line_start = 0;  // head: where the current line starts
  size_t lines = 0;       // head: lines seen (request line included)
  httplib::Request req;
  bool keep_alive = true;
  bool chunked = false;
  size_t body_left = 0;  // Content-Length still to come
  ChunkState chunk_state = ChunkState::kSize;
  size_t chunk_left = 0;
  size_t trailer_bytes = 0;
  bool expect_continue = false;
  bool head_request = false;

  std::string out;
  size_t out_off = 0;
  bool close_after_write = false;
  size_t served = 0;
  size_t discarded = 0;  // linger
};

// One answer to write, from a worker.
struct Completion {
  uint64_t id;
  bool written;  // all of it already
  bool failed;   // the socket broke
};

}  // namespace

std::string ResolveListenAddress(const std::string& host, int port, ListenAddress* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return fmt::format("cannot resolve \"{}\": {}", host, gai_strerror(rc));
  }
  std::memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
  out->len = static_cast<socklen_t>(res->ai_addrlen);
  freeaddrinfo(res);
  char buf[INET6_ADDRSTRLEN] = {0};
  if (out->addr.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&out->addr);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    out->loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    out->text = fmt::format("{}:{}", buf, port);
  } else if (out->addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&out->addr);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    const uint8_t* b = a->sin6_addr.s6_addr;
    bool v4mapped = IN6_IS_ADDR_V4MAPPED(&a->sin6_addr);
    out->loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) || (v4mapped && b[12] == 127);
    out->text = fmt::format("[{}]:{}", buf, port);
  } else {
    return fmt::format("\"{}\" resolves to an address that is neither IPv4 nor IPv6", host);
  }
  return "";
}

struct HttpServer::Impl {
  HttpServerOptions options;
  Handler handler;
  RejectObserver observer;
  SSL_CTX* ssl_ctx = nullptr;
  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  bool listening_paused = false;  // out of descriptors
  Clock::time_point resume_accept;

  std::atomic<bool> stopping{false};
  uint64_t next_id = 2;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;  // reactor only
  std::unordered_map<std::string, size_t> per_address;        // reactor only

  // Requests for the workers, answers back.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Conn*> jobs;               // under mu
  bool workers_stop = false;            // under mu
  std::vector<Completion> completions;  // under mu
  std::vector<std::thread> workers;

  ~Impl() {
    for (auto& [id, c] : conns) {
      if (c->ssl) SSL_free(c->ssl);
      if (c->fd >= 0) close(c->fd);
    }
    if (listen_fd >= 0) close(listen_fd);
    if (epoll_fd >= 0) close(epoll_fd);
    if (wake_fd >= 0) close(wake_fd);
    if (ssl_ctx) SSL_CTX_free(ssl_ctx);
  }

  const HttpLimits& limits() const { return options.limits; }

  std::string LoadTls() {
    if (options.tls_cert.empty() && options.tls_key.empty()) return "";
    if (options.tls_cert.empty() || options.tls_key.empty()) {
      return "--tls-cert and --tls-key go together";
    }
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (!ssl_ctx) return "cannot create a TLS context";
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    auto ssl_error = [] {
      char buf[256] = {0};
      ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
      return std::string(buf);
    };
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, options.tls_cert.c_str()) != 1) {
      return fmt::format("cannot load the TLS certificate {}: {}", options.tls_cert, ssl_error());
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, options.tls_key.c_str(), SSL_FILETYPE_PEM) != 1) {
      return fmt::format("cannot load the TLS key {}: {}", options.tls_key, ssl_error());
    }
    if (SSL_CTX_check_private_key(ssl_ctx) != 1) {
      return fmt::format("the TLS key {} does not match the certificate {}", options.tls_key,
                         options.tls_cert);
    }
    return "";
  }

  std::string Listen(const ListenAddress& address) {
    if (auto e = LoadTls(); !e.empty()) return e;
    // Hundreds of slow clients must not run the process out of descriptors
    // before the connection caps apply.
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    listen_fd = socket(address.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) return fmt::format("socket: {}", std::strerror(errno));
    int one = 1;
    // SO_REUSEADDR only lets a restart bind past connections in TIME_WAIT;
    // unlike SO_REUSEPORT it never lets two servers share a listening port.
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (address.addr.ss_family == AF_INET6) {
      setsockopt(listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(listen_fd, reinterpret_cast<const sockaddr*>(&address.addr), address.len) != 0 ||
        listen(listen_fd, SOMAXCONN) != 0) {
      int err = errno;
      close(listen_fd);
      listen_fd = -1;
      if (err == EADDRINUSE) {
        return fmt::format(
            "cannot listen on {}: address already in use (is another server "
            "running on this port?)",
            address.text);
      }
      return fmt::format("cannot listen on {}: {}", address.text, std::strerror(err));
    }
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd < 0 || wake_fd < 0) return fmt::format("epoll: {}", std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenId;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
    ev.data.u64 = kWakeId;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev);
    return "";
  }

  void Wake() {
    uint64_t one = 1;
    ssize_t n = write(wake_fd, &one, sizeof(one));
    (void)n;
  }

  // ---- I/O on one connection (plain or TLS) ----
  // > 0 bytes; 0 end of stream; -1 would block; -2 broken.
  static ssize_t RawRead(Conn& c, char* buf, size_t n) {
    if (c.ssl) {
      ERR_clear_error();
      int r = SSL_read(c.ssl, buf, static_cast<int>(n));
      if (r > 0) return r;
      int e = SSL_get_error(c.ssl, r);
      if (e == SSL_ERROR_WANT_READ) return -1;
      if (e == SSL_ERROR_WANT_WRITE) {
        c.tls_want_write = true;
        return -1;
      }
      if (e == SSL_ERROR_ZERO_RETURN) return 0;
      return -2;
    }
    ssize_t r = recv(c.fd, buf, n, 0);
    if (r > 0) return r;
    if (r == 0) return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
    return -2;
  }
  static ssize_t RawWrite(Conn& c, const char* buf, size_t n) {
    if (c.ssl) {
      ERR_clear_error();
      int r = SSL_write(c.ssl, buf, static_cast<int>(std::min<size_t>(n, 1 << 20)));
      if (r > 0) return r;
      int e = SSL_get_error(c.ssl, r);
      if (e == SSL_ERROR_WANT_WRITE) return -1;
      if (e == SSL_ERROR_WANT_READ) {
        c.tls_want_read = true;
        return -1;
      }
      return -2;
    }
    ssize_t r = send(c.fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
    return -2;
  }
  // Writes what the socket takes now. Returns false if it broke.
  static bool Flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t w = RawWrite(c, c.out.data() + c.out_off, c.out.size() - c.out_off);
      if (w == -1) return true;
      if (w < 0) return false;
      c.out_off += static_cast<size_t>(w);
    }
    return true;
  }

  // ---- the reactor ----
  void Arm(Conn& c) {
    uint32_t events = EPOLLONESHOT;
    switch (c.phase) {
      case Phase::kProcessing:
        return;  // the worker has it; re-armed when it is done
      case Phase::kWriting:
        events |= EPOLLOUT;
        if (c.tls_want_read) events |= EPOLLIN;
        break;
      case Phase::kHandshake:
        events |= c.tls_want_write ? EPOLLOUT : EPOLLIN;
        break;
      default:
        events |= EPOLLIN;
        if (c.tls_want_write) events |= EPOLLOUT;
    }
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = c.id;
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &ev);
  }

  void Close(Conn* c) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, nullptr);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    auto it = per_address.find(c->peer);
    if (it != per_address.end() && --it->second == 0) per_address.erase(it);
    conns.erase(c->id);  // destroys c
  }

  void Accept() {
    for (;;) {
      sockaddr_storage sa{};
      socklen_t len = sizeof(sa);
      int fd =
          accept4(listen_fd, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Pending connections wait in the backlog until descriptors free.
          spdlog::warn("API: accept: {}; pausing accepts for 100 ms", std::strerror(errno));
          epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
          listening_paused = true;
          resume_accept = Clock::now() + std::chrono::milliseconds(100);
        }
        return;  // EAGAIN, or a connection that went away meanwhile
      }
      char host[INET6_ADDRSTRLEN] = {0};
      int port = 0;
      if (sa.ss_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&sa);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
      } else if (sa.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&sa);
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
      }
      std::string peer = host;
      size_t& from_peer = per_address[peer];
      if (conns.size() >= limits().max_connections ||
          from_peer >= limits().max_connections_per_address) {
        bool total = conns.size() >= limits().max_connections;
        if (from_peer == 0) per_address.erase(peer);
        if (!ssl_ctx) {
          std::string body =
              ErrorBody(total ? "too many connections to this server; try again later"
                              : "too many connections from your address; try again later",
                        total ? "max-connections" : "max-connections-per-address");
          std::string resp = fmt::format(
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
              "Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
              body.size(), body);
          ssize_t n = send(fd, resp.data(), resp.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          (void)n;
          shutdown(fd, SHUT_WR);
        }
        close(fd);
        if (observer) observer("", 503);
        continue;
      }
      ++from_peer;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      auto c = std::make_unique<Conn>();
      c->id = next_id++;
      c->fd = fd;
      c->peer = peer;
      c->peer_port = port;
      if (ssl_ctx) {
        c->ssl = SSL_new(ssl_ctx);
        SSL_set_fd(c->ssl, fd);
        SSL_set_accept_state(c->ssl);
        c->phase = Phase::kHandshake;
        c->deadline = Clock::now() + Seconds(limits().head_timeout);
      } else {
        c->phase = Phase::kIdle;
        c->deadline = Clock::now() + Seconds(limits().idle_timeout);
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLONESHOT;
      ev.data.u64 = c->id;
      epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
      conns.emplace(c->id, std::move(c));
    }
  }

  void Handshake(Conn* c) {
    c->tls_want_write = false;
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
      c->phase = Phase::kIdle;  // the handshake's deadline stays for the first head
      Read(c);
      return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return Arm(*c);
    if (e == SSL_ERROR_WANT_WRITE) {
      c->tls_want_write = true;
      return Arm(*c);
    }
    Close(c);
  }

  // Answers a request the handler never sees, then closes the connection.
  void Reject(Conn* c, int status, const std::string& detail, const std::string& limit = "") {
    if (observer) observer(c->req.method.empty() ? "-" : c->req.method, status);
    std::string body = ErrorBody(detail, limit);
    c->out = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nConnection: close\r\n"
        "Content-Length: {}\r\n\r\n{}",
        status, Reason(status), body.size(), body);
    c->out_off = 0;
    c->close_after_write = true;
    c->in.clear();
    StartWriting(c);
  }

  void StartWriting(Conn* c) {
    c->phase = Phase::kWriting;
    c->deadline = Clock::now() + Seconds(limits().write_timeout);
    Write(c);
  }

  void Write(Conn* c) {
    c->tls_want_read = false;
    if (!Flush(*c)) return Close(c);
    if (c->out_off < c->out.size()) return Arm(*c);
    Written(c);
  }

  // An answer is out: the next request, or the end.
  void Written(Conn* c) {
    c->out.clear();
    c->out_off = 0;
    if (c->close_after_write || stopping) return StartLinger(c);
    c->req = httplib::Request();
    c->phase = Phase::kIdle;
    c->deadline = Clock::now() + Seconds(limits().idle_timeout);
    c->scan = c->line_start = c->lines = 0;
    // A pipelined request may be here already (or in TLS's buffer).
    if (!c->in.empty() || (c->ssl && SSL_pending(c->ssl) > 0)) {
      uint64_t id = c->id;
      Parse(c);
      if (conns.count(id) && c->phase != Phase::kProcessing && c->phase != Phase::kWriting &&
          c->phase != Phase::kLinger)
        Read(c);
      return;
    }
    Arm(*c);
  }

  // Half-closes and reads what the client still sends for a moment, so that
  // unread request bytes do not make the kernel reset the connection before
  // the client read the answer.
  void StartLinger(Conn* c) {
    if (c->ssl) {
      ERR_clear_error();
      SSL_shutdown(c->ssl);
    }
    shutdown(c->fd, SHUT_WR);
    c->phase = Phase::kLinger;
    c->deadline = Clock::now() + kLingerTime;
    c->in.clear();
    Linger(c);
  }

  void Linger(Conn* c) {
    char buf[kReadChunk];
    for (;;) {
      ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
      if (r > 0) {
        c->discarded += static_cast<size_t>(r);
        if (c->discarded > limits().max_body_bytes + (1 << 16)) return Close(c);
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return Arm(*c);
      return Close(c);  // end of stream or error
    }
  }

  void Read(Conn* c) {
    c->tls_want_write = false;
    char buf[kReadChunk];
    for (;;) {
      ssize_t r = RawRead(*c, buf, sizeof(buf));
      if (r == -1) return Arm(*c);
      if (r <= 0) {
        // The client is gone (or sent a broken TLS record): nothing to answer.
        return Close(c);
      }
      c->in.append(buf, static_cast<size_t>(r));
      uint64_t id = c->id;
      Parse(c);
      if (!conns.count(id)) return;  // answered and closed
      if (c->phase == Phase::kProcessing || c->phase == Phase::kWriting ||
          c->phase == Phase::kLinger)
        return;
    }
  }

  // Advances the request on `c` as far as its bytes go.
  void Parse(Conn* c) {
    if (c->phase == Phase::kIdle) {
      // Blank lines before a request are allowed (RFC 9112 2.2).
      size_t skip = 0;
      while (skip < c->in.size() && (c->in[skip] == '\r' || c->in[skip] == '\n')) ++skip;
      c->in.erase(0, skip);
      if (c->in.empty()) return;
      // From its first byte, a head has head_timeout in all, however its
      // bytes trickle in.
      c->phase = Phase::kHead;
      c->deadline = Clock::now() + Seconds(limits().head_timeout);
      c->scan = c->line_start = c->lines = 0;
    }
    if (c->phase == Phase::kHead) {
      size_t head_end = std::string::npos;
      while (c->scan < c->in.size()) {
        size_t nl = c->in.find('\n', c->scan);
        size_t upto = nl == std::string::npos ? c->in.size() : nl;
        size_t line_len = upto - c->line_start;
        size_t line_max = c->lines == 0 ? limits().max_request_line : limits().max_header_bytes;
        if (line_len > line_max + 1) {
          if (c->lines == 0) {
            return Reject(
                c, 414,
                fmt::format("the request line is longer than {} bytes", limits().max_request_line),
                "max-request-line");
          }
          return Reject(c, 431,
                        fmt::format("a header is longer than {} bytes", limits().max_header_bytes),
                        "max-header-bytes");
        }
        if (nl == std::string::npos) {
          c->scan = c->in.size();
          break;
        }
        bool blank = line_len == 0 || (line_len == 1 && c->in[c->line_start] == '\r');
        c->scan = nl + 1;
        c->line_start = nl + 1;
        if (blank) {
          head_end = nl + 1;
          break;
        }
        if (++c->lines > limits().max_headers + 1) {
          return Reject(c, 431, fmt::format("more than {} headers", limits().max_headers),
                        "max-headers");
        }
      }
      if (head_end == std::string::npos && c->in.size() > limits().max_head_bytes) {
        return Reject(
            c, 431,
            fmt::format("the request head is larger than {} bytes", limits().max_head_bytes),
            "max-head-bytes");
      }
      if (head_end == std::string::npos) return;
      if (head_end > limits().max_head_bytes) {
        return Reject(
            c, 431,
            fmt::format("the request head is larger than {} bytes", limits().max_head_bytes),
            "max-head-bytes");
      }
      std::string head = c->in.substr(0, head_end);
      c->in.erase(0, head_end);
      if (!ParseHead(c, head)) return;
      if (c->phase != Phase::kBody) return Complete(c);
    }
    if (c->phase == Phase::kBody) {
      if (!c->chunked) {
        size_t take = std::min(c->body_left, c->in.size());
        c->req.body.append(c->in, 0, take);
        c->in.erase(0, take);
        c->body_left -= take;
        if (c->body_left == 0) Complete(c);
        return;
      }
      ParseChunks(c);
    }
  }

  // The request line and headers (`head` ends with its blank line). Returns
  // false if it answered the request itself.
  bool ParseHead(Conn* c, std::string_view head) {
    std::vector<std::string_view> lines;
    while (!head.empty()) {
      auto nl = head.find('\n');
      std::string_view line = head.substr(0, nl);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      lines.push_back(line);
      if (nl == std::string_view::npos) break;
      head.remove_prefix(nl + 1);
    }
    if (!lines.empty() && lines.back().empty()) lines.pop_back();
    if (lines.empty()) {
      Reject(c, 400, "no request line");
      return false;
    }
    std::string_view rl = lines[0];
    auto sp1 = rl.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : rl.find(' ', sp1 + 1);
    if (sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
        rl.find(' ', sp2 + 1) != std::string_view::npos) {
      Reject(c, 400, "malformed request line");
      return false;
    }
    std::string_view method = rl.substr(0, sp1);
    std::string_view target = rl.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = rl.substr(sp2 + 1);
    for (char ch : method) {
      if (!IsTokenChar(static_cast<unsigned char>(ch))) {
        Reject(c, 400, "malformed request method");
        return false;
      }
    }
    if (method.empty() || target.empty()) {
      Reject(c, 400, "malformed request line");
      return false;
    }
    c->req.method = std::string(method);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") {
      if (version.substr(0, 5) == "HTTP/") {
        Reject(c, 505, "only HTTP/1.0 and HTTP/1.1 are served");
      } else {
        Reject(c, 400, "malformed request line");
      }
      return false;
    }
    c->req.version = std::string(version);
    for (char ch : target) {
      auto u = static_cast<unsigned char>(ch);
      if (u < 0x21 || u == 0x7f) {
        Reject(c, 400, "control characters in the request target");
        return false;
      }
    }
    c->req.target = std::string(target);
    // Absolute form (a proxy's): only the path and query count.
    if (target.substr(0, 7) == "http://" || target.substr(0, 8) == "https://") {
      auto slash = target.find('/', target.find("//") + 2);
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    if (target.front() != '/' && target != "*") {
      Reject(c, 400, "the request target must be a path");
      return false;
    }
    if (auto hash = target.find('#'); hash != std::string_view::npos)
      target = target.substr(0, hash);
    auto qm = target.find('?');
    c->req.path = PercentDecode(target.substr(0, qm), false);
    if (qm != std::string_view::npos) ParseQuery(target.substr(qm + 1), c->req.params);

    std::string_view content_length, transfer_encoding, connection, expect;
    int content_length_count = 0;
    for (size_t i = 1; i < lines.size(); ++i) {
      std::string_view line = lines[i];
      if (line.front() == ' ' || line.front() == '\t') {
        Reject(c, 400, "folded header lines are not accepted");
        return false;
      }
      auto colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        Reject(c, 400, "malformed header line");
        return false;
      }
      std::string_view name = line.substr(0, colon);
      for (char ch : name) {
        if (!IsTokenChar(static_cast<unsigned char>(ch))) {
          Reject(c, 400, "malformed header name");
          return false;
        }
      }
      std::string_view value = Trim(line.substr(colon + 1));
      for (char ch : value) {
        auto u = static_cast<unsigned char>(ch);
        if ((u < 0x20 && u != '\t') || u == 0x7f) {
          Reject(c, 400, "control characters in a header value");
          return false;
        }
      }
      if (IEquals(name, "Content-Length")) {
        if (content_length_count++ > 0 && value != content_length) {
          Reject(c, 400, "conflicting Content-Length headers");
          return false;
        }
        content_length = value;
      } else if (IEquals(name, "Transfer-Encoding")) {
        if (!transfer_encoding.empty()) {
          Reject(c, 400, "more than one Transfer-Encoding header");
          return false;
        }
        transfer_encoding = value;
      } else if (IEquals(name, "Connection")) {
        connection = value;
      } else if (IEquals(name, "Expect")) {
        expect = value;
      }
      c->req.headers.emplace(std::string(name), std::string(value));
    }
    c->req.remote_addr = c->peer;
    c->req.remote_port = c->peer_port;
    c->head_request = c->req.method == "HEAD";
    bool http10 = version == "HTTP/1.0";
    c->keep_alive = http10 ? ListHas(connection, "keep-alive") : !ListHas(connection, "close");
    if (c->served + 1 >= limits().max_requests_per_connection) c->keep_alive = false;

    c->chunked = false;
    c->body_left = 0;
    if (!transfer_encoding.empty()) {
      // Both framings at once is how requests are smuggled past proxies.
      if (content_length_count > 0) {
        Reject(c, 400, "Content-Length and Transfer-Encoding together");
        return false;
      }
      if (!IEquals(transfer_encoding, "chunked") || http10) {
        Reject(c, 400, "the only Transfer-Encoding accepted is chunked (HTTP/1.1)");
        return false;
      }
      c->chunked = true;
      c->chunk_state = ChunkState::kSize;
      c->trailer_bytes = 0;
    } else if (content_length_count > 0) {
      if (content_length.empty() || content_length.size() > 18 ||
          content_length.find_first_not_of("0123456789") != std::string_view::npos) {
        Reject(c, 400, "malformed Content-Length");
        return false;
      }
      c->body_left = std::stoull(std::string(content_length));
      if (c->body_left > limits().max_body_bytes) {
        Reject(c, 413,
               fmt::format("the request body is larger than {} bytes", limits().max_body_bytes),
               "max-body-bytes");
        return false;
      }
    }
    c->expect_continue = false;
    if (!expect.empty()) {
      if (!IEquals(expect, "100-continue")) {
        Reject(c, 417, "the only expectation served is 100-continue");
        return false;
      }
      c->expect_continue = true;
    }
    if (c->chunked || c->body_left > 0) {
      c->phase = Phase::kBody;
      c->deadline = Clock::now() + Seconds(limits().body_timeout);
      if (c->expect_continue && c->in.empty() && !http10) {
        // Best effort: a client that does not get it sends the body anyway
        // after a moment.
        static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        RawWrite(*c, kContinue, sizeof(kContinue) - 1);
      }
    } else {
      c->phase = Phase::kHead;  // complete without a body
    }
    return true;
  }

  void ParseChunks(Conn* c) {
    size_t pos = 0;
    auto& in = c->in;
    for (;;) {
      if (c->chunk_state == ChunkState::kSize || c->chunk_state == ChunkState::kDataEnd ||
          c->chunk_state == ChunkState::kTrailer) {
        size_t nl = in.find('\n', pos);
        if (nl == std::string::npos) {
          if (in.size() - pos > kMaxChunkLine) {
            in.clear();
            return Reject(c, 400, "malformed chunked body");
          }
          break;
        }
        std::string_view line(in.data() + pos, nl - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        pos = nl + 1;
        if (c->chunk_state == ChunkState::kDataEnd) {
          if (!line.empty()) {
            in.clear();
            return Reject(c, 400, "malformed chunked body");
          }
          c->chunk_state = ChunkState::kSize;
          continue;
        }
        if (c->chunk_state == ChunkState::kTrailer) {
          if (line.empty()) {
            in.erase(0, pos);
            return Complete(c);
          }
          c->trailer_bytes += line.size();
          if (c->trailer_bytes > limits().max_header_bytes) {
            in.clear();
            return Reject(c, 431, "chunked trailers too large", "max-header-bytes");
          }
          continue;
        }
        std::string_view size = line.substr(0, line.find(';'));
        size = Trim(size);
        if (size.empty() || size.size() > 15) {
          in.clear();
          return Reject(c, 400, "malformed chunk size");
        }
        size_t n = 0;
        for (char ch : size) {
          int v = HexValue(ch);
          if (v < 0) {
            in.clear();
            return Reject(c, 400, "malformed chunk size");
          }
          n = n * 16 + static_cast<size_t>(v);
        }
        if (n == 0) {
          c->chunk_state = ChunkState::kTrailer;
          continue;
        }
        if (c->req.body.size() + n > limits().max_body_bytes) {
          in.clear();
          return Reject(
              c, 413,
              fmt::format("the request body is larger than {} bytes", limits().max_body_bytes),
              "max-body-bytes");
        }
        c->chunk_left = n;
        c->chunk_state = ChunkState::kData;
      } else {  // kData
        size_t take = std::min(c->chunk_left, in.size() - pos);
        if (take == 0) break;
        c->req.body.append(in, pos, take);
        pos += take;
        c->chunk_left -= take;
        if (c->chunk_left == 0) c->chunk_state = ChunkState::kDataEnd;
      }
    }
    in.erase(0, pos);
  }

  void Complete(Conn* c) {
    c->phase = Phase::kProcessing;
    {
      std::lock_guard<std::mutex> lock(mu);
      jobs.push_back(c);
    }
    cv.notify_one();
  }

  void HandleCompletions() {
    std::vector<Completion> done;
    {
      std::lock_guard<std::mutex> lock(mu);
      done.swap(completions);
    }
    for (const auto& d : done) {
      auto it = conns.find(d.id);
      if (it == conns.end()) continue;
      Conn* c = it->second.get();
      ++c->served;
      if (d.failed) {
        Close(c);
      } else if (d.written) {
        Written(c);
      } else {
        c->phase = Phase::kWriting;
        c->deadline = Clock::now() + Seconds(limits().write_timeout);
        Arm(*c);
      }
    }
  }

  void Sweep() {
    auto now = Clock::now();
    std::vector<Conn*> expired;
    for (auto& [id, c] : conns) {
      if (c->phase != Phase::kProcessing && now >= c->deadline) expired.push_back(c.get());
    }
    for (Conn* c : expired) {
      switch (c->phase) {
        case Phase::kHead:
          Reject(c, 408,
                 fmt::format("the request head took longer than {} s", limits().head_timeout),
                 "head-timeout");
          break;
        case Phase::kBody:
          Reject(c, 408,
                 fmt::format("the request body took longer than {} s", limits().body_timeout),
                 "body-timeout");
          break;
        default:
          Close(c);  // idle, a handshake, an answer not taken, a lingering close
      }
    }
    if (listening_paused && now >= resume_accept && !stopping) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenId;
      epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
      listening_paused = false;
    }
  }

  // ---- the workers ----
  std::string Serialize(const httplib::Response& res, bool head_request, bool close) {
    int status = res.status < 100 ? 500 : res.status;
    std::string out = fmt::format("HTTP/1.1 {} {}\r\n", status, Reason(status));
    for (const auto& [k, v] : res.headers) {
      if (IEquals(k, "Content-Length") || IEquals(k, "Connection") ||
          IEquals(k, "Transfer-Encoding"))
        continue;
      out += k;
      out += ": ";
      out += v;
      out += "\r\n";
    }
    bool no_body = status == 204 || status == 304 || status < 200;
    if (!no_body) out += fmt::format("Content-Length: {}\r\n", res.body.size());
    out += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
    if (!no_body && !head_request) out += res.body;
    return out;
  }

  void Work() {
    for (;;) {
      Conn* c = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return workers_stop || !jobs.empty(); });
        if (jobs.empty()) return;
        c = jobs.front();
        jobs.pop_front();
      }
      httplib::Response res;
      try {
        handler(c->req, res);
      } catch (const std::exception& e) {
        spdlog::error("{} {}: {}", c->req.method, c->req.path, e.what());
        res = httplib::Response();
        res.status = 500;
        res.set_content(ErrorBody("internal error (logged)", ""), "application/json");
      }
      bool close = !c->keep_alive || stopping;
      c->close_after_write = close;
      c->out = Serialize(res, c->head_request, close);
      c->out_off = 0;
      c->req.body.clear();
      c->req.body.shrink_to_fit();
      bool ok = Flush(*c);
      Completion done{c->id, ok && c->out_off == c->out.size(), !ok};
      {
        std::lock_guard<std::mutex> lock(mu);
        completions.push_back(done);
      }
      Wake();
    }
  }

  void Run() {
    for (int i = 0; i < std::max(1, options.threads); ++i) {
      workers.emplace_back([this] { Work(); });
    }
    std::vector<epoll_event> events(256);
    auto last_sweep = Clock::now();
    bool closed_listener = false;
    for (;;) {
      int n = epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()),
                         static_cast<int>(kSweepEvery.count()));
      for (int i = 0; i < n; ++i) {
        uint64_t id = events[i].data.u64;
        if (id == kListenId) {
          if (!stopping) Accept();
          continue;
        }
        if (id == kWakeId) {
          uint64_t v;
          ssize_t r = read(wake_fd, &v, sizeof(v));
          (void)r;
          HandleCompletions();
          continue;
        }
        auto it = conns.find(id);
        if (it == conns.end()) continue;
        Conn* c = it->second.get();
        switch (c->phase) {
          case Phase::kHandshake:
            Handshake(c);
            break;
          case Phase::kIdle:
          case Phase::kHead:
          case Phase::kBody:
            Read(c);
            break;
          case Phase::kWriting:
            Write(c);
            break;
          case Phase::kLinger:
            Linger(c);
            break;
          case Phase::kProcessing:
            break;
        }
      }
      auto now = Clock::now();
      if (now - last_sweep >= kSweepEvery) {
        Sweep();
        last_sweep = now;
      }
      if (stopping) {
        if (!closed_listener) {
          epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
          close(listen_fd);
          listen_fd = -1;
          closed_listener = true;
        }
        // Connections without a request at a worker or an answer on its way
        // have nothing in flight.
        std::vector<Conn*> idle;
        bool busy = false;
        for (auto& [cid, c] : conns) {
          if (c->phase == Phase::kProcessing || c->phase == Phase::kWriting) {
            busy = true;
          } else {
            idle.push_back(c.get());
          }
        }
        for (Conn* c : idle) Close(c);
        if (!busy) break;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      workers_stop = true;
    }
    cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
  }
};

HttpServer::HttpServer(HttpServerOptions options, Handler handler, RejectObserver observer)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  impl_->observer = std::move(observer);
}

HttpServer::~HttpServer() = default;

std::string HttpServer::Listen(const ListenAddress& address) { return impl_->Listen(address); }

void HttpServer::Run() { impl_->Run(); }

void HttpServer::Stop() {
  impl_->stopping = true;
  if (impl_->wake_fd >= 0) impl_->Wake();
}

bool HttpServer::tls() const { return impl_->ssl_ctx != nullptr; }

}  // namespace taskmill::api::http
