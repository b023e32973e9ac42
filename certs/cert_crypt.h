// cert_crypt.h — private keys at rest and the backup file.
//
// Node key: <state_dir>/node.key, 32 random bytes (hex), mode 0600, created at first start.
// Every private key the store writes (database, local cache) is sealed under it with
// AES-256-GCM: "pk1:" + base64(nonce[12] | ciphertext | tag[16]), the AAD fixed to the format.
// Nodes sharing one database must share this file (copy it before the second node's first start).
//
// Backup: one file, password-protected:
//   magic "PSTNCRTB" | version u8 (1) | kdf u8 (1 = scrypt) | log2 N u8 | r u8 | p u8 |
//   salt[16] | nonce[12] | AES-256-GCM(ciphertext) | tag[16]
// the 29 header bytes are the AAD; the key is scrypt(password, salt, N, r, p); the plaintext is
// JSON (entries with their keys unsealed, bindings). Restore accepts only sane KDF parameters so
// a crafted file cannot make it allocate gigabytes.
// Security-sensitive: all of it. Keys and passwords are wiped after use; a wrong key, password
// or a modified byte fails the GCM tag and nothing is returned.
#pragma once

#include <string>

namespace postern::certs {

struct NodeKey {
  unsigned char bytes[32] = {};
  ~NodeKey();
};

// Reads <state_dir>/node.key, creating it (0600, O_EXCL) when absent. "" or the error.
std::string load_or_create_node_key(const std::string& state_dir, NodeKey& out, bool& created);

std::string seal(const NodeKey& k, const std::string& plaintext);
// False (out empty) on a wrong node key, a modified text or a bad format.
bool unseal(const NodeKey& k, const std::string& sealed, std::string& out);

struct KdfParams {
  int log2_n = 16, r = 8, p = 1;
};
// The backup file's bytes, or "" with `error`.
std::string encrypt_backup(const std::string& json, const std::string& password, std::string& error,
                           KdfParams kdf = {});
// The JSON, or false with `error` ("wrong password or damaged file", "not a Postern backup", ...).
bool decrypt_backup(const std::string& file, const std::string& password, std::string& json, std::string& error);

}  // namespace postern::certs
