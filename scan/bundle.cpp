// bundle.cpp — see bundle.h. Security-sensitive: manifest parsing and bounds, the CMS
// verification (signature, chain to the pinned root, time from the caller), file checks.
#include "scan/bundle.h"

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

namespace postern::scan {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct BundleErrorInfo {
  BundleError e;
  const char* name;
  int code;
};
constexpr std::array<BundleErrorInfo, 15> kErrors{{
    {BundleError::kNone, "OK", 0},
    {BundleError::kManifest, "MANIFEST_INVALID", -10},
    {BundleError::kSignature, "DIGITAL_SIGNATURE_FAILURE", -23},
    {BundleError::kCertExpired, "DIGITAL_SIGNATURE_CERT_EXPIRE", -24},
    {BundleError::kFileName, "FILE_NAME_INVALID", -11},
    {BundleError::kFileMismatch, "FILE_MISMATCH", -12},
    {BundleError::kOlderVersion, "VERSION_OLDER", -30},
    {BundleError::kSameVersionChanged, "VERSION_CONTENT_CHANGED", -31},
    {BundleError::kArchive, "ARCHIVE_UNSAFE", -40},
    {BundleError::kTooLarge, "DOWNLOAD_TOO_LARGE", -41},
    {BundleError::kTruncated, "DOWNLOAD_TRUNCATED", -42},
    {BundleError::kDownload, "DOWNLOAD_FAILED", -43},
    {BundleError::kLicense, "LICENSE_NO_UPDATES", -50},
    {BundleError::kInstall, "INSTALL_FAILED", -60},
    {BundleError::kEngine, "ENGINE_REFUSED", -61},
}};

std::string ossl_err() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

Failure fail(BundleError e, std::string why) { return {e, std::move(why)}; }

bool base64_decode(const std::string& in, std::string& out) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (char c : in) {
    if (c == '=') {
      ++pad;
      continue;
    }
    int v = val(c);
    if (v < 0 || pad) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return pad <= 2 && (in.size() % 4 == 0 || pad == 0);
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Failure parse_file(const json& f, BundleFile& out) {
  if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("size") ||
      !f["size"].is_number_unsigned() || !f.contains("sha256") || !f["sha256"].is_string())
    return fail(BundleError::kManifest, "a files[] entry needs name (string), size (integer) and sha256 (hex)");
  out.name = f["name"].get<std::string>();
  out.size = f["size"].get<uint64_t>();
  out.sha256 = f["sha256"].get<std::string>();
  if (!valid_file_name(out.name))
    return fail(BundleError::kFileName, "file name '" + out.name.substr(0, 80) + "' is not a plain ClamAV signature file name");
  if (!is_hex64(out.sha256)) return fail(BundleError::kManifest, "sha256 of " + out.name + " is not 64 lower-case hex digits");
  return {};
}

Failure parse_sample(const json& s, SelfTestSample& out) {
  if (!s.is_object() || !s.contains("name") || !s["name"].is_string() || !s.contains("content") ||
      !s["content"].is_string() || !s.contains("expect") || !s["expect"].is_string())
    return fail(BundleError::kManifest, "a samples[] entry needs name, content (base64) and expect (strings)");
  out.name = s["name"].get<std::string>();
  out.expect = s["expect"].get<std::string>();
  const auto& b64 = s["content"].get_ref<const std::string&>();
  if (b64.size() > kMaxSampleSize * 4 / 3 + 4 || !base64_decode(b64, out.content))
    return fail(BundleError::kManifest, "sample " + out.name.substr(0, 80) + ": content is not base64 of at most 64 KiB");
  if (out.expect.empty() || out.name.empty()) return fail(BundleError::kManifest, "sample name and expect must not be empty");
  return {};
}

Failure parse_lists(const json& j, Manifest& out) {
  std::set<std::string> names;
  for (auto& f : j["files"]) {
    BundleFile bf;
    if (auto r = parse_file(f, bf); !r.ok()) return r;
    if (!names.insert(bf.name).second) return fail(BundleError::kManifest, "file " + bf.name + " is listed twice");
    out.files.push_back(std::move(bf));
  }
  if (j.contains("samples")) {
    if (!j["samples"].is_array() || j["samples"].size() > kMaxSamples)
      return fail(BundleError::kManifest, "samples must be an array of at most " + std::to_string(kMaxSamples));
    for (auto& s : j["samples"]) {
      SelfTestSample st;
      if (auto r = parse_sample(s, st); !r.ok()) return r;
      out.samples.push_back(std::move(st));
    }
  }
  return {};
}

struct Free {
  void operator()(BIO* b) const { BIO_free(b); }
  void operator()(CMS_ContentInfo* c) const { CMS_ContentInfo_free(c); }
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};

int64_t asn1_unix(const ASN1_TIME* t) {
  struct tm tm {};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string der_fingerprint(X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(x, EVP_sha256(), md, &n);
  static const char* hx = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s.push_back(hx[md[i] >> 4]);
    s.push_back(hx[md[i] & 15]);
  }
  return s;
}

// The pinned root(s): every certificate in the PEM text.
std::unique_ptr<X509_STORE, Free> root_store(std::string_view root_pem, int& count) {
  std::unique_ptr<X509_STORE, Free> store(X509_STORE_new());
  std::unique_ptr<BIO, Free> bio(BIO_new_mem_buf(root_pem.data(), static_cast<int>(root_pem.size())));
  count = 0;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    if (X509_STORE_add_cert(store.get(), x) == 1) ++count;
    X509_free(x);
  }
  ERR_clear_error();
  return store;
}

