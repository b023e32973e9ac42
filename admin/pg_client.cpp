#include "admin/pg_client.h"

#include <spdlog/spdlog.h>

namespace postern::admin {
namespace {

constexpr uint64_t kQueryTimeoutMs = 10000;

std::string one_line(const char* s) {
  std::string r = s ? s : "";
  while (!r.empty() && (r.back() == '\n' || r.back() == ' ')) r.pop_back();
  for (auto& c : r)
    if (c == '\n') c = ' ';
  return r;
}

std::string setup_sql(const std::vector<std::string>& channels) {
  std::string s =
      "BEGIN;\nSELECT pg_advisory_xact_lock(74051);\n"
      "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, "
      "applied_at timestamptz NOT NULL DEFAULT now());\n";
  for (auto& m : migrations()) {
    std::string v = std::to_string(m.version);
    s += "DO $postern_do$ BEGIN IF NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = " + v +
         ") THEN EXECUTE $postern_mig$" + m.sql + "$postern_mig$; INSERT INTO schema_migrations(version) VALUES (" +
         v + "); END IF; END $postern_do$;\n";
  }
  s += "COMMIT;\n";
  for (auto& c : channels) s += "LISTEN \"" + c + "\";\n";
  return s;
}

}  // namespace

PgClient::PgClient(uv_loop_t* loop, std::string conninfo, std::vector<std::string> channels)
    : loop_(loop), conninfo_(std::move(conninfo)), channels_(std::move(channels)) {
  retry_ = new uv_timer_t;
  uv_timer_init(loop_, retry_);
  retry_->data = this;
  deadline_ = new uv_timer_t;
  uv_timer_init(loop_, deadline_);
  deadline_->data = this;
}

PgClient::~PgClient() { stop(); }

void PgClient::start() { connect(); }

// Stops watching the socket before libpq closes it.
void PgClient::disconnect() {
  if (poll_) {
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
}

void PgClient::stop() {
  if (state_ == State::kStopped) return;
  fail_all("shutting down");
  disconnect();
  for (auto** t : {&retry_, &deadline_}) {
    if (*t) {
      uv_close(reinterpret_cast<uv_handle_t*>(*t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      *t = nullptr;
    }
  }
  state_ = State::kStopped;
}

void PgClient::watch(int events) {
  int fd = PQsocket(conn_);
  if (fd < 0) return lost("no socket");
  if (poll_ && poll_->io_watcher.fd != fd) {
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (!poll_) {
    poll_ = new uv_poll_t;
    uv_poll_init_socket(loop_, poll_, fd);
    poll_->data = this;
  }
  uv_poll_start(poll_, events, [](uv_poll_t* h, int status, int ev) {
    static_cast<PgClient*>(h->data)->on_poll(status, ev);
  });
}

void PgClient::connect() {
  if (state_ == State::kStopped) return;
  conn_ = PQconnectStart(conninfo_.c_str());
  if (!conn_ || PQstatus(conn_) == CONNECTION_BAD) {
    return lost(conn_ ? one_line(PQerrorMessage(conn_)) : "out of memory");
  }
  PQsetnonblocking(conn_, 1);
  PQsetNoticeProcessor(conn_, [](void*, const char* msg) { spdlog::debug("database notice: {}", one_line(msg)); }, nullptr);
  state_ = State::kConnecting;
  watch(UV_WRITABLE);
}

void PgClient::continue_connect() {
  switch (PQconnectPoll(conn_)) {
    case PGRES_POLLING_READING: return watch(UV_READABLE);
    case PGRES_POLLING_WRITING: return watch(UV_WRITABLE);
    case PGRES_POLLING_FAILED: return lost(one_line(PQerrorMessage(conn_)));
    case PGRES_POLLING_OK: return setup();
    default: return watch(UV_READABLE | UV_WRITABLE);
  }
}

void PgClient::setup() {
  state_ = State::kSetup;
  std::string sql = setup_sql(channels_);
  if (!PQsendQuery(conn_, sql.c_str())) return lost(one_line(PQerrorMessage(conn_)));
  current_ = Pending{sql, {}, [this](PgResult r) {
                       if (!r.ok) {
                         spdlog::error("database: migrations failed: {}", r.error);
                         return lost("migrations failed: " + r.error);
                       }
                       state_ = State::kReady;
                       last_error_.clear();
                       spdlog::info("database: connected, schema at version {}", migrations().back().version);
                       announced_up_ = true;
                       ever_up_ = true;
                       failures_ = 0;
                       if (on_state) on_state(true);
                       send_next();
                     },
                     true};
  acc_ = PgResult{true, "", {}};
  int f = PQflush(conn_);
  watch(UV_READABLE | (f == 1 ? UV_WRITABLE : 0));
  uv_timer_start(deadline_, [](uv_timer_t* t) { static_cast<PgClient*>(t->data)->lost("setup timed out"); },
                 kQueryTimeoutMs * 3, 0);
}

void PgClient::query(std::string sql, std::vector<std::string> params, Callback cb) {
  if (state_ != State::kReady && state_ != State::kBusy) {
    PgResult r;
    r.error = "database unavailable" + (last_error_.empty() ? std::string() : ": " + last_error_);
    cb(std::move(r));
    return;
  }
  queue_.push_back(Pending{std::move(sql), std::move(params), std::move(cb), false});
  send_next();
}

void PgClient::send_next() {
  if (state_ != State::kReady || queue_.empty()) return;
  current_ = std::move(queue_.front());
  queue_.pop_front();
  std::vector<const char*> values;
  for (auto& p : current_.params) values.push_back(p.c_str());
  if (!PQsendQueryParams(conn_, current_.sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                         nullptr, nullptr, 0)) {
    queue_.push_front(std::move(current_));
    return lost(one_line(PQerrorMessage(conn_)));
  }
  state_ = State::kBusy;
  acc_ = PgResult{true, "", {}};
  int f = PQflush(conn_);
  watch(UV_READABLE | (f == 1 ? UV_WRITABLE : 0));
  uv_timer_start(deadline_, [](uv_timer_t* t) { static_cast<PgClient*>(t->data)->lost("query timed out"); },
                 kQueryTimeoutMs, 0);
}

void PgClient::on_poll(int status, int events) {
  if (status < 0) return lost(std::string("socket error: ") + uv_strerror(status));
  if (state_ == State::kConnecting) return continue_connect();
  if (events & UV_WRITABLE) {
    int f = PQflush(conn_);
    if (f < 0) return lost(one_line(PQerrorMessage(conn_)));
    if (f == 0) watch(UV_READABLE);
  }
  if (events & UV_READABLE) read_results();
}

void PgClient::read_results() {
  if (!PQconsumeInput(conn_)) return lost(one_line(PQerrorMessage(conn_)));
  while (PGnotify* n = PQnotifies(conn_)) {
    std::string ch = n->relname ? n->relname : "", payload = n->extra ? n->extra : "";
    PQfreemem(n);
    if (on_notify) on_notify(ch, payload);
  }
  if (state_ != State::kBusy && state_ != State::kSetup) {
    if (PQstatus(conn_) == CONNECTION_BAD) lost("connection closed");
    return;
  }
  while (!PQisBusy(conn_)) {
    PGresult* res = PQgetResult(conn_);
    if (!res) {  // the query is complete
      uv_timer_stop(deadline_);
      Pending done = std::move(current_);
      current_ = Pending{};
      if (state_ == State::kBusy) state_ = State::kReady;
      PgResult r = std::move(acc_);
      acc_ = PgResult{};
      done.cb(std::move(r));
      if (state_ == State::kReady) send_next();
      return;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK) {
      int nr = PQntuples(res), nf = PQnfields(res);
      for (int i = 0; i < nr; ++i) {
        std::vector<std::string> row;
        for (int j = 0; j < nf; ++j) row.emplace_back(PQgetvalue(res, i, j));
        acc_.rows.push_back(std::move(row));
      }
    } else if (st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY) {
      acc_.ok = false;
      acc_.error = one_line(PQresultErrorMessage(res));
    }
    PQclear(res);
  }
}

void PgClient::fail_all(const std::string& why) {
  std::deque<Pending> q;
  q.swap(queue_);
  if (current_.cb && !current_.internal) q.push_front(std::move(current_));
  current_ = Pending{};
  for (auto& p : q) {
    PgResult r;
    r.error = "database unavailable: " + why;
    p.cb(std::move(r));
  }
}

void PgClient::lost(const std::string& why) {
  if (state_ == State::kStopped) return;
  bool was_up = announced_up_;
  ++failures_;
  // A starting server (the private cluster right after posternd starts) is not worth a warning.
  auto lvl = ever_up_ || failures_ > 10 ? spdlog::level::warn : spdlog::level::info;
  if (why != last_error_ || was_up) spdlog::log(lvl, "database: {} (retrying)", why);
  last_error_ = why;
  if (deadline_) uv_timer_stop(deadline_);
  disconnect();
  state_ = State::kDown;
  announced_up_ = false;
  fail_all(why);
  // Down after being up, or never up after a few tries (e.g. started while the database was down).
  if ((was_up || (!ever_up_ && failures_ == 3)) && on_state) on_state(false);
  uv_timer_start(retry_, [](uv_timer_t* t) { static_cast<PgClient*>(t->data)->connect(); }, 1000, 0);
}

}  // namespace postern::admin
