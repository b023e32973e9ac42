// tls_roles_test.cpp — the TLS context builder (PEM bytes and files), TlsRoles publishing, and
// session resumption against ticket-key rotation, flushes and certificate swaps, with both TLS
// ends in memory (TlsEngine over memory BIOs). Certificates are made here, never committed.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <thread>

#include "tests/unit/test_certs.h"
#include "tls/context_provider.h"
#include "tls/tls_engine.h"
#include "tls/tls_roles.h"

namespace postern::tls {
namespace {

using testcerts::CertSpec;
using testcerts::KeyFormat;
using testcerts::KeyKind;
using testcerts::TestCert;
using namespace std::chrono_literals;

const TestCert& ec_cert() {
  static TestCert c = testcerts::make_cert({});
  return c;
}
const TestCert& rsa_cert() {
  static TestCert c = testcerts::make_cert({.kind = KeyKind::kRsa2048});
  return c;
}

Identity ident(const TestCert& c, const std::string& source = "test") {
  Identity id;
  id.cert_pem = c.cert_pem;
  id.key_pem = c.key_pem;
  id.source = source;
  return id;
}

ContextOptions server_opts() { return ContextOptions{}; }

std::shared_ptr<const ContextSet> client_ctx() {
  ContextOptions o;
  o.server = false;
  auto br = build_context({}, o);
  EXPECT_TRUE(br.set) << br.error;
  return br.set;
}

struct SessionFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using Session = std::unique_ptr<SSL_SESSION, SessionFree>;

struct Shake {
  bool ok = false;
  bool reused = false;
  std::string error;
  std::string version;
  std::string peer_fp;  // the server certificate's SHA-256, as in CertInfo
  Session session;  // the client's
};

std::string fp_of(const X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!x || X509_digest(x, EVP_sha256(), md, &n) != 1) return "";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    char b[4];
    std::snprintf(b, sizeof b, i ? ":%02X" : "%02X", md[i]);
    out += b;
  }
  return out;
}

// Runs a handshake between two in-memory engines, then lets the client read what the server
// sent after it (TLS 1.3 session tickets). Bounded: at most 20 round trips.
Shake handshake(std::shared_ptr<const ContextSet> server, std::shared_ptr<const ContextSet> client,
                SSL_SESSION* resume = nullptr, int max_version = 0, bool client_tickets = true,
                const std::function<void(SSL*)>& prepare = {}) {
  TlsEngine s(std::move(server), true);
  TlsEngine c(std::move(client), false, "mx.test.example");
  Shake r;
  if (!s.valid() || !c.valid()) return r;
  if (max_version) SSL_set_max_proto_version(c.ssl(), max_version);
  if (!client_tickets) SSL_set_options(c.ssl(), SSL_OP_NO_TICKET);
  if (resume) SSL_set_session(c.ssl(), resume);
  if (prepare) prepare(c.ssl());
  for (int i = 0; i < 20; ++i) {
    std::string plain, to_server, to_client;
    if (c.pump(plain) == TlsEngine::Status::kError) r.error = "client: " + c.error();
    c.take_ciphertext(to_server);
    s.put_ciphertext(to_server.data(), to_server.size());
    if (s.pump(plain) == TlsEngine::Status::kError) r.error = "server: " + s.error();
    s.take_ciphertext(to_client);
    c.put_ciphertext(to_client.data(), to_client.size());
    if (!r.error.empty()) return r;
    if (to_server.empty() && to_client.empty() && c.handshake_done() && s.handshake_done()) break;
  }
  r.ok = c.handshake_done() && s.handshake_done();
  r.reused = SSL_session_reused(c.ssl()) == 1;
  r.version = c.version();
  r.peer_fp = fp_of(SSL_get0_peer_certificate(c.ssl()));
  r.session.reset(SSL_get1_session(c.ssl()));
  // A clean close: OpenSSL marks the session of an SSL freed without close_notify unresumable.
  c.shutdown();
  s.shutdown();
  return r;
}


// --- building from PEM bytes -------------------------------------------------------------------

TEST(TlsBuild, FromPemBytesEcdsaAndRsaSideBySide) {
  auto br = build_context({ident(ec_cert(), "ec"), ident(rsa_cert(), "rsa")}, server_opts());
  ASSERT_TRUE(br.set) << br.error;
  ASSERT_EQ(br.set->certs.size(), 2u);
  EXPECT_EQ(br.set->certs[0].key_type, "EC-prime256v1");
  EXPECT_EQ(br.set->certs[1].key_type, "RSA-2048");
  EXPECT_EQ(br.set->cert_file, "ec");
  EXPECT_EQ(br.set->fingerprint_sha256.size(), 32u * 3 - 1);
  EXPECT_NE(br.set->subject.find("CN=mx.test.example"), std::string::npos);
  auto hs = handshake(br.set, client_ctx());
  EXPECT_TRUE(hs.ok) << hs.error;
}

