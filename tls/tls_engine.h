// tls_engine.h — one TLS connection over memory BIOs, independent of any socket or loop.
//
// The driver puts ciphertext read from the network in, pulls plaintext out, writes plaintext,
// and sends whatever ciphertext the engine produced (after every call, since TLS 1.3 writes
// tickets and alerts during reads). The engine holds its ContextSet for life, so a reload never
// changes a connection in flight.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "tls/context_provider.h"

namespace postern::tls {

class TlsEngine {
 public:
  enum class Status { kOk, kError, kClosed };

  TlsEngine(std::shared_ptr<const ContextSet> ctx, bool server, const std::string& sni = "");
  ~TlsEngine();
  TlsEngine(const TlsEngine&) = delete;
  TlsEngine& operator=(const TlsEngine&) = delete;

  bool valid() const { return ssl_ != nullptr; }
  // Ciphertext from the peer.
  void put_ciphertext(const char* data, size_t len);
  // Advances the handshake and decrypts what it can into plaintext (appended).
  Status pump(std::string& plaintext);
  // Encrypts application data (call only after handshake_done()).
  Status write(std::string_view plaintext);
  // write() and take_ciphertext() in one: the records to send for this plaintext.
  Status seal(std::string_view plaintext, std::string& ciphertext);
  // Sends close_notify.
  void shutdown();
  // Ciphertext to send to the peer (appended).
  void take_ciphertext(std::string& out);

  bool handshake_done() const { return done_; }
  const std::string& error() const { return error_; }
  std::string version() const;
  std::string cipher() const;
  int cipher_bits() const;
  SSL* ssl() const { return ssl_; }
  const ContextSet& context() const { return *ctx_; }

 private:
  std::shared_ptr<const ContextSet> ctx_;
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;
  BIO* wbio_ = nullptr;
  bool done_ = false;
  std::string error_;
};

}  // namespace postern::tls
