// local_mail.cpp — see local_mail.h.
#include "admin/local_mail.h"

#include <spdlog/spdlog.h>

#include <random>

#include "base/log.h"
#include "base/time_format.h"
#include "mta/queue/spool.h"

namespace postern::admin {
namespace {

std::string one_line(std::string s) {
  for (auto& c : s)
    if (c == '\r' || c == '\n') c = ' ';
  return s.substr(0, 900);
}

}  // namespace

std::string local_mail_text(const LocalMail& m, const std::string& hostname, const std::string& qid, int64_t t) {
  std::mt19937_64 rng(std::random_device{}());
  std::string date = rfc5322_date(static_cast<std::time_t>(t));
  std::string text = "Received: by " + hostname + " (Postern) id " + qid + "; " + date + "\r\nDate: " + date +
                     "\r\nFrom: Postern <postmaster@" + hostname + ">\r\nTo: <" + one_line(m.to) +
                     ">\r\nSubject: " + one_line(m.subject) + "\r\nMessage-ID: <" + (m.tag.empty() ? "local" : m.tag) +
                     "." + qid + "." + std::to_string(rng() % 1000000) + "@" + hostname +
                     ">\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n";
  for (auto& [k, v] : m.headers) text += one_line(k) + ": " + one_line(v) + "\r\n";
  text += "\r\n";
  std::string body = m.body;
  for (size_t p = 0; (p = body.find('\n', p)) != std::string::npos; p += 2) body.replace(p, 1, "\r\n");
  if (body.size() < 2 || body.compare(body.size() - 2, 2, "\r\n") != 0) body += "\r\n";
  return text + body;
}

LocalMailer::LocalMailer(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched)
    : rt_(rt), sched_(sched), sh_(std::make_shared<Shared>()) {
  sh_->async = new uv_async_t;
  uv_async_init(loop, sh_->async, on_async);
  sh_->async->data = this;
}

LocalMailer::~LocalMailer() { stop(); }

void LocalMailer::stop() {
  std::lock_guard lk(sh_->mu);
  if (!sh_->async) return;
  sh_->async->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(sh_->async), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  sh_->async = nullptr;
}

void LocalMailer::on_async(uv_async_t* a) {
  if (a->data) static_cast<LocalMailer*>(a->data)->drain();
}

bool LocalMailer::send(const LocalMail& m, Done done, std::string* qid_out) {
  if (!rt_.spool) return false;
  auto cfg = rt_.config.load();
  int64_t t = rt_.clock->unix_seconds();
  Envelope env;
  env.queue_id = rt_.spool->new_queue_id();
  if (qid_out) *qid_out = env.queue_id;
  env.mail_from = "";  // automatic mail goes from the null sender
  env.rcpts.push_back({m.to, "", ""});
  env.helo = cfg->hostname;
  env.client_ip = "127.0.0.1";
  env.received_at = t;
  std::string text = local_mail_text(m, cfg->hostname, env.queue_id, t);
  auto w = rt_.spool->open(env.queue_id);
  if (!w || !w->write(text)) {
    spdlog::error("queue_id={} local mail to=<{}> cannot be written to the spool", env.queue_id, esc(m.to));
    return false;
  }
  env.message_size = w->bytes();
  waiting_[env.queue_id] = std::move(done);
  std::weak_ptr<Shared> weak = sh_;
  rt_.spool->commit(std::move(w), env, [weak, env](bool ok) {
    auto sh = weak.lock();
    if (!sh) return;
    std::lock_guard lk(sh->mu);
    sh->committed.emplace_back(ok, env);
    if (sh->async) uv_async_send(sh->async);
  });
  return true;
}

void LocalMailer::drain() {
  std::vector<std::pair<bool, Envelope>> done;
  {
    std::lock_guard lk(sh_->mu);
    done.swap(sh_->committed);
  }
  for (auto& [ok, env] : done) {
    if (ok) sched_.submit(env);
    else spdlog::error("queue_id={} local mail could not be committed to the spool", env.queue_id);
    auto it = waiting_.find(env.queue_id);
    if (it == waiting_.end()) continue;
    Done d = std::move(it->second);
    waiting_.erase(it);
    if (d) d(ok, env.queue_id);
  }
}

}  // namespace postern::admin