TEST(TlsBuild, AcceptsPkcs1Pkcs8AndEncryptedKeys) {
  const TestCert& rsa = rsa_cert();
  Identity trad = ident(rsa);
  trad.key_pem = testcerts::reencode_key(rsa.key_pem, KeyFormat::kTraditional);
  ASSERT_NE(trad.key_pem.find("BEGIN RSA PRIVATE KEY"), std::string::npos);
  auto br = build_context({trad}, server_opts());
  EXPECT_TRUE(br.set) << br.error;

  Identity ec_trad = ident(ec_cert());
  ec_trad.key_pem = testcerts::reencode_key(ec_cert().key_pem, KeyFormat::kTraditional);
  ASSERT_NE(ec_trad.key_pem.find("BEGIN EC PRIVATE KEY"), std::string::npos);
  EXPECT_TRUE(build_context({ec_trad}, server_opts()).set);

  Identity enc = ident(rsa);
  enc.key_pem = testcerts::reencode_key(rsa.key_pem, KeyFormat::kEncryptedPkcs8, "s3cret pass");
  ASSERT_NE(enc.key_pem.find("BEGIN ENCRYPTED PRIVATE KEY"), std::string::npos);
  auto none = build_context({enc}, server_opts());
  EXPECT_FALSE(none.set);
  EXPECT_NE(none.error.find("encrypted and no passphrase"), std::string::npos) << none.error;
  enc.passphrase = "wrong";
  auto wrong = build_context({enc}, server_opts());
  EXPECT_FALSE(wrong.set);
  EXPECT_NE(wrong.error.find("wrong passphrase"), std::string::npos) << wrong.error;
  enc.passphrase = "s3cret pass";
  auto good = build_context({enc}, server_opts());
  EXPECT_TRUE(good.set) << good.error;
}

TEST(TlsBuild, RefusesAKeyOfAnotherCertificate) {
  Identity id = ident(ec_cert(), "mx.pem");
  id.key_pem = testcerts::make_cert({}).key_pem;  // another EC key
  auto br = build_context({id}, server_opts());
  EXPECT_FALSE(br.set);
  EXPECT_EQ(br.error, "the private key does not match certificate mx.pem");
  id.key_pem = rsa_cert().key_pem;  // another key type altogether
  br = build_context({id}, server_opts());
  EXPECT_FALSE(br.set);
  EXPECT_EQ(br.error, "the private key does not match certificate mx.pem");
}

