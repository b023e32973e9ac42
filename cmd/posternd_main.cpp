// posternd_main.cpp — posternd: the control thread. Loads the config, sets up logging, the spool
// and the TLS contexts, starts one worker loop per core, and handles signals: SIGHUP reloads the
// config and certificates without dropping a session, SIGTERM/SIGINT drain and exit.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "admin/control_plane.h"
#include "base/clock.h"
#include "base/log.h"
#include "conf/config.h"
#include "mta/queue/scheduler.h"
#include "mta/queue/spool.h"
#include "mta/runtime.h"
#include "mta/worker.h"
#include "tls/context_provider.h"

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
  tls::ContextProvider console{tls::Role::kAdminConsole};
  std::unique_ptr<admin::ControlPlane> control;
  bool draining = false;
  uint64_t config_reload_failures = 0;
};

Daemon* g_daemon = nullptr;

std::string console_cert(const Config& c) { return c.state_dir + "/certs/default_console.crt"; }
std::string console_key(const Config& c) { return c.state_dir + "/certs/default_console.key"; }

// The self-signed defaults made at first start: default_mta (inbound and outbound MTA roles)
// and default_console (admin console; SAN 127.0.0.1 so posternctl can verify it).
std::string ensure_default_cert(const Config& cfg) {
  std::string err = tls::ensure_self_signed(console_cert(cfg), console_key(cfg), cfg.hostname, 825, "IP:127.0.0.1");
  if (!err.empty() || !cfg.smtp.tls_cert_file.empty()) return err;
  return tls::ensure_self_signed(cfg.cert_file(), cfg.key_file(), cfg.hostname);
}

// Builds and publishes a role's context; a failure keeps the one in use.
bool reload_tls(tls::ContextProvider& p, const Config& cfg) {
  const char* role = tls::role_name(p.role());
  std::string ca = p.role() == tls::Role::kOutboundMta ? cfg.outbound.ca_file : "";
  bool console = p.role() == tls::Role::kAdminConsole;
  std::string err = p.reload(console ? console_cert(cfg) : cfg.cert_file(), console ? console_key(cfg) : cfg.key_file(), ca);
  if (!err.empty()) {
    spdlog::error("reload role={} refused, keeping generation {}: {}", role,
                  p.current() ? p.current()->generation : 0, err);
    return false;
  }
  auto cur = p.current();
  spdlog::info("reload role={} generation={} subject={} fingerprint={} not_after={}", role, cur->generation,
               cur->subject, cur->fingerprint_sha256, cur->not_after);
  return true;
}

// SIGHUP, the admin API and NOTIFY from another node: one code path for every reload trigger.
// Returns "" or what was refused.
std::string reload(Daemon& d, const std::string& why) {
  std::string failures;
  spdlog::info("reload requested by {}", why);
  auto old = d.rt.config.load();
  std::shared_ptr<const Config> next;
  try {
    next = std::make_shared<const Config>(load_config(old->path));
  } catch (const ConfigError& e) {
    ++d.config_reload_failures;
    spdlog::error("reload: config refused, keeping the running one: {}", e.what());
    failures = std::string("config: ") + e.what();
    next = old;
  }
  if (next != old) {
    if (next->smtp.listen.size() != old->smtp.listen.size() || next->state_dir != old->state_dir ||
        next->workers != old->workers || next->queue.sync_per_file != old->queue.sync_per_file)
      spdlog::warn("reload: smtp.listen, server.state_dir, server.workers and queue.sync take effect at restart");
    if (auto err = ensure_default_cert(*next); !err.empty()) spdlog::error("reload: {}", err);
    d.rt.config.publish(next);
    spdlog::info("reload: config applied from {}", next->path);
  }
  for (auto* p : {&d.rt.inbound, &d.rt.outbound, &d.console})
    if (!reload_tls(*p, *next)) failures += std::string(failures.empty() ? "" : "; ") + tls::role_name(p->role()) + " certificate refused";
  return failures;
}

void begin_drain(Daemon& d, const char* why) {
  if (d.draining) return;
  d.draining = true;
  auto cfg = d.rt.config.load();
  spdlog::info("{}: draining, deadline {} ms", why, cfg->drain_timeout.count());
  for (auto& w : d.workers) w->drain(cfg->drain_timeout);
  uv_close(reinterpret_cast<uv_handle_t*>(&d.sighup), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&d.sigterm), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&d.sigint), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&d.tick), nullptr);
  // Keep the scheduler taking results until every worker has finished, then stop it.
  uv_timer_init(d.loop, &d.drain_watch);
  uv_timer_start(&d.drain_watch, [](uv_timer_t* t) {
    for (auto& w : g_daemon->workers)
      if (!w->finished()) return;
    g_daemon->scheduler->stop();
    g_daemon->control->stop();
    uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
  }, 50, 50);
}

