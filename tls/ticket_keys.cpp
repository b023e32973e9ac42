// ticket_keys.cpp — see ticket_keys.h. Security-sensitive: key generation and the ticket
// callback (a ticket under an unknown key is refused, never an error that ends the handshake).
#include "tls/ticket_keys.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <mutex>

#include "tls/context_provider.h"

namespace postern::tls {
namespace {

int ex_index() {
  static int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

bool set_mac_key(EVP_MAC_CTX* hctx, const unsigned char* key, size_t len) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key), len),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

}  // namespace

TicketKeys::Key::~Key() {
  OPENSSL_cleanse(aes, sizeof aes);
  OPENSSL_cleanse(hmac, sizeof hmac);
}

std::shared_ptr<const TicketKeys::Key> TicketKeys::make_key(Clock::time_point now, uint64_t serial,
                                                            std::string& error) {
  auto k = std::make_shared<Key>();
  if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
      RAND_bytes(k->hmac, sizeof k->hmac) != 1) {
    error = "cannot make a session-ticket key: " + openssl_errors();
    return nullptr;
  }
  k->created = now;
  k->serial = serial;
  return k;
}

std::shared_ptr<TicketKeys> TicketKeys::create(Clock::time_point now, std::string& error) {
  std::shared_ptr<TicketKeys> t(new TicketKeys());
  auto k = make_key(now, t->next_serial_++, error);
  if (!k) return nullptr;
  t->ring_.publish(std::make_shared<const Ring>(Ring{std::move(k), nullptr}));
  return t;
}

std::string TicketKeys::rotate(Clock::time_point now) {
  std::lock_guard lk(write_mu_);
  std::string err;
  auto k = make_key(now, next_serial_++, err);
  if (!k) return err;
  auto old = ring_.load();
  ring_.publish(std::make_shared<const Ring>(Ring{std::move(k), old ? old->current : nullptr}));
  rotations_.fetch_add(1);
  return "";
}

std::string TicketKeys::flush(Clock::time_point now) {
  std::lock_guard lk(write_mu_);
  std::string err;
  auto k = make_key(now, next_serial_++, err);
  if (!k) return err;
  ring_.publish(std::make_shared<const Ring>(Ring{std::move(k), nullptr}));
  flushes_.fetch_add(1);
  return "";
}

bool TicketKeys::tick(Clock::time_point now, std::chrono::milliseconds every) {
  if (every.count() <= 0) return false;
  auto r = ring_.load();
  if (r && r->current && now - r->current->created < every) return false;
  return rotate(now).empty();
}

std::string TicketKeys::attach(SSL_CTX* ctx) {
  if (ex_index() < 0 || SSL_CTX_set_ex_data(ctx, ex_index(), this) != 1)
    return "cannot attach the session-ticket keys: " + openssl_errors();
  if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &TicketKeys::callback) != 1)
    return "cannot set the session-ticket callback: " + openssl_errors();
  return "";
}

// OpenSSL's contract: enc=1 fills name, iv, the cipher and the MAC and returns 1 (or <0 on
// error); enc=0 returns 0 for an unknown key (full handshake), 1 to accept, 2 to accept and
// renew the ticket (it was made under the previous key).
int TicketKeys::callback(SSL* s, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                         EVP_MAC_CTX* hctx, int enc) {
  auto* self = static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_index()));
  if (!self) return enc ? -1 : 0;
  return enc ? self->encrypt(name, iv, cctx, hctx) : self->decrypt(name, iv, cctx, hctx);
}

int TicketKeys::encrypt(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx) {
  auto r = ring_.load();
  if (!r || !r->current) return -1;
  const Key& k = *r->current;
  const int iv_len = EVP_CIPHER_get_iv_length(EVP_aes_256_cbc());
  if (RAND_bytes(iv, iv_len) != 1) return -1;
  std::memcpy(name, k.name, sizeof k.name);
  if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv) != 1) return -1;
  if (!set_mac_key(hctx, k.hmac, sizeof k.hmac)) return -1;
  issued_.fetch_add(1, std::memory_order_relaxed);
  return 1;
}

int TicketKeys::decrypt(const unsigned char name[16], const unsigned char* iv, EVP_CIPHER_CTX* cctx,
                        EVP_MAC_CTX* hctx) {
  auto r = ring_.load();
  const Key* k = nullptr;
  bool renew = false;
  if (r && r->current && std::memcmp(name, r->current->name, 16) == 0) {
    k = r->current.get();
  } else if (r && r->previous && std::memcmp(name, r->previous->name, 16) == 0) {
    k = r->previous.get();
    renew = true;
  }
  if (!k) {
    unknown_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (!set_mac_key(hctx, k->hmac, sizeof k->hmac)) return -1;
  if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k->aes, iv) != 1) return -1;
  accepted_.fetch_add(1, std::memory_order_relaxed);
  return renew ? 2 : 1;
}

}  // namespace postern::tls