TEST(TlsBuild, RefusesGarbageWithAClearError) {
  struct Case {
    std::string cert, key, want;
  } cases[] = {
      {"", ec_cert().key_pem, "no PEM certificate in x"},
      {"hello, not a certificate\n", ec_cert().key_pem, "no PEM certificate in x"},
      {"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ec_cert().key_pem, "no PEM certificate in x"},
      {ec_cert().cert_pem.substr(0, ec_cert().cert_pem.size() / 2), ec_cert().key_pem, "no PEM certificate in x"},
      {ec_cert().cert_pem + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ec_cert().key_pem,
       "cannot parse the chain in x"},
      {ec_cert().cert_pem, "", "no private key given for x"},
      {ec_cert().cert_pem, "garbage", "cannot read the private key for x"},
      {ec_cert().cert_pem, std::string("\0\xff\x01", 3), "cannot read the private key for x"},
  };
  for (auto& c : cases) {
    Identity id;
    id.cert_pem = c.cert;
    id.key_pem = c.key;
    id.source = "x";
    auto br = build_context({id}, server_opts());
    EXPECT_FALSE(br.set);
    EXPECT_EQ(br.error.rfind(c.want, 0), 0u) << br.error;
    EXPECT_EQ(br.error.find('\n'), std::string::npos) << br.error;
  }
  EXPECT_EQ(build_context({}, server_opts()).error, "no certificate given");
}

TEST(TlsBuild, RefusesExpiredAndNotYetValid) {
  auto expired = testcerts::make_cert({.not_before = -10 * 86400, .not_after = -86400});
  auto br = build_context({ident(expired, "old.pem")}, server_opts());
  EXPECT_FALSE(br.set);
  EXPECT_EQ(br.error.rfind("certificate old.pem has expired (notAfter ", 0), 0u) << br.error;
  auto future = testcerts::make_cert({.not_before = 86400, .not_after = 10 * 86400});
  br = build_context({ident(future, "new.pem")}, server_opts());
  EXPECT_FALSE(br.set);
  EXPECT_EQ(br.error.rfind("certificate new.pem is not valid yet (notBefore ", 0), 0u) << br.error;
  // The clock is injected: the same certificates are valid at another time.
  ContextOptions o = server_opts();
  o.now = std::time(nullptr) - 5 * 86400;
  EXPECT_TRUE(build_context({ident(expired)}, o).set);
  o.now = std::time(nullptr) + 2 * 86400;
  EXPECT_TRUE(build_context({ident(future)}, o).set);
  o.now = std::time(nullptr) + 31 * 86400;
  EXPECT_FALSE(build_context({ident(ec_cert())}, o).set);
}

TEST(TlsBuild, ChainIsServedAndVerifies) {
  auto root = testcerts::make_cert({.cn = "Test Root", .ca = true});
  auto inter = testcerts::make_cert({.cn = "Test Intermediate", .ca = true, .issuer = &root});
  auto leaf = testcerts::make_cert({.cn = "mx.test.example", .issuer = &inter});
  Identity id = ident(leaf);
  id.cert_pem = leaf.cert_pem + inter.cert_pem;
  auto server = build_context({id}, server_opts());
  ASSERT_TRUE(server.set) << server.error;
  EXPECT_EQ(server.set->certs[0].chain_length, 1u);
  std::string dir = testcerts::make_temp_dir();
  ContextOptions co;
  co.server = false;
  co.ca_file = testcerts::write_temp_file(dir, "root.pem", root.cert_pem);
  auto client = build_context({}, co);
  ASSERT_TRUE(client.set) << client.error;
  SSL_CTX_set_verify(client.set->ctx, SSL_VERIFY_PEER, nullptr);
  auto hs = handshake(server.set, client.set);
  EXPECT_TRUE(hs.ok) << hs.error;
  // Without the intermediate the client cannot build the path.
  auto bare = build_context({ident(leaf)}, server_opts());
  ASSERT_TRUE(bare.set);
  EXPECT_FALSE(handshake(bare.set, client.set).ok);
  std::filesystem::remove_all(dir);
}

TEST(TlsBuild, OneCertificatePerKeyType) {
  auto other = testcerts::make_cert({.cn = "other.test.example"});
  auto br = build_context({ident(ec_cert()), ident(other, "other.pem")}, server_opts());
  EXPECT_FALSE(br.set);
  EXPECT_EQ(br.error, "two certificates with EC-prime256v1 keys (one per key type): other.pem");
}

TEST(TlsBuild, FromFiles) {
  std::string dir = testcerts::make_temp_dir();
  std::string crt = testcerts::write_temp_file(dir, "a.crt", ec_cert().cert_pem);
  std::string key = testcerts::write_temp_file(dir, "a.key", ec_cert().key_pem);
  auto br = build_context_files(crt, key, server_opts());
  ASSERT_TRUE(br.set) << br.error;
  EXPECT_EQ(br.set->cert_file, crt);
  br = build_context_files(dir + "/missing.crt", key, server_opts());
  EXPECT_FALSE(br.set);
  EXPECT_EQ(br.error.rfind("cannot load certificate: cannot open " + dir + "/missing.crt", 0), 0u) << br.error;
  std::string big = testcerts::write_temp_file(dir, "big.crt", std::string((1 << 20) + 1, 'A'));
  br = build_context_files(big, key, server_opts());
  EXPECT_NE(br.error.find("larger than 1 MiB"), std::string::npos) << br.error;
  ContextOptions co;
  co.server = false;
  EXPECT_TRUE(build_context_files("", "", co).set);  // a client without a certificate
  std::filesystem::remove_all(dir);
}

// --- publishing ------------------------------------------------------------------------------

TEST(TlsRoles, PublishKeepsTheOldSetOnFailureAndCounts) {
  TlsRoles roles;
  auto opt = roles.options(Role::kInboundMta, 12h);
  EXPECT_EQ(roles.current(Role::kInboundMta), nullptr);
  EXPECT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, opt), "");
  auto first = roles.current(Role::kInboundMta);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->generation, 1u);
  Identity bad = ident(ec_cert(), "bad.pem");
  bad.key_pem = rsa_cert().key_pem;
  std::string err = roles.reload(Role::kInboundMta, {bad}, opt);
  EXPECT_EQ(err, "the private key does not match certificate bad.pem");
  EXPECT_EQ(roles.current(Role::kInboundMta), first);  // the same set, still serving
  EXPECT_EQ(roles.role(Role::kInboundMta).reload_failures(), 1u);
  EXPECT_EQ(roles.role(Role::kInboundMta).last_error(), err);
  EXPECT_TRUE(handshake(roles.current(Role::kInboundMta), client_ctx()).ok);
  EXPECT_EQ(roles.reload(Role::kInboundMta, {ident(rsa_cert())}, opt), "");
  EXPECT_EQ(roles.current(Role::kInboundMta)->generation, 2u);
  EXPECT_EQ(roles.role(Role::kInboundMta).reloads(), 2u);
  EXPECT_EQ(roles.role(Role::kInboundMta).last_error(), "");
  // A session holding the first set keeps it alive after the swap.
  EXPECT_EQ(first->generation, 1u);
  EXPECT_TRUE(handshake(first, client_ctx()).ok);
  // The other roles are untouched and separate.
  EXPECT_EQ(roles.current(Role::kAdminConsole), nullptr);
  EXPECT_EQ(roles.reload(Role::kEuqConsole, {ident(ec_cert())}, roles.options(Role::kEuqConsole, 12h)), "");
  EXPECT_EQ(roles.current(Role::kEuqConsole)->generation, 1u);
  EXPECT_EQ(roles.role(Role::kAdminConsole).reloads(), 0u);
}

