// smtp_client_session_fuzz.cpp — the outbound SMTP client fed hostile server replies, cut at
// points the fuzzer chooses, with the driver's events between them (TLS up after STARTTLS, body
// sent, connection lost). Checks: every recipient of every message gets exactly one result, and
// no command line the client writes holds a bare CR or LF.
#include <fuzzer/FuzzedDataProvider.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <map>
#include <string>

#include "mta/client/smtp_client_session.h"

using namespace postern;
using namespace postern::smtp;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  SmtpClientSession::Options o;
  o.helo_name = "mx.fuzz.test";
  o.tls = static_cast<TlsLevel>(fdp.ConsumeIntegralInRange<int>(0, 3));
  o.keep_open = fdp.ConsumeBool();
  size_t nmsg = fdp.ConsumeIntegralInRange<size_t>(1, 3);
  std::vector<Envelope> envs(nmsg);
  std::vector<ClientMessage> msgs;
  size_t total = 0;
  for (size_t i = 0; i < nmsg; ++i) {
    Envelope& e = envs[i];
    e.queue_id = "Q" + std::to_string(i);
    e.mail_from = fdp.ConsumeBool() ? "" : "sender@example.org";
    e.smtputf8 = fdp.ConsumeBool();
    e.eight_bit = fdp.ConsumeBool();
    size_t nr = fdp.ConsumeIntegralInRange<size_t>(1, 4);
    for (size_t r = 0; r < nr; ++r) e.rcpts.push_back({"r" + std::to_string(r) + "@example.test", fdp.ConsumeBool() ? "SUCCESS" : "", ""});
    ClientMessage m;
    m.qid = e.queue_id;
    m.env = &e;
    for (size_t r = 0; r < nr; ++r) m.rcpts.push_back(r);
    m.size = fdp.ConsumeIntegralInRange<uint64_t>(0, 100000);
    m.probe = fdp.ConsumeIntegralInRange<int>(0, 3) == 0;
    total += nr;
    msgs.push_back(m);
  }
  SmtpClientSession s(o, msgs);
  s.set_downgrader([&fdp](ClientMessage& m) {
    m.downgraded = true;
    return fdp.ConsumeBool();
  });
  std::string out;
  while (fdp.remaining_bytes() > 0 && !s.done()) {
    if (s.wants_starttls()) {
      if (fdp.ConsumeBool()) s.tls_started();
      else s.connection_lost("TLS handshake failed");
    } else if (s.wants_body()) {
      s.body_started();
      s.body_sent();
    } else {
      s.feed(fdp.ConsumeRandomLengthString(2048));
    }
    out += s.take_output();
  }
  if (!s.done()) s.connection_lost("fuzz: end of input");
  out += s.take_output();
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')) abort();
    if (out[i] == '\r' && (i + 1 >= out.size() || out[i + 1] != '\n')) abort();
  }
  std::map<std::pair<std::string, size_t>, int> seen;
  for (auto& r : s.take_results()) ++seen[{r.qid, r.index}];
  if (!s.host_failed()) {
    if (seen.size() != total) abort();  // a recipient without a result
  }
  for (auto& [k, n] : seen)
    if (n != 1) abort();  // a recipient answered twice
  return 0;
}
