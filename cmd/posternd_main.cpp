// posternd_main.cpp — posternd: the control thread. Loads the config, sets up logging, the spool
// and the TLS contexts, starts one worker loop per core, and handles signals: SIGHUP reloads the
// config and certificates without dropping a session, SIGTERM/SIGINT drain and exit.
//
// Start-up order matters: the signal handlers come first (a SIGHUP during initdb must not kill
// the daemon: it is acted on once start-up is done); the state directory is locked before the
// spool is opened (one posternd per state directory); everything a worker calls back into
// (on_queued, the scheduler) is in place before the first worker starts accepting. Started as
// root, posternd becomes server.user before it creates anything or starts a thread, keeping only
// CAP_NET_BIND_SERVICE, and gives that up in every thread once every listener is bound
// (cmd/privilege.h).
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "admin/cert_api.h"
#include "admin/control_plane.h"
#include "base/clock.h"
#include "base/log.h"
#include "cmd/privilege.h"
#include "conf/config.h"
#include "conf/recipient_table.h"
#include "mta/fd_budget.h"
#include "mta/queue/scheduler.h"
#include "mta/queue/spool.h"
#include "mta/runtime.h"
#include "mta/worker.h"
#include "policy/recipient_map.h"
#include "scan/scan_service.h"
#include "tls/tls_roles.h"