TEST(TlsRoles, RoleNamesFilesAndOptions) {
  std::vector<std::string> names;
  for (Role r : kRoles) names.push_back(role_name(r));
  EXPECT_EQ(names, (std::vector<std::string>{"inbound_mta", "outbound_mta", "admin_console", "euq_console"}));
  Config cfg;
  cfg.state_dir = "/st";
  cfg.outbound.ca_file = "/ca.pem";
  EXPECT_EQ(role_files(Role::kInboundMta, cfg).cert, "/st/certs/default_mta.crt");
  EXPECT_EQ(role_files(Role::kOutboundMta, cfg).ca, "/ca.pem");
  EXPECT_EQ(role_files(Role::kEuqConsole, cfg).key, "/st/certs/default_console.key");
  TlsRoles roles;
  EXPECT_FALSE(roles.options(Role::kOutboundMta, 12h).server);
  EXPECT_EQ(roles.options(Role::kOutboundMta, 12h).tickets, nullptr);
  EXPECT_TRUE(roles.options(Role::kAdminConsole, 12h).tickets);
  EXPECT_EQ(roles.options(Role::kAdminConsole, 0ms).tickets, nullptr);
  EXPECT_EQ(roles.options(Role::kAdminConsole, 2h).session_lifetime, 7200s);
}

TEST(TlsRoles, ReloadFromConfigNamesTheReason) {
  std::string dir = testcerts::make_temp_dir();
  Config cfg;
  cfg.state_dir = dir;
  cfg.smtp.tls_cert_file = testcerts::write_temp_file(dir, "mx.crt", ec_cert().cert_pem);
  cfg.smtp.tls_key_file = testcerts::write_temp_file(dir, "mx.key", rsa_cert().key_pem);
  TlsRoles roles;
  EXPECT_EQ(roles.reload(Role::kInboundMta, cfg), "the private key does not match certificate " + cfg.smtp.tls_cert_file);
  testcerts::write_temp_file(dir, "mx.key", ec_cert().key_pem);
  EXPECT_EQ(roles.reload(Role::kInboundMta, cfg), "");
  EXPECT_EQ(roles.reload(Role::kOutboundMta, cfg), "");
  EXPECT_EQ(roles.reload(Role::kAdminConsole, cfg).rfind("cannot load certificate: cannot open " + dir + "/certs/", 0), 0u);
  std::filesystem::remove_all(dir);
}

// --- key types, SNI and assign ------------------------------------------------------------------

std::string fp_pem(const std::string& pem) {
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  std::string fp = fp_of(x);
  X509_free(x);
  return fp;
}

struct KeyTypeCase {
  int version;
  const char* name;
};
class KeyTypeChoice : public ::testing::TestWithParam<KeyTypeCase> {};

