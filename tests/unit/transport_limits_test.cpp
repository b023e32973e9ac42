// The descriptor budget (pure), the HTTP router, and the client session's bound on what a
// downstream may send while the body goes out.
#include <gtest/gtest.h>

#include "http/http_server.h"
#include "mta/client/smtp_client_session.h"
#include "mta/fd_budget.h"

using namespace postern;

TEST(FdBudget, RaisesTheSoftLimitWhenTheHardLimitAllows) {
  Config c;
  auto b = mta::plan_fd_budget(c, 1024, 1048576);
  EXPECT_GE(b.soft, b.needed);
  EXPECT_EQ(b.session_limit, c.smtp.max_sessions);
  EXPECT_TRUE(b.warning.empty());
}

TEST(FdBudget, ALowHardLimitCapsSessionsAndSaysSo) {
  Config c;
  auto b = mta::plan_fd_budget(c, 256, 256);
  EXPECT_EQ(b.soft, 256u);
  EXPECT_LT(b.session_limit, 256u / 2);
  EXPECT_GE(b.session_limit, 1u);
  EXPECT_GE(b.receiving, 1u);
  // sessions (a socket each) + queue files of arriving messages + admin + the reserve fit in the limit
  EXPECT_LE(b.session_limit + b.receiving + c.admin.max_connections + 64, 256u);
  EXPECT_NE(b.warning.find("smtp.max_sessions"), std::string::npos);
}

TEST(FdBudget, EighteenThousandIdleSessionsFitTwentyThousandDescriptors) {
  // Issue 14: 18,000 idle sessions on a machine whose descriptor limit is 20,000. A session costs
  // its socket; queue files are reserved for messages arriving at once, not for every session.
  Config c;
  c.smtp.max_sessions = 18100;
  auto b = mta::plan_fd_budget(c, 1024, 20000);
  EXPECT_EQ(b.session_limit, 18100u);
  EXPECT_EQ(b.receiving, 1024u);
  EXPECT_LE(b.needed, 20000u);
  EXPECT_TRUE(b.warning.empty()) << b.warning;
  // 30,000 do not: capped below the limit with room for queue files and outbound connections.
  c.smtp.max_sessions = 30000;
  b = mta::plan_fd_budget(c, 1024, 20000);
  EXPECT_LT(b.session_limit, 20000u);
  EXPECT_GE(b.session_limit, 17000u);
  EXPECT_LE(b.session_limit + b.receiving + 2 * c.outbound.max_connections + c.admin.max_connections + 64, 20000u);
  EXPECT_FALSE(b.warning.empty());
}

TEST(FdBudget, TinyLimitStillAcceptsOne) {
  Config c;
  EXPECT_EQ(mta::plan_fd_budget(c, 16, 16).session_limit, 1u);
}

TEST(Router, MatchesMethodsPathsAndParams) {
  http::Router r;
  std::string got;
  r.add("GET", "/api/v1/queue", [&](const http::Request&, http::Responder) { got = "list"; });
  r.add("POST", "/api/v1/queue/{id}/hold", [&](const http::Request& q, http::Responder) { got = "hold " + q.params.at("id"); });
  int status = 0;
  auto resp = [&](http::Response x) { status = x.status; };
  struct Case {
    std::string method, path, want;
    int status;
  } cases[] = {
      {"GET", "/api/v1/queue", "list", 0},
      {"GET", "/api/v1/queue/", "list", 0},
      {"POST", "/api/v1/queue/ABC/hold", "hold ABC", 0},
      {"POST", "/api/v1/queue/A%2FB/hold", "hold A/B", 0},  // %2F is inside a segment
      {"GET", "/api/v1/queue/ABC/hold", "", 405},
      {"GET", "/api/v1/nothing", "", 404},
      {"GET", "/", "", 404},
  };
  for (auto& c : cases) {
    got.clear();
    status = 0;
    http::Request q;
    q.method = c.method;
    q.path = c.path;
    r.dispatch(q, resp);
    EXPECT_EQ(got, c.want) << c.method << " " << c.path;
    EXPECT_EQ(status, c.status) << c.method << " " << c.path;
  }
}

TEST(UrlDecode, Cases) {
  EXPECT_EQ(http::url_decode("a%20b+c", true), "a b c");
  EXPECT_EQ(http::url_decode("a%20b+c", false), "a b+c");
  EXPECT_EQ(http::url_decode("%zz%4", true), "%zz%4");
  EXPECT_EQ(http::url_decode("%", true), "%");
}

TEST(ClientSession, DownstreamFloodDuringTheBodyIsBounded) {
  Envelope e;
  e.queue_id = "Q1";
  e.mail_from = "a@example.org";
  e.rcpts.push_back({"b@example.test", "", ""});
  smtp::SmtpClientSession::Options o;
  o.helo_name = "mx.test";
  o.tls = TlsLevel::kNone;
  smtp::ClientMessage m{"Q1", &e, {0}, 100};
  smtp::SmtpClientSession s(o, {m});
  s.feed("220 hi\r\n");
  s.feed("250 ok\r\n");       // EHLO
  s.feed("250 ok\r\n");       // MAIL
  s.feed("250 ok\r\n");       // RCPT
  s.feed("354 go\r\n");       // DATA
  ASSERT_TRUE(s.wants_body());
  s.body_started();
  std::string junk(4096, 'X');
  for (int i = 0; i < 1000 && !s.done(); ++i) s.feed(junk);  // 4 MB offered
  EXPECT_TRUE(s.done());
  auto res = s.take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].outcome, smtp::Outcome::kDeferred);
}

TEST(CookieValue, FindsTheNamedCookieAmongOthersAndInJoinedHeaders) {
  http::Request r;
  EXPECT_EQ(http::cookie_value(r, "postern_admin"), "");
  r.headers["cookie"] = "a=b; postern_admin=ID1; c=d";
  EXPECT_EQ(http::cookie_value(r, "postern_admin"), "ID1");
  EXPECT_EQ(http::cookie_value(r, "c"), "d");
  EXPECT_EQ(http::cookie_value(r, "postern"), "");  // a prefix of another name is not it
  r.headers["cookie"] = "x_postern_admin=no;postern_admin=yes ";
  EXPECT_EQ(http::cookie_value(r, "postern_admin"), "yes");
  r.headers["cookie"] = "a=b, euq_session=S";  // two Cookie headers, joined
  EXPECT_EQ(http::cookie_value(r, "euq_session"), "S");
  r.headers["cookie"] = "euq_session=";
  EXPECT_EQ(http::cookie_value(r, "euq_session"), "");
}
