// cert_crypt.cpp — see cert_crypt.h. Security-sensitive: AES-256-GCM with a fresh random nonce
// per seal, scrypt with bounded parameters, the node key file's mode and creation race (O_EXCL).
#include "certs/cert_crypt.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "certs/cert_material.h"
#include "certs/ossl_util.h"

namespace postern::certs {

NodeKey::~NodeKey() { OPENSSL_cleanse(bytes, sizeof bytes); }

namespace {

constexpr char kSealPrefix[] = "pk1:";
constexpr char kSealAad[] = "postern node-key seal v1";
constexpr char kMagic[] = "PSTNCRTB";
constexpr size_t kHeader = 8 + 5 + 16;  // magic, version/kdf/N/r/p, salt
constexpr size_t kNonce = 12, kTag = 16;

bool parse_hex(const std::string& text, unsigned char* out, size_t n) {
  if (text.size() < 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    auto v = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
    int hi = v(text[2 * i]), lo = v(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

// AES-256-GCM. enc: out = ciphertext | tag. dec: in = ciphertext | tag. False on any failure.
bool gcm(bool enc, const unsigned char* key, const unsigned char* nonce, const std::string& aad, const std::string& in,
         std::string& out) {
  out.clear();
  if (!enc && in.size() < kTag) return false;
  size_t n = enc ? in.size() : in.size() - kTag;
  CipherCtxPtr c(EVP_CIPHER_CTX_new());
  if (!c || EVP_CipherInit_ex(c.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr, enc ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonce), nullptr) != 1 ||
      EVP_CipherInit_ex(c.get(), nullptr, nullptr, key, nonce, enc ? 1 : 0) != 1)
    return false;
  int len = 0;
  if (!aad.empty() && EVP_CipherUpdate(c.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                                       static_cast<int>(aad.size())) != 1)
    return false;
  out.resize(n + kTag);
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  if (EVP_CipherUpdate(c.get(), o, &len, reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(n)) != 1)
    return false;
  size_t total = static_cast<size_t>(len);
  if (!enc) {
    std::string tag = in.substr(n);
    if (EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTag), tag.data()) != 1) return false;
  }
  if (EVP_CipherFinal_ex(c.get(), o + total, &len) != 1) {
    wipe(out);
    return false;
  }
  total += static_cast<size_t>(len);
  if (enc) {
    if (EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTag), o + total) != 1) return false;
    total += kTag;
  }
  out.resize(total);
  return true;
}

bool scrypt_key(const std::string& password, const unsigned char* salt, KdfParams k, unsigned char* out) {
  uint64_t n = uint64_t{1} << k.log2_n;
  uint64_t maxmem = 128 * n * static_cast<uint64_t>(k.r) * static_cast<uint64_t>(k.p) + (16u << 20);
  return EVP_PBE_scrypt(password.data(), password.size(), salt, 16, n, static_cast<uint64_t>(k.r),
                        static_cast<uint64_t>(k.p), maxmem, out, 32) == 1;
}

}  // namespace

std::string load_or_create_node_key(const std::string& state_dir, NodeKey& out, bool& created) {
  std::string path = state_dir + "/node.key";
  created = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      char buf[128] = {};
      ssize_t n = ::read(fd, buf, sizeof buf - 1);
      struct stat st {};
      bool loose = ::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0;
      ::close(fd);
      std::string text(buf, n > 0 ? static_cast<size_t>(n) : 0);
      OPENSSL_cleanse(buf, sizeof buf);
      bool ok = parse_hex(text, out.bytes, sizeof out.bytes);
      wipe(text);
      if (!ok) return path + " does not hold a node key (64 hex digits)";
      if (loose) return path + " is readable by group or others: chmod 600 " + path;
      return "";
    }
    if (errno != ENOENT) return "cannot read " + path + ": " + std::strerror(errno);
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;  // another process made it first: read that one
      return "cannot create " + path + ": " + std::strerror(errno);
    }
    if (RAND_bytes(out.bytes, sizeof out.bytes) != 1) {
      ::close(fd);
      ::unlink(path.c_str());
      return "cannot generate the node key";
    }
    std::string text = hex(out.bytes, sizeof out.bytes, false) + "\n";
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    wipe(text);
    if (::close(fd) != 0 || !ok) {
      ::unlink(path.c_str());
      return "cannot write " + path;
    }
    created = true;
    return "";
  }
  return "cannot read or create " + path;
}

