// ticket_keys.h — the session-ticket keys every server context of this node shares.
//
// The keys live outside the context generations (TlsRoles holds them), so a reload that builds
// new SSL_CTXs keeps resumption working. They rotate on a schedule: the current key encrypts new
// tickets; the previous one only decrypts (and the ticket is then renewed under the current key);
// older ones are gone, so a ticket lives at most two rotation periods. A flush (an admin's
// "a key was replaced for cause") makes a new key and drops every old one at once.
// Time is passed in by the caller (the control loop's clock), never read here.
// Security-sensitive: the key material (AES-256-CBC + HMAC-SHA256, from RAND_bytes, wiped when
// dropped, never logged) and the OpenSSL ticket callback that runs on the worker threads.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "base/snapshot.h"

namespace postern::tls {

class TicketKeys {
 public:
  using Clock = std::chrono::system_clock;

  struct Key {
    ~Key();
    unsigned char name[16] = {};
    unsigned char aes[32] = {};
    unsigned char hmac[32] = {};
    Clock::time_point created;
    uint64_t serial = 0;
  };
  // What the callback reads: one immutable pair, swapped atomically.
  struct Ring {
    std::shared_ptr<const Key> current;   // encrypts and decrypts
    std::shared_ptr<const Key> previous;  // decrypts only (null after a flush)
  };

  // Makes the first key; null with `error` set when the random generator fails.
  static std::shared_ptr<TicketKeys> create(Clock::time_point now, std::string& error);

  // Rotates when the current key is `every` old or older. Returns true when it rotated.
  // A failure of the random generator keeps the keys as they are (and returns false).
  bool tick(Clock::time_point now, std::chrono::milliseconds every);
  // The current key becomes the previous one; a new current key. "" or the error.
  std::string rotate(Clock::time_point now);
  // A new key; every older key is dropped, so no ticket issued before is accepted. "" or error.
  std::string flush(Clock::time_point now);

  std::shared_ptr<const Ring> ring() const { return ring_.load(); }
  uint64_t rotations() const { return rotations_.load(); }
  uint64_t flushes() const { return flushes_.load(); }
  uint64_t tickets_issued() const { return issued_.load(); }
  uint64_t tickets_accepted() const { return accepted_.load(); }
  uint64_t tickets_unknown() const { return unknown_.load(); }

  // Installs the ticket callback on a server context. The caller keeps this object alive for
  // as long as the SSL_CTX (ContextSet holds a shared_ptr to it). "" or the error.
  std::string attach(SSL_CTX* ctx);

 private:
  TicketKeys() = default;
  static std::shared_ptr<const Key> make_key(Clock::time_point now, uint64_t serial, std::string& error);
  static int callback(SSL* s, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                      EVP_MAC_CTX* hctx, int enc);
  int encrypt(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx);
  int decrypt(const unsigned char name[16], const unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx);

  std::mutex write_mu_;  // rotate/flush/tick: one writer at a time
  Snapshot<Ring> ring_;
  std::atomic<uint64_t> next_serial_{1};
  std::atomic<uint64_t> rotations_{0};
  std::atomic<uint64_t> flushes_{0};
  std::atomic<uint64_t> issued_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> unknown_{0};
};

}  // namespace postern::tls