// A set with an RSA and an ECDSA certificate: the client's signature algorithms choose.
TEST_P(KeyTypeChoice, FollowsTheSignatureAlgorithmsTheClientOffers) {
  TlsRoles roles;
  RoleSource src;
  src.ids.push_back(ident(ec_cert(), "ec"));
  src.ids.push_back(ident(rsa_cert(), "rsa"));
  src.origin = "store:both";
  ASSERT_EQ(roles.assign(Role::kInboundMta, src, roles.options(Role::kInboundMta, 0ms)), "");
  auto set = roles.current(Role::kInboundMta);
  auto with = [&](const char* sigalgs) {
    return handshake(set, client_ctx(), nullptr, GetParam().version, true,
                     [sigalgs](SSL* ssl) { ASSERT_EQ(SSL_set1_sigalgs_list(ssl, sigalgs), 1); });
  };
  auto ec = with("ecdsa_secp256r1_sha256");
  ASSERT_TRUE(ec.ok) << ec.error;
  EXPECT_EQ(ec.peer_fp, fp_pem(ec_cert().cert_pem));
  auto rsa = with("rsa_pss_rsae_sha256:rsa_pkcs1_sha256");
  ASSERT_TRUE(rsa.ok) << rsa.error;
  EXPECT_EQ(rsa.peer_fp, fp_pem(rsa_cert().cert_pem));
  // With only the EC certificate, an RSA-only client fails the handshake: counted per role.
  src.ids.pop_back();
  ASSERT_EQ(roles.assign(Role::kInboundMta, src, roles.options(Role::kInboundMta, 0ms)), "");
  auto none = handshake(roles.current(Role::kInboundMta), client_ctx(), nullptr, GetParam().version, true,
                        [](SSL* ssl) { SSL_set1_sigalgs_list(ssl, "rsa_pss_rsae_sha256:rsa_pkcs1_sha256"); });
  EXPECT_FALSE(none.ok);
  EXPECT_EQ(roles.stats(Role::kInboundMta).handshakes.load(), 2u);
  EXPECT_EQ(roles.stats(Role::kInboundMta).handshake_failures.load(), 1u);
  EXPECT_EQ(roles.stats(Role::kAdminConsole).handshakes.load(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Versions, KeyTypeChoice,
                         ::testing::Values(KeyTypeCase{TLS1_2_VERSION, "tls12"}, KeyTypeCase{TLS1_3_VERSION, "tls13"}),
                         [](const auto& tc) { return std::string(tc.param.name); });

TEST(TlsSni, PerNameSetsAndTheDefaultForAnyOtherName) {
  static TestCert other = testcerts::make_cert({.cn = "mail.other.example"});
  static TestCert wild = testcerts::make_cert({.cn = "*.wild.example"});
  TlsRoles roles;
  RoleSource src;
  src.ids.push_back(ident(ec_cert(), "default"));
  src.sni.emplace_back("Mail.Other.Example", std::vector<Identity>{});
  src.sni.back().second.push_back(ident(other, "other"));
  src.sni.emplace_back("*.wild.example", std::vector<Identity>{});
  src.sni.back().second.push_back(ident(wild, "wild"));
  src.origin = "store:sni";
  ASSERT_EQ(roles.assign(Role::kInboundMta, src, roles.options(Role::kInboundMta, 12h)), "");
  auto set = roles.current(Role::kInboundMta);
  ASSERT_EQ(set->sni.size(), 2u);
  EXPECT_EQ(set->sni[0].first, "mail.other.example");
  EXPECT_EQ(set->origin, "store:sni");
  auto served = [&](const std::string& name) {
    auto hs = handshake(set, client_ctx(), nullptr, 0, true, [name](SSL* ssl) {
      char* n = name.empty() ? nullptr : const_cast<char*>(name.c_str());
      SSL_set_tlsext_host_name(ssl, n);
    });
    EXPECT_TRUE(hs.ok) << name << ": " << hs.error;
    return hs.peer_fp;
  };
  std::string def = fp_pem(ec_cert().cert_pem);
  EXPECT_EQ(served("mail.other.example"), fp_pem(other.cert_pem));
  EXPECT_EQ(served("MAIL.other.example."), fp_pem(other.cert_pem));
  EXPECT_EQ(served("a.wild.example"), fp_pem(wild.cert_pem));
  EXPECT_EQ(served("b.a.wild.example"), def);  // a wildcard covers one label only
  EXPECT_EQ(served("wild.example"), def);
  EXPECT_EQ(served("unknown.example"), def);
  EXPECT_EQ(served(""), def);
  EXPECT_EQ(roles.stats(Role::kInboundMta).handshakes.load(), 7u);  // the SNI sets count for the role
  EXPECT_EQ(&set->for_name("x.wild.example"), set->sni[1].second.get());
}

TEST(TlsSni, AssignIsAllOrNothing) {
  static TestCert expired = testcerts::make_cert({.not_before = -7200, .not_after = -3600});
  TlsRoles roles;
  auto opt = roles.options(Role::kInboundMta, 12h);
  RoleSource good;
  good.ids.push_back(ident(ec_cert(), "good"));
  good.origin = "store:good";
  ASSERT_EQ(roles.assign(Role::kInboundMta, good, opt), "");
  auto before = roles.current(Role::kInboundMta);
  auto refused = [&](RoleSource src, Role r = Role::kInboundMta) {
    std::string err = roles.assign(r, src, opt);
    EXPECT_EQ(roles.current(Role::kInboundMta), before);
    return err;
  };
  RoleSource s1;
  s1.ids.push_back(ident(rsa_cert(), "rsa"));
  s1.sni.emplace_back("old.example", std::vector<Identity>{});
  s1.sni.back().second.push_back(ident(expired, "expired"));
  EXPECT_NE(refused(s1).find("SNI old.example: certificate expired has expired"), std::string::npos);
  RoleSource s2;
  s2.ids.push_back(ident(rsa_cert(), "rsa"));
  s2.sni.emplace_back("bad name!", std::vector<Identity>{});
  s2.sni.back().second.push_back(ident(ec_cert()));
  EXPECT_EQ(refused(s2), "bad SNI name 'bad name!' (a host name or *.host name)");
  RoleSource s3;
  s3.ids.push_back(ident(rsa_cert(), "rsa"));
  for (const char* n : {"a.example", "A.example."}) {
    s3.sni.emplace_back(n, std::vector<Identity>{});
    s3.sni.back().second.push_back(ident(ec_cert()));
  }
  EXPECT_EQ(refused(s3), "SNI name a.example given twice");
  RoleSource s4;
  s4.ids.push_back(ident(ec_cert()));
  s4.sni.emplace_back("a.example", std::vector<Identity>{});
  s4.sni.back().second.push_back(ident(ec_cert()));
  EXPECT_EQ(roles.assign(Role::kAdminConsole, s4, roles.options(Role::kAdminConsole, 12h)),
            "SNI names are for the inbound role only");
  EXPECT_EQ(roles.current(Role::kAdminConsole), nullptr);
  EXPECT_EQ(roles.role(Role::kInboundMta).reload_failures(), 3u);
  EXPECT_EQ(roles.role(Role::kInboundMta).reloads(), 1u);
}

// A connection holds the set it started with; the next one, on any thread, gets the new set.
TEST(TlsSni, AssignReachesTheNextHandshakeAndSparesSessionsInFlight) {
  TlsRoles roles;
  auto opt = roles.options(Role::kInboundMta, 12h);
  RoleSource a, b;
  a.ids.push_back(ident(ec_cert(), "a"));
  b.ids.push_back(ident(rsa_cert(), "b"));
  ASSERT_EQ(roles.assign(Role::kInboundMta, a, opt), "");
  TlsEngine in_flight(roles.current(Role::kInboundMta), true);
  ASSERT_EQ(roles.assign(Role::kInboundMta, b, opt), "");
  EXPECT_EQ(in_flight.context().fingerprint_sha256, fp_pem(ec_cert().cert_pem));
  std::string seen;
  std::thread t([&] { seen = handshake(roles.current(Role::kInboundMta), client_ctx()).peer_fp; });
  t.join();
  EXPECT_EQ(seen, fp_pem(rsa_cert().cert_pem));
}

// An assign from the store overrides the config's files until the config names other files.
TEST(TlsRoles, AnAssignOverridesTheFilesUntilTheConfigNamesOthers) {
  std::string dir = testcerts::make_temp_dir();
  Config cfg;
  cfg.state_dir = dir;
  cfg.smtp.tls_cert_file = testcerts::write_temp_file(dir, "a.crt", ec_cert().cert_pem);
  cfg.smtp.tls_key_file = testcerts::write_temp_file(dir, "a.key", ec_cert().key_pem);
  TlsRoles roles;
  ASSERT_EQ(roles.reload(Role::kInboundMta, cfg), "");
  EXPECT_EQ(roles.current(Role::kInboundMta)->origin, "file:" + cfg.smtp.tls_cert_file);
  RoleSource src;
  src.ids.push_back(ident(rsa_cert(), "entry"));
  src.origin = "store:entry";
  ASSERT_EQ(roles.assign(Role::kInboundMta, src, roles.options(Role::kInboundMta, 12h)), "");
  ASSERT_EQ(roles.reload(Role::kInboundMta, cfg), "");  // SIGHUP: the same files, the assign stays
  EXPECT_EQ(roles.current(Role::kInboundMta)->origin, "store:entry");
  cfg.smtp.tls_cert_file = testcerts::write_temp_file(dir, "b.crt", ec_cert().cert_pem);
  cfg.smtp.tls_key_file = testcerts::write_temp_file(dir, "b.key", ec_cert().key_pem);
  ASSERT_EQ(roles.reload(Role::kInboundMta, cfg), "");
  EXPECT_EQ(roles.current(Role::kInboundMta)->origin, "file:" + cfg.smtp.tls_cert_file);
  std::filesystem::remove_all(dir);
}

// --- session tickets ---------------------------------------------------------------------------

struct ResumeCase {
  int version;
  const char* name;
};

class Resumption : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(Resumption, SurvivesAReloadOfTheSameCertificate) {
  TlsRoles roles;
  auto opt = roles.options(Role::kInboundMta, 12h);
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, opt), "");
  auto client = client_ctx();
  auto first = handshake(roles.current(Role::kInboundMta), client, nullptr, GetParam().version);
  ASSERT_TRUE(first.ok) << first.error;
  Session s1(std::move(first.session));
  EXPECT_FALSE(first.reused);
  EXPECT_EQ(first.version, GetParam().name);
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, opt), "");  // a new SSL_CTX, same certificate
  auto again = handshake(roles.current(Role::kInboundMta), client, s1.get(), GetParam().version);
  Session s2(std::move(again.session));
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_TRUE(again.reused);
  EXPECT_GE(roles.tickets().tickets_accepted(), 1u);
}

