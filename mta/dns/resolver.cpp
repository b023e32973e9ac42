#include "mta/dns/resolver.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <mutex>

namespace postern::dns {
namespace {

std::once_flag g_init;

Answer::Kind kind_of(int status) {
  if (status == ARES_ENOTFOUND) return Answer::kNotFound;
  return Answer::kTempFail;
}

struct AddrCtx {
  Resolver* r;
  std::function<void(Answer)> cb;
  std::string host;
  uint16_t port;
};

void set_port(sockaddr_storage& ss, uint16_t port) {
  if (ss.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  else reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
}

}  // namespace

std::string addr_to_string(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &s->sin_addr, buf, sizeof buf);
    port = ntohs(s->sin_port);
    return std::string(buf) + ":" + std::to_string(port);
  }
  auto* s6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof buf);
  port = ntohs(s6->sin6_port);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

Resolver::Resolver(uv_loop_t* loop, const std::vector<std::string>& servers) : loop_(loop) {
  std::call_once(g_init, [] { ares_library_init(ARES_LIB_INIT_ALL); });
  ares_options opts{};
  opts.sock_state_cb = sock_state_cb;
  opts.sock_state_cb_data = this;
  opts.timeout = 2000;  // ms per try
  opts.tries = 2;
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  int r = ares_init_options(&channel_, &opts, mask);
  if (r != ARES_SUCCESS) {
    init_error_ = std::string("c-ares init: ") + ares_strerror(r);
    channel_ = nullptr;
    return;
  }
  if (!servers.empty()) {
    std::string csv;
    for (auto& s : servers) csv += (csv.empty() ? "" : ",") + s;
    r = ares_set_servers_ports_csv(channel_, csv.c_str());
    if (r != ARES_SUCCESS) init_error_ = "bad DNS servers '" + csv + "': " + ares_strerror(r);
  }
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

Resolver::~Resolver() { close(); }

void Resolver::close() {
  if (channel_) {
    ares_destroy(channel_);  // pending callbacks run with ARES_EDESTRUCTION
    channel_ = nullptr;
  }
  for (auto& [fd, p] : polls_)
    uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  polls_.clear();
  if (timer_) {
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
}

void Resolver::sock_state_cb(void* data, ares_socket_t fd, int readable, int writable) {
  auto* self = static_cast<Resolver*>(data);
  auto it = self->polls_.find(fd);
  if (!readable && !writable) {
    if (it != self->polls_.end()) {
      uv_poll_stop(it->second);
      uv_close(reinterpret_cast<uv_handle_t*>(it->second), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      self->polls_.erase(it);
    }
    return;
  }
  uv_poll_t* p;
  if (it == self->polls_.end()) {
    p = new uv_poll_t;
    uv_poll_init_socket(self->loop_, p, fd);
    p->data = self;
    self->polls_[fd] = p;
  } else {
    p = it->second;
  }
  int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  uv_poll_start(p, events, [](uv_poll_t* h, int status, int ev) {
    auto* r = static_cast<Resolver*>(h->data);
    ares_socket_t s = h->io_watcher.fd;
    if (!r->channel_) return;
    if (status < 0) {
      ares_process_fd(r->channel_, s, s);
    } else {
      ares_process_fd(r->channel_, (ev & UV_READABLE) ? s : ARES_SOCKET_BAD,
                      (ev & UV_WRITABLE) ? s : ARES_SOCKET_BAD);
    }
    r->rearm_timer();
  });
}

void Resolver::rearm_timer() {
  if (!channel_ || !timer_) return;
  timeval tv{};
  timeval* t = ares_timeout(channel_, nullptr, &tv);
  if (!t) {
    uv_timer_stop(timer_);
    return;
  }
  uint64_t ms = static_cast<uint64_t>(t->tv_sec) * 1000 + static_cast<uint64_t>(t->tv_usec) / 1000 + 1;
  uv_timer_start(timer_, [](uv_timer_t* h) {
    auto* r = static_cast<Resolver*>(h->data);
    if (!r->channel_) return;
    ares_process_fd(r->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    r->rearm_timer();
  }, ms, 0);
}

void Resolver::resolve_host(const std::string& host, uint16_t port, std::function<void(Answer)> cb) {
  // A literal address needs no lookup.
  sockaddr_storage ss{};
  auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &s4->sin_addr) == 1) {
    ss.ss_family = AF_INET;
  } else if (inet_pton(AF_INET6, host.c_str(), &s6->sin6_addr) == 1) {
    ss.ss_family = AF_INET6;
  }
  if (ss.ss_family != 0) {
    set_port(ss, port);
    Answer a;
    a.hosts.push_back({host, 0, {ss}});
    cb(std::move(a));
    return;
  }
  if (!channel_) {
    cb(Answer{Answer::kTempFail, init_error_, {}});
    return;
  }
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = ARES_AI_NOSORT;
  auto* ctx = new AddrCtx{this, std::move(cb), host, port};
  ares_getaddrinfo(channel_, host.c_str(), nullptr, &hints,
                   [](void* arg, int status, int, ares_addrinfo* res) {
                     std::unique_ptr<AddrCtx> c(static_cast<AddrCtx*>(arg));
                     if (status == ARES_EDESTRUCTION) {
                       if (res) ares_freeaddrinfo(res);
                       return;
                     }
                     Answer a;
                     if (status != ARES_SUCCESS) {
                       a.kind = kind_of(status);
                       a.error = "lookup of " + c->host + ": " + ares_strerror(status);
                     } else {
                       Host h{c->host, 0, {}};
                       for (auto* n = res->nodes; n; n = n->ai_next) {
                         sockaddr_storage sa{};
                         std::memcpy(&sa, n->ai_addr, std::min<size_t>(n->ai_addrlen, sizeof sa));
                         set_port(sa, c->port);
                         h.addrs.push_back(sa);
                       }
                       // IPv4 first: the loopback test world and most MX hosts are reachable so.
                       std::stable_sort(h.addrs.begin(), h.addrs.end(), [](auto& x, auto& y) {
                         return x.ss_family == AF_INET && y.ss_family != AF_INET;
                       });
                       if (h.addrs.empty()) {
                         a.kind = Answer::kNotFound;
                         a.error = "no address for " + c->host;
                       } else {
                         a.hosts.push_back(std::move(h));
                       }
                     }
                     if (res) ares_freeaddrinfo(res);
                     c->cb(std::move(a));
                   },
                   ctx);
  rearm_timer();
}

void Resolver::resolve_mx(const std::string& domain, uint16_t port, std::function<void(Answer)> cb) {
  if (!channel_) {
    cb(Answer{Answer::kTempFail, init_error_, {}});
    return;
  }
  struct MxCtx {
    Resolver* r;
    std::string domain;
    uint16_t port;
    std::function<void(Answer)> cb;
  };
  auto* ctx = new MxCtx{this, domain, port, std::move(cb)};
  ares_query(channel_, domain.c_str(), ns_c_in, ns_t_mx,
             [](void* arg, int status, int, unsigned char* abuf, int alen) {
               std::unique_ptr<MxCtx> c(static_cast<MxCtx*>(arg));
               if (status == ARES_EDESTRUCTION) return;
               if (status == ARES_ENODATA) {  // no MX: the domain itself is the exchanger
                 c->r->resolve_host(c->domain, c->port, std::move(c->cb));
                 return;
               }
               if (status != ARES_SUCCESS) {
                 c->cb(Answer{kind_of(status), "MX lookup of " + c->domain + ": " + ares_strerror(status), {}});
                 return;
               }
               ares_mx_reply* mx = nullptr;
               int pr = ares_parse_mx_reply(abuf, alen, &mx);
               if (pr != ARES_SUCCESS) {
                 if (pr == ARES_ENODATA) {
                   c->r->resolve_host(c->domain, c->port, std::move(c->cb));
                 } else {
                   c->cb(Answer{Answer::kTempFail, "MX reply for " + c->domain + ": " + ares_strerror(pr), {}});
                 }
                 return;
               }
               std::vector<Host> hosts;
               bool null_mx = false;
               for (auto* m = mx; m; m = m->next) {
                 std::string h = m->host ? m->host : "";
                 if (h.empty() || h == ".") null_mx = true;
                 else hosts.push_back({h, m->priority, {}});
               }
               ares_free_data(mx);
               if (null_mx && hosts.empty()) {
                 c->cb(Answer{Answer::kNullMx, c->domain + " does not accept mail (null MX)", {}});
                 return;
               }
               std::stable_sort(hosts.begin(), hosts.end(), [](auto& a, auto& b) { return a.preference < b.preference; });
               // Look up every exchanger, then answer once, keeping the preference order.
               struct Gather {
                 std::vector<Host> hosts;
                 size_t left;
                 std::string errors;
                 std::function<void(Answer)> cb;
               };
               auto g = std::make_shared<Gather>(Gather{hosts, hosts.size(), "", std::move(c->cb)});
               for (size_t i = 0; i < hosts.size(); ++i) {
                 c->r->resolve_host(hosts[i].name, c->port, [g, i](Answer a) {
                   if (a.kind == Answer::kOk) g->hosts[i].addrs = a.hosts[0].addrs;
                   else g->errors += (g->errors.empty() ? "" : "; ") + a.error;
                   if (--g->left > 0) return;
                   Answer out;
                   for (auto& h : g->hosts)
                     if (!h.addrs.empty()) out.hosts.push_back(h);
                   if (out.hosts.empty()) {
                     out.kind = Answer::kTempFail;
                     out.error = "no address for any MX host: " + g->errors;
                   }
                   g->cb(std::move(out));
                 });
               }
             },
             ctx);
  rearm_timer();
}

}  // namespace postern::dns
