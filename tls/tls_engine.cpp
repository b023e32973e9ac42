#include "tls/tls_engine.h"

#include <openssl/err.h>

namespace postern::tls {

TlsEngine::TlsEngine(std::shared_ptr<const ContextSet> ctx, bool server, const std::string& sni)
    : ctx_(std::move(ctx)) {
  ERR_clear_error();
  ssl_ = SSL_new(ctx_->ctx);
  if (!ssl_) {
    error_ = openssl_errors();
    return;
  }
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(rbio_, -1);
  SSL_set_bio(ssl_, rbio_, wbio_);  // the SSL owns both BIOs now
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, sni.c_str());
    SSL_set_connect_state(ssl_);
  }
}

TlsEngine::~TlsEngine() {
  if (ssl_) SSL_free(ssl_);
}

void TlsEngine::put_ciphertext(const char* data, size_t len) {
  while (len > 0) {
    int n = BIO_write(rbio_, data, static_cast<int>(std::min<size_t>(len, 1 << 30)));
    if (n <= 0) return;
    data += n;
    len -= static_cast<size_t>(n);
  }
}

TlsEngine::Status TlsEngine::pump(std::string& plaintext) {
  if (!ssl_) return Status::kError;
  if (!done_) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      done_ = true;
    } else {
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::kOk;
      error_ = e == SSL_ERROR_SSL ? openssl_errors() : "handshake failed (error " + std::to_string(e) + ")";
      return Status::kError;
    }
  }
  char buf[16384];
  for (;;) {
    ERR_clear_error();
    int n = SSL_read(ssl_, buf, sizeof buf);
    if (n > 0) {
      plaintext.append(buf, static_cast<size_t>(n));
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::kOk;
    if (e == SSL_ERROR_ZERO_RETURN) return Status::kClosed;
    error_ = e == SSL_ERROR_SSL ? openssl_errors() : "read failed (error " + std::to_string(e) + ")";
    return Status::kError;
  }
}

TlsEngine::Status TlsEngine::write(std::string_view plaintext) {
  while (!plaintext.empty()) {
    ERR_clear_error();
    int n = SSL_write(ssl_, plaintext.data(), static_cast<int>(std::min<size_t>(plaintext.size(), 1 << 30)));
    if (n <= 0) {
      error_ = openssl_errors();
      return Status::kError;
    }
    plaintext.remove_prefix(static_cast<size_t>(n));
  }
  return Status::kOk;
}

TlsEngine::Status TlsEngine::seal(std::string_view plaintext, std::string& ciphertext) {
  Status st = write(plaintext);
  take_ciphertext(ciphertext);
  return st;
}

void TlsEngine::shutdown() {
  if (ssl_ && done_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);
  }
}

void TlsEngine::take_ciphertext(std::string& out) {
  char* p = nullptr;
  long n = BIO_get_mem_data(wbio_, &p);
  if (n > 0) {
    out.append(p, static_cast<size_t>(n));
    (void)BIO_reset(wbio_);
  }
}

std::string TlsEngine::version() const { return ssl_ ? SSL_get_version(ssl_) : ""; }
std::string TlsEngine::cipher() const {
  const SSL_CIPHER* c = ssl_ ? SSL_get_current_cipher(ssl_) : nullptr;
  return c ? SSL_CIPHER_get_name(c) : "";
}
int TlsEngine::cipher_bits() const {
  const SSL_CIPHER* c = ssl_ ? SSL_get_current_cipher(ssl_) : nullptr;
  return c ? SSL_CIPHER_get_bits(c, nullptr) : 0;
}

}  // namespace postern::tls