TEST_P(Resumption, NeverAcrossACertificateSwap) {
  // Issue 9: a TLS 1.2 session from the ECDSA certificate was resumed after a swap to RSA.
  TlsRoles roles;
  auto opt = roles.options(Role::kInboundMta, 12h);
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, opt), "");
  auto client = client_ctx();
  auto first = handshake(roles.current(Role::kInboundMta), client, nullptr, GetParam().version);
  ASSERT_TRUE(first.ok) << first.error;
  Session s1(std::move(first.session));
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(rsa_cert())}, opt), "");
  auto again = handshake(roles.current(Role::kInboundMta), client, s1.get(), GetParam().version);
  Session s2(std::move(again.session));
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_FALSE(again.reused);
  // The full handshake presented the new certificate.
  X509* peer = SSL_SESSION_get0_peer(s2.get());
  ASSERT_TRUE(peer);
  EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(peer)), EVP_PKEY_RSA);
  // Nor from one role to another with the same certificate and keys.
  ASSERT_EQ(roles.reload(Role::kAdminConsole, {ident(rsa_cert())}, roles.options(Role::kAdminConsole, 12h)), "");
  auto other = handshake(roles.current(Role::kAdminConsole), client, s2.get(), GetParam().version);
  Session s3(std::move(other.session));
  EXPECT_TRUE(other.ok);
  EXPECT_FALSE(other.reused);
}

// TLS 1.3 clients use a ticket once (RFC 8446 C.4), so every check below takes a fresh one.
std::vector<Session> fresh_sessions(std::shared_ptr<const ContextSet> server, std::shared_ptr<const ContextSet> client,
                                    int version, int n) {
  std::vector<Session> out;
  for (int i = 0; i < n; ++i) {
    auto hs = handshake(server, client, nullptr, version);
    EXPECT_TRUE(hs.ok && !hs.reused) << hs.error;
    out.push_back(std::move(hs.session));
  }
  return out;
}