// The signer's chain to the root, at `now` (or without time checks).
Failure verify_chain(X509* signer, STACK_OF(X509)* extra, X509_STORE* store, int64_t now, bool check_time) {
  std::unique_ptr<X509_STORE_CTX, Free> ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store, signer, extra) != 1)
    return fail(BundleError::kSignature, "cannot set up the chain check: " + ossl_err());
  X509_VERIFY_PARAM* p = X509_STORE_CTX_get0_param(ctx.get());
  if (check_time) X509_VERIFY_PARAM_set_time(p, static_cast<time_t>(now));
  else X509_VERIFY_PARAM_set_flags(p, X509_V_FLAG_NO_CHECK_TIME);
  if (X509_verify_cert(ctx.get()) == 1) return {};
  int err = X509_STORE_CTX_get_error(ctx.get());
  std::string what = X509_verify_cert_error_string(err);
  ERR_clear_error();
  if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID)
    return fail(BundleError::kCertExpired, "the signing certificate chain is not valid now: " + what);
  return fail(BundleError::kSignature, "the signing certificate does not chain to the pattern root: " + what);
}

}  // namespace

const char* error_name(BundleError e) {
  for (auto& i : kErrors)
    if (i.e == e) return i.name;
  return "UNKNOWN";
}

int error_code(BundleError e) {
  for (auto& i : kErrors)
    if (i.e == e) return i.code;
  return -1;
}

bool valid_file_name(std::string_view name) {
  static const std::array<std::string_view, 22> kTypes{"hdb", "hsb", "hdu", "hsu", "mdb", "msb", "mdu", "msu",
                                                       "ndb", "ndu", "ldb", "ldu", "idb", "cdb", "fp",  "sfp",
                                                       "ign", "ign2", "yar", "yara", "ftm", "pdb"};
  if (name.empty() || name.size() > 64) return false;
  char c0 = name[0];
  if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z') || (c0 >= '0' && c0 <= '9'))) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  if (name.find("..") != std::string_view::npos) return false;
  auto dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return false;
  auto ext = name.substr(dot + 1);
  return std::find(kTypes.begin(), kTypes.end(), ext) != kTypes.end();
}

std::string Manifest::content_id() const {
  json j = json::object();
  json fl = json::array();
  auto sorted = files;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.name < b.name; });
  for (auto& f : sorted) fl.push_back({f.name, f.size, f.sha256});
  json sl = json::array();
  for (auto& s : samples) sl.push_back({s.name, sha256_hex(s.content), s.expect});
  j["files"] = fl;
  j["samples"] = sl;
  j["version"] = version;
  return sha256_hex(j.dump());
}