namespace postern {
namespace {

struct Daemon {
  mta::Runtime rt;
  std::unique_ptr<queue::Spool> spool;
  std::vector<std::unique_ptr<mta::Worker>> workers;
  uv_loop_t* loop = uv_default_loop();
  uv_signal_t sighup{}, sigterm{}, sigint{};
  uv_timer_t tick{};
  uv_timer_t drain_watch{};
  std::unique_ptr<mta::Scheduler> scheduler;
  std::unique_ptr<admin::ControlPlane> control;
  std::unique_ptr<scan::ScanService> scan;  // the scanning gate's engine, pool and freshclam source
  bool draining = false;
  bool signals_open = false;
  int state_lock = -1;
  uint64_t config_reload_failures = 0;
  std::string run_as;  // the user posternd switched to after binding ("" = no switch)
  policy::RecipientMapWatch recipient_map_watch;
  ~Daemon();
};

Daemon* g_daemon = nullptr;

// The self-signed defaults made at first start: default_mta (inbound and outbound MTA roles)
// and default_console (admin and EUQ consoles; SAN 127.0.0.1 so posternctl can verify it).
// Both default pairs exist whatever the roles name: the store keeps them as default_mta and
// default_console (seed 000's workaround A assigns default_mta), and a role that names the
// default serves it. A file an admin names is never made here: a missing one is an error.
std::string ensure_default_cert(const Config& cfg) {
  std::string dir = cfg.state_dir + "/certs/";
  std::string err = tls::ensure_self_signed(dir + "default_console.crt", dir + "default_console.key", cfg.hostname,
                                            825, "IP:127.0.0.1");
  if (!err.empty()) return err;
  return tls::ensure_self_signed(dir + "default_mta.crt", dir + "default_mta.key", cfg.hostname);
}

// Raises the descriptor limit to what the configuration needs, or says why it cannot.
void apply_fd_budget(Daemon& d, const Config& cfg) {
  auto b = mta::fit_fd_budget(cfg);
  d.rt.session_limit = b.session_limit;
  if (!b.warning.empty()) spdlog::warn("{}", b.warning);
  else spdlog::info("descriptors: RLIMIT_NOFILE={} needed={} sessions={}", b.soft, b.needed, b.session_limit);
}

// Listeners are bound once, at start. After the switch to server.user a restart as root (or
// under systemd, with CAP_NET_BIND_SERVICE) is what binds a new port below 1024: say so.
void warn_listen_change(const Daemon& d, const Config& old, const Config& next) {
  auto addrs = [](const Config& c) {
    std::vector<std::string> out;
    for (auto& a : c.smtp.listen) out.push_back(a.host + ":" + std::to_string(a.port));
    out.push_back(c.admin_listen);
    out.push_back(c.euq_listen);
    return out;
  };
  if (addrs(old) == addrs(next)) return;
  bool low = false;
  for (auto& a : next.smtp.listen) low = low || a.port < 1024;
  for (const std::string* l : {&next.admin_listen, &next.euq_listen})
    if (ListenAddr a; parse_listen(*l, a) && a.port < 1024) low = true;
  spdlog::warn("reload: smtp.listen, admin.listen and euq.listen take effect at restart{}",
               !d.run_as.empty() && low ? "; posternd now runs as " + d.run_as +
                                              " and cannot bind ports below 1024 itself: restart it as root (or under "
                                              "systemd with CAP_NET_BIND_SERVICE)"
                                        : "");
}

// SIGHUP, the admin API and NOTIFY from another node: one code path for every reload trigger.
// Returns "" or what was refused.
std::string reload(Daemon& d, const std::string& why) {
  std::string failures;
  spdlog::info("reload requested by {}", why);
  auto old = d.rt.config.load();
  std::shared_ptr<const Config> next;
  try {
    auto fresh = std::make_shared<Config>(load_config(old->path));
    // The state directory is where this process's spool, lock, certificates and cluster live:
    // it changes at restart only. Keep it, or a reload (a config being rewritten, even) would
    // make and serve certificates somewhere else.
    if (fresh->state_dir != old->state_dir) {
      spdlog::warn("reload: server.state_dir {} takes effect at restart; {} stays in use", esc(fresh->state_dir),
                   esc(old->state_dir));
      fresh->state_dir = old->state_dir;
    }
    next = std::move(fresh);
  } catch (const ConfigError& e) {
    ++d.config_reload_failures;
    spdlog::error("reload: config refused, keeping the running one: {}", e.what());
    failures = std::string("config: ") + e.what();
    next = old;
  }
  if (next != old) {
    if (next->smtp.listen.size() != old->smtp.listen.size() || next->workers != old->workers ||
        next->queue.sync_per_file != old->queue.sync_per_file)
      spdlog::warn("reload: smtp.listen, server.workers and queue.sync take effect at restart");
    warn_listen_change(d, *old, *next);
    if (next->user != old->user || next->group != old->group)
      spdlog::warn("reload: server.user and server.group take effect at restart");
    if (auto err = ensure_default_cert(*next); !err.empty()) spdlog::error("reload: {}", err);
    d.rt.config.publish(next);
    d.recipient_map_watch.reset(next->relay.recipient_map);  // read just now
    apply_fd_budget(d, *next);
    if (d.scan) d.scan->configure(next->scan);
    spdlog::info("reload: config applied from {}", next->path);
  }
  for (tls::Role r : tls::kRoles)  // a role the store binds is rebuilt from its binding, else from its files
    if (auto err = d.control && d.control->certs() && d.control->certs()->serves(r, *next)
                       ? d.control->certs()->reload_role(r, *next)
                       : d.rt.tls.reload(r, *next);
        !err.empty())
      failures += std::string(failures.empty() ? "" : "; ") + tls::role_name(r) + " certificate refused: " + err;
  if (d.control && d.control->certs()) d.control->certs()->sync_file_entries();  // `cert list` shows the files served
  return failures;
}

void begin_drain(Daemon& d, const char* why);

// relay.recipient_map changed on disk (and held still for a second): only the map is read again
// and published with the running configuration; a bad map is refused and the old one serves.
void reload_recipient_map(Daemon& d) {
  auto cfg = d.rt.config.load();
  const std::string& path = cfg->relay.recipient_map;
  try {
    auto next = std::make_shared<Config>(*cfg);
    next->relay.recipients = std::make_shared<const RecipientTable>(load_recipient_table(path, "relay.recipient_map"));
    size_t n = next->relay.recipients->addresses.size() + next->relay.recipients->catch_all.size();
    d.rt.config.publish(std::shared_ptr<const Config>(std::move(next)));
    d.control->raise("RECIPIENT_MAP_RELOADED", "info", "relay.recipient_map " + esc(path) + " changed: " +
                     std::to_string(n) + " entries now");
  } catch (const ConfigError& e) {
    d.control->raise("RECIPIENT_MAP_REFUSED", "error",
                     std::string("relay.recipient_map changed and was refused, the old map serves: ") + e.what());
  }
}

// Installed before anything slow: libuv records a signal at once and runs its callback in the
// loop, which runs when start-up is done; until then no signal is fatal.
void open_signals(Daemon& d) {
  uv_signal_init(d.loop, &d.sighup);
  uv_signal_start(&d.sighup, [](uv_signal_t*, int) { g_daemon->control->reload("SIGHUP"); }, SIGHUP);
  uv_signal_init(d.loop, &d.sigterm);
  uv_signal_start(&d.sigterm, [](uv_signal_t*, int) { begin_drain(*g_daemon, "SIGTERM"); }, SIGTERM);
  uv_signal_init(d.loop, &d.sigint);
  uv_signal_start(&d.sigint, [](uv_signal_t*, int) { begin_drain(*g_daemon, "SIGINT"); }, SIGINT);
  d.signals_open = true;
}

void close_signals(Daemon& d) {
  if (!d.signals_open) return;
  d.signals_open = false;
  for (auto* h : {&d.sighup, &d.sigterm, &d.sigint}) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
}

Daemon::~Daemon() {
  close_signals(*this);  // a signal after this must not find the handles
  if (state_lock >= 0) ::close(state_lock);
}

// One posternd per state directory (a second would share the spool and the private cluster):
// <state_dir>/posternd.pid, flock()ed for the life of the process, names its PID.
std::string lock_state_dir(Daemon& d, const std::string& dir) {
  std::string path = dir + "/posternd.pid";
  d.state_lock = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (d.state_lock < 0) return "cannot open " + path + ": " + std::strerror(errno);
  if (::flock(d.state_lock, LOCK_EX | LOCK_NB) != 0) {
    char buf[24] = {};
    ssize_t n = ::pread(d.state_lock, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::to_string(std::atol(buf)) : "?";
    return "another posternd (pid " + pid + ") is running with the state directory " + dir +
           ": stop it first (kill -TERM " + pid + "), or give this one its own server.state_dir";
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (::ftruncate(d.state_lock, 0) != 0 || ::pwrite(d.state_lock, pid.data(), pid.size(), 0) < 0)
    spdlog::warn("cannot write {}: {}", path, std::strerror(errno));
  return "";
}

// A start-up step failed: say so on stderr and in the log, in one line.
int start_failed(Daemon& d, const std::string& what) {
  priv::abandon();  // refused after the drop began: the saved root uid goes before the exit
  spdlog::critical("{}", what);
  std::cerr << "posternd: " << what << "\n";
  close_signals(d);
  return 1;
}

void begin_drain(Daemon& d, const char* why) {
  if (d.draining) return;
  d.draining = true;
  auto cfg = d.rt.config.load();
  spdlog::info("{}: draining, deadline {} ms", why, cfg->drain_timeout.count());
  for (auto& w : d.workers) w->drain(cfg->drain_timeout);
  close_signals(d);
  uv_close(reinterpret_cast<uv_handle_t*>(&d.tick), nullptr);
  // Keep the scheduler taking results until every worker has finished, then stop it.
  uv_timer_init(d.loop, &d.drain_watch);
  uv_timer_start(&d.drain_watch, [](uv_timer_t* t) {
    for (auto& w : g_daemon->workers)
      if (!w->finished()) return;
    g_daemon->scheduler->stop();
    g_daemon->control->stop();
    g_daemon->scan->stop();  // every scan has answered: the workers waited for them
    uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
  }, 50, 50);
}

int run(const std::string& config_path, const std::string& test_clock) {
  std::unique_ptr<OffsetFileClock> clock;  // outlives the daemon that reads it
  Daemon d;
  g_daemon = &d;
  open_signals(d);
  auto cfg = std::make_shared<const Config>(load_config(config_path));
  // The map's state as it was just read: a change from here on is a change (the watch's first poll,
  // a second later, would otherwise take a change made in that second as the state it started with).
  d.recipient_map_watch.reset(cfg->relay.recipient_map);
  namespace fs = std::filesystem;
  // Started as root: the state directory becomes server.user's, then posternd becomes that user
  // (keeping only CAP_NET_BIND_SERVICE until the listeners are bound), before any thread starts
  // and before anything is created, so everything it makes is the user's (cmd/privilege.h).
  priv::Target target;
  std::vector<priv::Note> notes;
  if (auto err = priv::plan(*cfg, target, notes); !err.empty()) return start_failed(d, err);
  if (target.drop) {
    if (auto err = priv::take_state_dir(*cfg, target, notes); !err.empty()) return start_failed(d, err);
    if (auto err = priv::begin(target); !err.empty()) return start_failed(d, "cannot switch to " + target.user + ": " + err);
  } else if (geteuid() != 0) {
    priv::clear_ambient();  // systemd's AmbientCapabilities: not for the private PostgreSQL
  }
  fs::create_directories(cfg->state_dir);
  std::string log_file = cfg->resolved_log_file();
  if (!log_file.empty()) fs::create_directories(fs::path(log_file).parent_path());
  setup_logging(log_file, cfg->log_level);
  if (target.drop) spdlog::info("privileges: started as root, running as {} once the listeners are bound", target.describe());
  if (geteuid() != 0)
    if (auto err = priv::check_access(*cfg, target); !err.empty()) return start_failed(d, err);
  priv::secure_modes(*cfg, geteuid() != 0, notes);
  for (auto& n : notes) spdlog::log(n.warn ? spdlog::level::warn : spdlog::level::info, "privileges: {}", n.text);

  if (auto err = lock_state_dir(d, cfg->state_dir); !err.empty()) return start_failed(d, err);
  d.rt.config.publish(cfg);
  if (!test_clock.empty()) {  // testing only: see base/clock.h
    clock = std::make_unique<OffsetFileClock>(test_clock);
    d.rt.clock = clock.get();
    spdlog::warn("test clock in use: time is shifted by the offset in {} (now {}s); never run a real MTA so",
                 test_clock, clock->offset().count() / 1'000'000'000);
  }
  d.rt.tls.set_clock(d.rt.clock);  // certificate dates by the injected clock
  apply_fd_budget(d, *cfg);
  if (auto err = ensure_default_cert(*cfg); !err.empty())
    return start_failed(d, "cannot create the default certificates: " + err);
  for (tls::Role r : tls::kRoles)
    if (r != tls::Role::kInboundMta || cfg->smtp.starttls)
      if (auto err = d.rt.tls.reload(r, *cfg); !err.empty())
        return start_failed(d, std::string("the ") + tls::role_name(r) + " certificate was refused: " + err);
  queue::SpoolOptions so;
  so.sync = cfg->queue.sync_per_file ? queue::SyncMode::kFile : queue::SyncMode::kSyncfs;
  so.clock = d.rt.clock;
  try {
    d.spool = std::make_unique<queue::Spool>(cfg->state_dir + "/queue", so);
  } catch (const std::exception& e) {  // the directory, or a kernel whose syncfs hides errors
    return start_failed(d, e.what());
  }
  d.rt.spool = d.spool.get();
  d.rt.spool_free_bytes = d.spool->free_bytes();

  d.scan = std::make_unique<scan::ScanService>(d.loop, cfg->scan);
  d.rt.scan = d.scan.get();
  d.rt.engines = &d.scan->engines();
  d.scan->tick(cfg->scan);  // the freshclam directory, before the first message

  unsigned n = cfg->workers ? cfg->workers : std::max(1u, std::thread::hardware_concurrency());
  try {
    for (unsigned i = 0; i < n; ++i) {
      d.workers.push_back(std::make_unique<mta::Worker>(d.rt, i));
      d.workers.back()->bind(cfg->smtp.listen);
    }
  } catch (const std::exception& e) {
    return start_failed(d, e.what());
  }
  std::vector<mta::Worker*> ws;
  for (auto& w : d.workers) ws.push_back(w.get());
  d.scheduler = std::make_unique<mta::Scheduler>(
      d.loop, d.rt, ws.size(), [ws](size_t i, delivery::DeliveryJob job, mta::Scheduler::Done done) {
        ws[i]->deliver(std::move(job), std::move(done));
      });
  d.rt.on_queued = [s = d.scheduler.get()](const Envelope& env) { s->submit(env); };
  d.spool->recover([&d](Envelope&& env) { d.scheduler->load(std::move(env)); });
  d.scheduler->loaded();
  // Only now: a message a worker commits finds on_queued and the scheduler in place.
  for (auto& w : d.workers) w->start();
  d.control = std::make_unique<admin::ControlPlane>(
      d.loop, d.rt, *d.scheduler,
      admin::ControlPlane::Hooks{[](const std::string& why) { return reload(*g_daemon, why); }});
  d.scan->set_event_sink([](const std::string& code, const std::string& text) {
    g_daemon->control->raise(code, "error", text);
  });
  std::string started_err;
  try {
    d.control->start();
  } catch (const std::exception& e) {
    started_err = e.what();
  }
  // Every listener is bound: the last privilege goes, in every thread.
  if (started_err.empty() && target.drop) {
    if (auto err = priv::finish(target); !err.empty()) {
      started_err = "privilege drop to " + target.user + " failed, refusing to run: " + err;
    } else {
      d.run_as = target.user;
      spdlog::info("privileges: running as {}; {}", target.user, priv::status_summary());
    }
  }
  if (!started_err.empty()) {
    start_failed(d, started_err);
    d.draining = true;
    d.control->stop();
    for (auto& w : d.workers) w->drain(std::chrono::milliseconds(0));
    d.scheduler->stop();
    d.scan->stop();
    uv_run(d.loop, UV_RUN_DEFAULT);
    for (auto& w : d.workers) w->join();
    return 1;
  }

  uv_timer_init(d.loop, &d.tick);
  uv_timer_start(&d.tick, [](uv_timer_t*) {
    auto& dm = *g_daemon;
    uint64_t free = dm.spool->free_bytes();
    // Short of space: the recycled-file pool gives its blocks back before mail is refused.
    if (free < dm.rt.config.load()->smtp.min_free_space && dm.spool->pool_size() > 0) {
      dm.spool->trim_pool();
      free = dm.spool->free_bytes();
    }
    dm.rt.spool_free_bytes = free;
    auto now_cfg = dm.rt.config.load();
    dm.rt.tls.tick(std::chrono::system_clock::now(), now_cfg->tls.ticket_key_rotation);
    if (dm.recipient_map_watch.poll(now_cfg->relay.recipient_map)) reload_recipient_map(dm);
    dm.scan->tick(now_cfg->scan);
  }, 1000, 1000);

  std::string listen;
  for (auto& a : cfg->smtp.listen) listen += (listen.empty() ? "" : ", ") + a.host + ":" + std::to_string(a.port);
  spdlog::info("posternd {} started pid={} workers={} listen={} state_dir={} queued={}", POSTERN_VERSION,
               getpid(), n, listen, cfg->state_dir, d.scheduler->size());
  std::cout << "posternd: SMTP (STARTTLS " << (cfg->smtp.starttls ? "on" : "off") << ") on " << listen
            << "; admin API https://" << cfg->admin_listen << "/api/v1/ (token in " << cfg->state_dir
            << "/admin.token); state in " << cfg->state_dir << "; log in " << (log_file.empty() ? "stderr" : log_file)
            << std::endl;

  uv_run(d.loop, UV_RUN_DEFAULT);
  for (auto& w : d.workers) w->join();
  d.scan->stop();  // every scan has answered by now (the workers waited for them)
  d.spool->stop();
  spdlog::info("posternd stopped");
  spdlog::default_logger()->flush();
  return 0;
}

}  // namespace
}  // namespace postern

int main(int argc, char** argv) {
  CLI::App app{"posternd - the Postern mail transfer agent and mail security gateway"};
  std::string config = "conf/postern.toml";
  std::string test_clock;
  bool check = false, print_listen = false;
  app.add_option("-c,--config", config, "configuration file")->capture_default_str();
  app.add_flag("--check", check, "validate the configuration and exit");
  app.add_option("--test-clock", test_clock,
                 "TESTING ONLY: shift the daemon's clock (retry schedules, queue lifetime, delay warnings, "
                 "DSN dates, queue IDs) by the offset in FILE, e.g. \"3600\", \"-90s\", \"6d\" (missing or "
                 "empty: 0); FILE is re-read at most every 100 ms. libuv timers and socket timeouts are not "
                 "shifted. Never use it on a real MTA.")
      ->type_name("FILE");
  app.add_flag("--print-listen", print_listen,
               "validate the configuration, print the addresses posternd listens on (\"smtp HOST:PORT\", "
               "\"admin HOST:PORT\", \"euq HOST:PORT\", one a line) and exit");
  app.set_version_flag("--version", std::string("posternd ") + POSTERN_VERSION);
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  try {
    if (print_listen) {
      auto cfg = postern::load_config(config);
      auto show = [](const std::string& h, unsigned port) {
        return (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + std::to_string(port);
      };
      for (auto& a : cfg.smtp.listen) std::cout << "smtp " << show(a.host, a.port) << "\n";
      postern::ListenAddr admin;
      if (postern::parse_listen(cfg.admin_listen, admin)) std::cout << "admin " << show(admin.host, admin.port) << "\n";
      if (postern::parse_listen(cfg.euq_listen, admin)) std::cout << "euq " << show(admin.host, admin.port) << "\n";
      return 0;
    }
    if (check) {
      postern::load_config(config);
      std::cout << config << ": configuration OK\n";
      return 0;
    }
    return postern::run(config, test_clock);
  } catch (const postern::ConfigError& e) {
    std::cerr << "posternd: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "posternd: fatal: " << e.what() << "\n";
    return 1;
  }
}