TEST_P(Resumption, NotAfterAFlush) {
  TlsRoles roles;
  auto opt = roles.options(Role::kInboundMta, 12h);
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, opt), "");
  auto client = client_ctx();
  auto s = fresh_sessions(roles.current(Role::kInboundMta), client, GetParam().version, 2);
  auto before = handshake(roles.current(Role::kInboundMta), client, s[0].get(), GetParam().version);
  Session b(std::move(before.session));
  EXPECT_TRUE(before.reused);  // tickets work until the flush
  ASSERT_EQ(roles.flush_tickets(TicketKeys::Clock::now()), "");
  auto after = handshake(roles.current(Role::kInboundMta), client, s[1].get(), GetParam().version);
  Session a(std::move(after.session));
  ASSERT_TRUE(after.ok) << after.error;
  EXPECT_FALSE(after.reused);
  EXPECT_EQ(roles.tickets().tickets_unknown(), 1u);
  EXPECT_EQ(roles.tickets().flushes(), 1u);
  // The new session's ticket works.
  auto next = handshake(roles.current(Role::kInboundMta), client, a.get(), GetParam().version);
  Session n(std::move(next.session));
  EXPECT_TRUE(next.reused);
}

TEST_P(Resumption, RotationKeepsThePreviousKeyForDecryptionOnly) {
  TlsRoles roles;
  auto opt = roles.options(Role::kInboundMta, 12h);
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, opt), "");
  auto client = client_ctx();
  auto t0 = TicketKeys::Clock::now();
  auto s = fresh_sessions(roles.current(Role::kInboundMta), client, GetParam().version, 2);
  EXPECT_FALSE(roles.tick(t0 + 11h, 12h));
  EXPECT_TRUE(roles.tick(t0 + 12h, 12h));  // their key is the previous one now: decrypts only
  auto once = handshake(roles.current(Role::kInboundMta), client, s[0].get(), GetParam().version);
  Session renewed(std::move(once.session));
  EXPECT_TRUE(once.reused);
  EXPECT_TRUE(roles.tick(t0 + 24h, 12h));  // and gone now
  auto twice = handshake(roles.current(Role::kInboundMta), client, s[1].get(), GetParam().version);
  Session t(std::move(twice.session));
  EXPECT_TRUE(twice.ok);
  EXPECT_FALSE(twice.reused);
  EXPECT_EQ(roles.tickets().tickets_unknown(), 1u);
  // The ticket the server sent when it accepted the previous key's was made under the then
  // current key, so that session lives on.
  auto later = handshake(roles.current(Role::kInboundMta), client, renewed.get(), GetParam().version);
  Session l(std::move(later.session));
  EXPECT_TRUE(later.reused);
  EXPECT_EQ(roles.tickets().rotations(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Versions, Resumption,
                         ::testing::Values(ResumeCase{TLS1_2_VERSION, "TLSv1.2"}, ResumeCase{TLS1_3_VERSION, "TLSv1.3"}),
                         [](const auto& p) { return std::string(p.param.version == TLS1_2_VERSION ? "Tls12" : "Tls13"); });

TEST(TlsTickets, AFlushAlsoEmptiesTheSessionCache) {
  // TLS 1.2 without tickets resumes from the server's session cache: a flush forgets it too.
  TlsRoles roles;
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, roles.options(Role::kInboundMta, 12h)), "");
  auto server = roles.current(Role::kInboundMta);
  auto client = client_ctx();
  auto first = handshake(server, client, nullptr, TLS1_2_VERSION, false);
  Session s1(std::move(first.session));
  ASSERT_TRUE(first.ok);
  auto again = handshake(server, client, s1.get(), TLS1_2_VERSION, false);
  Session s2(std::move(again.session));
  EXPECT_TRUE(again.reused);
  ASSERT_EQ(roles.flush_tickets(TicketKeys::Clock::now()), "");
  auto after = handshake(server, client, s1.get(), TLS1_2_VERSION, false);
  Session s3(std::move(after.session));
  EXPECT_TRUE(after.ok);
  EXPECT_FALSE(after.reused);
}

TEST(TlsTickets, NoTicketsWhenRotationIsOff) {
  TlsRoles roles;
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, roles.options(Role::kInboundMta, 0ms)), "");
  auto client = client_ctx();
  auto first = handshake(roles.current(Role::kInboundMta), client, nullptr, TLS1_3_VERSION);
  Session s1(std::move(first.session));
  ASSERT_TRUE(first.ok);
  EXPECT_EQ(roles.tickets().tickets_issued(), 0u);
  auto again = handshake(roles.current(Role::kInboundMta), client, s1.get(), TLS1_3_VERSION);
  Session s2(std::move(again.session));
  EXPECT_TRUE(again.ok);
  EXPECT_FALSE(again.reused);  // no stateful TLS 1.3 tickets either
  EXPECT_FALSE(roles.tick(TicketKeys::Clock::now() + 24h * 365, 0ms));
}