std::string seal(const NodeKey& k, const std::string& plaintext) {
  unsigned char nonce[kNonce];
  if (RAND_bytes(nonce, sizeof nonce) != 1) return "";
  std::string ct;
  if (!gcm(true, k.bytes, nonce, kSealAad, plaintext, ct)) return "";
  return kSealPrefix + base64_encode(std::string(reinterpret_cast<char*>(nonce), kNonce) + ct);
}

bool unseal(const NodeKey& k, const std::string& sealed, std::string& out) {
  out.clear();
  if (sealed.rfind(kSealPrefix, 0) != 0) return false;
  std::string raw;
  if (!base64_decode(sealed.substr(sizeof kSealPrefix - 1), raw) || raw.size() < kNonce + kTag) return false;
  std::string ct = raw.substr(kNonce);
  return gcm(false, k.bytes, reinterpret_cast<const unsigned char*>(raw.data()), kSealAad, ct, out);
}

std::string encrypt_backup(const std::string& json, const std::string& password, std::string& error, KdfParams kdf) {
  if (password.size() < 8) {
    error = "the backup password must have at least 8 characters";
    return "";
  }
  std::string header(kMagic, 8);
  header += static_cast<char>(1);
  header += static_cast<char>(1);
  header += static_cast<char>(kdf.log2_n);
  header += static_cast<char>(kdf.r);
  header += static_cast<char>(kdf.p);
  unsigned char salt[16], nonce[kNonce], key[32];
  if (RAND_bytes(salt, sizeof salt) != 1 || RAND_bytes(nonce, sizeof nonce) != 1) {
    error = "no randomness";
    return "";
  }
  header.append(reinterpret_cast<char*>(salt), sizeof salt);
  std::string ct;
  bool ok = scrypt_key(password, salt, kdf, key) && gcm(true, key, nonce, header, json, ct);
  OPENSSL_cleanse(key, sizeof key);
  if (!ok) {
    error = "cannot encrypt the backup: " + ossl_errors();
    return "";
  }
  return header + std::string(reinterpret_cast<char*>(nonce), kNonce) + ct;
}

bool decrypt_backup(const std::string& file, const std::string& password, std::string& json, std::string& error) {
  if (file.size() < kHeader + kNonce + kTag || file.compare(0, 8, kMagic) != 0) {
    error = "not a Postern certificate backup";
    return false;
  }
  if (file[8] != 1 || file[9] != 1) {
    error = "unsupported backup version or key derivation";
    return false;
  }
  KdfParams k{static_cast<unsigned char>(file[10]), static_cast<unsigned char>(file[11]),
              static_cast<unsigned char>(file[12])};
  if (k.log2_n < 10 || k.log2_n > 20 || k.r < 1 || k.r > 16 || k.p < 1 || k.p > 4) {
    error = "the backup's key-derivation parameters are out of range";
    return false;
  }
  unsigned char key[32];
  const auto* salt = reinterpret_cast<const unsigned char*>(file.data() + 13);
  const auto* nonce = reinterpret_cast<const unsigned char*>(file.data() + kHeader);
  bool ok = scrypt_key(password, salt, k, key) &&
            gcm(false, key, nonce, file.substr(0, kHeader), file.substr(kHeader + kNonce), json);
  OPENSSL_cleanse(key, sizeof key);
  if (!ok) error = "wrong password or damaged backup file";
  return ok;
}

}  // namespace postern::certs