Failure parse_manifest(std::string_view bytes, Manifest& out) {
  out = Manifest{};
  if (bytes.size() > kMaxManifestSize) return fail(BundleError::kManifest, "manifest larger than 1 MiB");
  auto j = json::parse(bytes.begin(), bytes.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(BundleError::kManifest, "manifest is not a JSON object");
  if (!j.contains("format") || !j["format"].is_number_integer() || j["format"].get<int64_t>() != 1)
    return fail(BundleError::kManifest, "manifest format must be 1");
  if (!j.contains("version") || !j["version"].is_number_unsigned() || j["version"].get<uint64_t>() == 0)
    return fail(BundleError::kManifest, "manifest version must be a positive integer");
  if (!j.contains("issued_at") || !j["issued_at"].is_number_integer() || j["issued_at"].get<int64_t>() <= 0)
    return fail(BundleError::kManifest, "manifest issued_at must be a positive integer (unix seconds)");
  if (!j.contains("files") || !j["files"].is_array() || j["files"].empty() || j["files"].size() > kMaxFiles)
    return fail(BundleError::kManifest, "manifest files must be an array of 1 to " + std::to_string(kMaxFiles) + " entries");
  out.version = j["version"].get<uint64_t>();
  out.issued_at = j["issued_at"].get<int64_t>();
  return parse_lists(j, out);
}

std::string manifest_json(const Manifest& m) {
  json fl = json::array();
  for (auto& f : m.files) fl.push_back({{"name", f.name}, {"size", f.size}, {"sha256", f.sha256}});
  json sl = json::array();
  for (auto& s : m.samples) {
    std::string b64(4 * ((s.content.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                            reinterpret_cast<const unsigned char*>(s.content.data()), static_cast<int>(s.content.size()));
    b64.resize(static_cast<size_t>(n));
    sl.push_back({{"name", s.name}, {"content", b64}, {"expect", s.expect}});
  }
  json j{{"format", m.format}, {"version", m.version}, {"issued_at", m.issued_at}, {"files", fl}, {"samples", sl}};
  return j.dump(2) + "\n";
}

Failure verify_signature(std::string_view manifest, std::string_view sig_der, std::string_view root_pem,
                         int64_t now, bool check_time, SignerInfo& signer) {
  int roots = 0;
  auto store = root_store(root_pem, roots);
  if (roots == 0) return fail(BundleError::kSignature, "no pattern root certificate is pinned (updates.pattern_root)");
  if (sig_der.empty() || sig_der.size() > kMaxSignatureSize)
    return fail(BundleError::kSignature, "signature missing or larger than 64 KiB");
  std::unique_ptr<BIO, Free> sb(BIO_new_mem_buf(sig_der.data(), static_cast<int>(sig_der.size())));
  std::unique_ptr<CMS_ContentInfo, Free> cms(d2i_CMS_bio(sb.get(), nullptr));
  if (!cms) {
    ERR_clear_error();
    return fail(BundleError::kSignature, "signature is not a DER CMS structure");
  }
  std::unique_ptr<BIO, Free> content(BIO_new_mem_buf(manifest.data(), static_cast<int>(manifest.size())));
  // The signature itself first (the chain is checked below, with our own time rules).
  if (CMS_verify(cms.get(), nullptr, store.get(), content.get(), nullptr, CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) != 1)
    return fail(BundleError::kSignature, "the signature does not match the manifest: " + ossl_err());
  STACK_OF(X509)* signers = CMS_get0_signers(cms.get());
  if (!signers || sk_X509_num(signers) != 1) {
    sk_X509_free(signers);
    return fail(BundleError::kSignature, "the signature must have exactly one signer");
  }
  X509* s = sk_X509_value(signers, 0);
  sk_X509_free(signers);
  char subj[512];
  X509_NAME_oneline(X509_get_subject_name(s), subj, sizeof subj);
  signer = {subj, der_fingerprint(s), asn1_unix(X509_get0_notBefore(s)), asn1_unix(X509_get0_notAfter(s))};
  if (X509_check_ca(s) != 0) return fail(BundleError::kSignature, "the signer is a CA certificate, not a signing certificate");
  STACK_OF(X509)* certs = CMS_get1_certs(cms.get());
  Failure r = verify_chain(s, certs, store.get(), now, check_time);
  sk_X509_pop_free(certs, X509_free);
  return r;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static const char* hx = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s.push_back(hx[md[i] >> 4]);
    s.push_back(hx[md[i] & 15]);
  }
  return s;
}

std::optional<std::string> read_file_bounded(const std::string& path, size_t max, std::string& why) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(path, ec))) {
    why = "missing or not a regular file";
    return std::nullopt;
  }
  auto size = fs::file_size(path, ec);
  if (ec || size > max) {
    why = ec ? "cannot stat" : "larger than " + std::to_string(max) + " bytes";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  std::string s(size, '\0');
  if (!in.read(s.data(), static_cast<std::streamsize>(size))) {
    why = "cannot read";
    return std::nullopt;
  }
  return s;
}

Failure verify_files(const std::string& dir, const Manifest& m) {
  std::set<std::string> listed{kManifestName, kSignatureName};
  for (auto& f : m.files) {
    listed.insert(f.name);
    std::string why, path = dir + "/" + f.name;
    std::error_code ec;
    if (!fs::is_regular_file(fs::symlink_status(path, ec))) return fail(BundleError::kFileMismatch, f.name + " is missing");
    auto size = fs::file_size(path, ec);
    if (ec) return fail(BundleError::kFileMismatch, f.name + ": cannot stat");
    if (size < f.size) return fail(BundleError::kTruncated, f.name + " is " + std::to_string(size) + " bytes, the manifest says " + std::to_string(f.size));
    if (size > f.size) return fail(BundleError::kFileMismatch, f.name + " is " + std::to_string(size) + " bytes, the manifest says " + std::to_string(f.size));
    auto data = read_file_bounded(path, f.size, why);
    if (!data) return fail(BundleError::kFileMismatch, f.name + ": " + why);
    if (sha256_hex(*data) != f.sha256) return fail(BundleError::kFileMismatch, f.name + ": SHA-256 differs from the manifest");
  }
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec))
    if (!listed.count(e.path().filename().string()))
      return fail(BundleError::kFileMismatch, "file " + e.path().filename().string().substr(0, 80) + " is not in the manifest");
  if (ec) return fail(BundleError::kFileMismatch, "cannot list " + dir + ": " + ec.message());
  return {};
}

}  // namespace postern::scan