TEST(TlsTickets, KeysRotateOnScheduleFromTheInjectedClock) {
  std::string err;
  auto t0 = TicketKeys::Clock::time_point{} + 1000h;
  auto keys = TicketKeys::create(t0, err);
  ASSERT_TRUE(keys) << err;
  auto r0 = keys->ring();
  EXPECT_EQ(r0->previous, nullptr);
  EXPECT_FALSE(keys->tick(t0 + 1h - 1ms, 1h));
  EXPECT_EQ(keys->ring(), r0);
  EXPECT_TRUE(keys->tick(t0 + 1h, 1h));
  auto r1 = keys->ring();
  EXPECT_EQ(r1->previous, r0->current);
  EXPECT_NE(std::memcmp(r1->current->name, r0->current->name, 16), 0);
  EXPECT_FALSE(keys->tick(t0 + 2h - 1ms, 1h));
  EXPECT_TRUE(keys->tick(t0 + 5h, 1h));  // late: one rotation, counted from now
  EXPECT_EQ(keys->ring()->previous, r1->current);
  EXPECT_FALSE(keys->tick(t0 + 5h + 59min, 1h));
  ASSERT_EQ(keys->flush(t0 + 6h), "");
  EXPECT_EQ(keys->ring()->previous, nullptr);
  EXPECT_EQ(keys->rotations(), 2u);
  EXPECT_EQ(keys->flushes(), 1u);
}

TEST(TlsClientSessions, ResumedOnlyUnderTheContextTheyWereMadeUnder) {
  // Resumption skips the certificate check: a session made under policy "may" must never be
  // resumed where "verify" applies, nor one made with a client certificate since replaced.
  TlsRoles roles;
  ASSERT_EQ(roles.reload(Role::kInboundMta, {ident(ec_cert())}, roles.options(Role::kInboundMta, 12h)), "");
  auto server = roles.current(Role::kInboundMta);
  ContextProvider out(Role::kOutboundMta);
  ContextOptions co;
  co.server = false;
  ASSERT_EQ(out.publish(build_context({}, co)), "");
  auto client = out.current();
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SCOPED_TRACE(version);
    auto offer = [&](std::shared_ptr<const ContextSet> set, const std::string& name, SSL_SESSION* s, bool* offered) {
      return [set, name, s, offered](SSL* ssl) { *offered = offer_client_session(ssl, *set, name, s); };
    };
    bool offered = true;
    auto unverified = handshake(server, client, nullptr, version, true, offer(client, "", nullptr, &offered));
    Session s1(std::move(unverified.session));
    ASSERT_TRUE(unverified.ok) << unverified.error;
    EXPECT_FALSE(offered);
    auto strict = handshake(server, client, nullptr, version, true, offer(client, "mx.test.example", s1.get(), &offered));
    Session s2(std::move(strict.session));
    EXPECT_FALSE(offered);
    EXPECT_FALSE(strict.reused);
    // Same context: offered and resumed (each a fresh session: TLS 1.3 tickets are used once).
    auto again = handshake(server, client, nullptr, version, true, offer(client, "mx.test.example", s2.get(), &offered));
    Session s3(std::move(again.session));
    EXPECT_TRUE(offered);
    EXPECT_TRUE(again.reused);
    auto other_name = handshake(server, client, nullptr, version, true, offer(client, "other.example", s3.get(), &offered));
    Session s4(std::move(other_name.session));
    EXPECT_FALSE(offered);
    auto plain = handshake(server, client, nullptr, version, true, offer(client, "", s1.get(), &offered));
    Session s5(std::move(plain.session));
    EXPECT_TRUE(offered);
    EXPECT_TRUE(plain.reused);
    // A new outbound generation (client certificate or CA store replaced) starts afresh.
    ASSERT_EQ(out.publish(build_context({}, co)), "");
    auto next = out.current();
    auto after = handshake(server, next, nullptr, version, true, offer(next, "", s5.get(), &offered));
    Session s6(std::move(after.session));
    EXPECT_FALSE(offered);
    EXPECT_FALSE(after.reused);
    client = next;
  }
}

// --- the self-signed defaults ------------------------------------------------------------------

TEST(SelfSigned, ValidityStaysInside825Days) {
  // Issue 9: the defaults were valid 825 days plus the hour notBefore is backdated.
  std::string dir = testcerts::make_temp_dir();
  std::string crt = dir + "/d.crt", key = dir + "/d.key";
  ASSERT_EQ(ensure_self_signed(crt, key, "mx.test.example", 825, "IP:127.0.0.1"), "");
  std::string pem;
  ASSERT_EQ(read_pem_file(crt, pem), "");
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  ASSERT_TRUE(x);
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
  // RFC 5280: both ends are part of the period, so notAfter - notBefore + 1 s <= 825 days.
  EXPECT_LE(static_cast<long>(days) * 86400 + secs + 1, 825L * 86400);
  EXPECT_GE(static_cast<long>(days) * 86400 + secs + 1, 825L * 86400 - 60);
  EXPECT_EQ(X509_cmp_current_time(X509_get0_notBefore(x)), -1);  // valid now
  X509_free(x);
  auto br = build_context_files(crt, key, ContextOptions{});
  EXPECT_TRUE(br.set) << br.error;
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace postern::tls
