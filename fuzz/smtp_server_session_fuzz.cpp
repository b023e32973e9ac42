// smtp_server_session_fuzz.cpp — a whole inbound SMTP session from hostile bytes: the input is
// cut into pieces at points the fuzzer chooses, with the driver's events in between (the TLS
// handshake after STARTTLS, a late or failed commit, recipient verification answers, timeouts,
// drain). Checks what must hold for any input: output is whole reply lines, every reply line
// starts with a 3-digit code, nothing is buffered beyond the bounds the driver relies on.
#include <fuzzer/FuzzedDataProvider.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>

#include <cstdlib>
#include <string>

#include "mta/server/smtp_server_session.h"

using namespace postern;
using namespace postern::smtp;

namespace {

constexpr size_t kInputHighWater = 64 * 1024;  // as mta/server/inbound_connection.cpp

struct Hooks : SessionHooks {
  SmtpServerSession* s = nullptr;
  FuzzedDataProvider* fdp = nullptr;
  bool commit_pending = false;
  bool check_pending = false;
  uint64_t stored = 0;
  std::string new_queue_id() override { return "FUZZQ1"; }
  std::string rfc5322_date() override { return "Thu, 01 Jan 2026 00:00:00 +0000"; }
  int64_t now_unix() override { return 1767225600; }
  bool disk_below_floor() override { return fdp->ConsumeIntegralInRange<int>(0, 31) == 0; }
  bool begin_message(const Envelope&) override {
    stored = 0;
    return fdp->ConsumeIntegralInRange<int>(0, 15) != 0;
  }
  bool write_body(std::string_view b) override {
    stored += b.size();
    return fdp->ConsumeIntegralInRange<int>(0, 63) != 0;
  }
  void commit_message(const Envelope&) override {
    if (fdp->ConsumeBool()) s->commit_done(fdp->ConsumeBool());
    else commit_pending = true;
  }
  void abort_message() override {}
  RcptCheck check_recipient(const std::string&) override {
    switch (fdp->ConsumeIntegralInRange<int>(0, 3)) {
      case 0: return {RcptVerdict::kAccept, ""};
      case 1: return {RcptVerdict::kReject, "550 5.1.1 \r\n(no)\x01"};
      case 2: return {RcptVerdict::kDefer, "connect: refused"};
      default: check_pending = true; return {RcptVerdict::kPending, ""};
    }
  }
};

void check_output(const std::string& out) {
  size_t pos = 0;
  while (pos < out.size()) {
    size_t e = out.find("\r\n", pos);
    if (e == std::string::npos) abort();  // a reply without its line end
    if (e - pos < 4 || out[pos] < '2' || out[pos] > '5' || (out[pos + 3] != ' ' && out[pos + 3] != '-')) abort();
    for (size_t i = pos; i < e; ++i)
      if (static_cast<unsigned char>(out[i]) < 0x20 && out[i] != '\t') abort();  // no CR/LF/NUL inside a reply
    pos = e + 2;
  }
}

std::shared_ptr<Config> config(FuzzedDataProvider& fdp) {
  auto c = std::make_shared<Config>();
  c->hostname = "mx.fuzz.test";
  c->relay.domains = {"example.test"};
  c->relay.networks.clear();
  c->smtp.max_message_size = 20000;
  c->smtp.max_header_size = 2000;
  c->smtp.max_recipients = 5;
  c->smtp.max_line_length = 512;
  c->smtp.forbid_unauth_pipelining = fdp.ConsumeBool();
  c->smtp.long_lines = static_cast<LongLinePolicy>(fdp.ConsumeIntegralInRange<int>(0, 2));
  c->smtp.bare_lf = fdp.ConsumeBool() ? BareLfPolicy::kReject : BareLfPolicy::kNormalize;
  c->relay.verify_recipients = fdp.ConsumeBool();
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  Hooks h;
  h.fdp = &fdp;
  ClientInfo ci;
  ci.ip = "192.0.2.7";
  ci.family = AF_INET;
  inet_pton(AF_INET, ci.ip.c_str(), ci.addr);
  bool hold = fdp.ConsumeIntegralInRange<int>(0, 7) == 0;
  SmtpServerSession s(config(fdp), ci, h, true, hold);
  h.s = &s;
  std::string out = hold ? "" : s.greeting();
  while (fdp.remaining_bytes() > 0 && !s.closed()) {
    switch (fdp.ConsumeIntegralInRange<int>(0, 15)) {
      case 0:
        if (h.commit_pending) {
          h.commit_pending = false;
          s.commit_done(fdp.ConsumeBool());
        }
        break;
      case 1:
        if (h.check_pending) {
          h.check_pending = false;
          s.recipient_checked({static_cast<RcptVerdict>(fdp.ConsumeIntegralInRange<int>(0, 3)), "x"});
        }
        break;
      case 2:
        if (s.starttls_requested()) s.tls_established("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128);
        break;
      case 3:
        if (s.greeting_held()) s.release_greeting();
        break;
      case 4:
        if (fdp.ConsumeIntegralInRange<int>(0, 15) == 0) s.shutting_down();
        break;
      case 5:
        if (fdp.ConsumeIntegralInRange<int>(0, 31) == 0) s.timeout();
        break;
      default: {
        std::string piece = fdp.ConsumeRandomLengthString(4096);
        // As InboundConnection: no reading while the session wants no input and holds enough.
        if (s.wants_input() || s.buffered_input() <= kInputHighWater) s.feed(piece);
      }
    }
    out += s.take_output();
    if (s.buffered_input() > kInputHighWater + 4096) abort();  // held input stays bounded
  }
  if (h.commit_pending) s.commit_done(true);
  s.connection_lost();
  out += s.take_output();
  check_output(out);
  return 0;
}