int run(const std::string& config_path, const std::string& test_clock) {
  auto cfg = std::make_shared<const Config>(load_config(config_path));
  namespace fs = std::filesystem;
  fs::create_directories(cfg->state_dir);
  std::string log_file = cfg->resolved_log_file();
  if (!log_file.empty()) fs::create_directories(fs::path(log_file).parent_path());
  setup_logging(log_file, cfg->log_level);

  std::unique_ptr<OffsetFileClock> clock;  // outlives the daemon that reads it
  Daemon d;
  g_daemon = &d;
  d.rt.config.publish(cfg);
  if (!test_clock.empty()) {  // testing only: see base/clock.h
    clock = std::make_unique<OffsetFileClock>(test_clock);
    d.rt.clock = clock.get();
    spdlog::warn("test clock in use: time is shifted by the offset in {} (now {}s); never run a real MTA so",
                 test_clock, clock->offset().count() / 1'000'000'000);
  }
  if (auto err = ensure_default_cert(*cfg); !err.empty()) {
    spdlog::critical("cannot create the default_mta certificate: {}", err);
    return 1;
  }
  if (cfg->smtp.starttls && !reload_tls(d.rt.inbound, *cfg)) return 1;
  if (!reload_tls(d.rt.outbound, *cfg)) return 1;
  if (!reload_tls(d.console, *cfg)) return 1;
  queue::SpoolOptions so;
  so.sync = cfg->queue.sync_per_file ? queue::SyncMode::kFile : queue::SyncMode::kSyncfs;
  so.clock = d.rt.clock;
  d.spool = std::make_unique<queue::Spool>(cfg->state_dir + "/queue", so);
  d.rt.spool = d.spool.get();
  d.rt.spool_free_bytes = d.spool->free_bytes();

  unsigned n = cfg->workers ? cfg->workers : std::max(1u, std::thread::hardware_concurrency());
  try {
    for (unsigned i = 0; i < n; ++i) {
      d.workers.push_back(std::make_unique<mta::Worker>(d.rt, i));
      d.workers.back()->bind(cfg->smtp.listen);
    }
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    std::cerr << "posternd: " << e.what() << "\n";
    return 1;
  }
  for (auto& w : d.workers) w->start();
  std::vector<mta::Worker*> ws;
  for (auto& w : d.workers) ws.push_back(w.get());
  d.scheduler = std::make_unique<mta::Scheduler>(
      d.loop, d.rt, ws.size(), [ws](size_t i, delivery::DeliveryJob job, mta::Scheduler::Done done) {
        ws[i]->deliver(std::move(job), std::move(done));
      });
  d.rt.on_queued = [s = d.scheduler.get()](const Envelope& env) { s->submit(env); };
  d.spool->recover([&d](Envelope&& env) { d.scheduler->load(std::move(env)); });
  d.scheduler->loaded();
  d.control = std::make_unique<admin::ControlPlane>(
      d.loop, d.rt, *d.scheduler, d.console,
      admin::ControlPlane::Hooks{[](const std::string& why) { return reload(*g_daemon, why); }});
  try {
    d.control->start();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    std::cerr << "posternd: " << e.what() << "\n";
    d.control->stop();
    for (auto& w : d.workers) w->drain(std::chrono::milliseconds(0));
    d.scheduler->stop();
    uv_run(d.loop, UV_RUN_DEFAULT);
    for (auto& w : d.workers) w->join();
    return 1;
  }

  uv_signal_init(d.loop, &d.sighup);
  uv_signal_start(&d.sighup, [](uv_signal_t*, int) { g_daemon->control->reload("SIGHUP"); }, SIGHUP);
  uv_signal_init(d.loop, &d.sigterm);
  uv_signal_start(&d.sigterm, [](uv_signal_t*, int) { begin_drain(*g_daemon, "SIGTERM"); }, SIGTERM);
  uv_signal_init(d.loop, &d.sigint);
  uv_signal_start(&d.sigint, [](uv_signal_t*, int) { begin_drain(*g_daemon, "SIGINT"); }, SIGINT);
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
  bool check = false;
  app.add_option("-c,--config", config, "configuration file")->capture_default_str();
  app.add_flag("--check", check, "validate the configuration and exit");
  app.add_option("--test-clock", test_clock,
                 "TESTING ONLY: shift the daemon's clock (retry schedules, queue lifetime, delay warnings, "
                 "DSN dates, queue IDs) by the offset in FILE, e.g. \"3600\", \"-90s\", \"6d\" (missing or "
                 "empty: 0); FILE is re-read at most every 100 ms. libuv timers and socket timeouts are not "
                 "shifted. Never use it on a real MTA.")
      ->type_name("FILE");
  app.set_version_flag("--version", std::string("posternd ") + POSTERN_VERSION);
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  try {
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
