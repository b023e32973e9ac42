// postern_bundle_main.cpp — postern-bundle, the vendor tool for pattern bundles:
//   make-root   a pattern root CA and its key (the certificate Postern nodes pin)
//   make-signer a signing certificate issued by the root (--days; --start for tests)
//   build       signature files + self-test samples + --version -> a signed bundle file
//   resign      the same bundle (same manifest bytes) signed again: a signature-only refresh
//   inspect     prints a bundle file's manifest and signer (verified when --root is given)
// Security-sensitive: private keys are written 0600 and never printed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "scan/bundle.h"
#include "scan/bundle_archive.h"
#include "scan/bundle_sign.h"

namespace fs = std::filesystem;
using namespace postern::scan;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size()) || ::fchmod(fd, mode) != 0 ||
      ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot write " + path);
}

std::string unhex(const std::string& text) {
  std::string out, h;
  for (char c : text)
    if (std::isxdigit(static_cast<unsigned char>(c))) h.push_back(c);
  if (h.size() % 2) throw std::runtime_error("odd number of hex digits");
  for (size_t i = 0; i < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

// NAME:FILE:EXPECT (FILE ending in .hex holds the content as hex digits).
SelfTestSample parse_sample(const std::string& spec) {
  auto a = spec.find(':'), b = spec.rfind(':');
  if (a == std::string::npos || a == b) throw std::runtime_error("--sample wants NAME:FILE:EXPECT, got " + spec);
  std::string file = spec.substr(a + 1, b - a - 1), content = slurp(file);
  if (file.size() > 4 && file.substr(file.size() - 4) == ".hex") content = unhex(content);
  return {spec.substr(0, a), content, spec.substr(b + 1)};
}

void write_pair(const CertAndKey& ck, const std::string& cert, const std::string& key) {
  if (!ck.error.empty()) throw std::runtime_error(ck.error);
  write_file(cert, ck.cert_pem, 0644);
  write_file(key, ck.key_pem, 0600);
}

void write_signed(const std::string& out, const std::string& manifest, const std::vector<ArchiveEntry>& files,
                  const std::string& cert, const std::string& key) {
  std::string err, sig = sign_manifest(manifest, slurp(cert), slurp(key), err);
  if (sig.empty()) throw std::runtime_error(err);
  std::vector<ArchiveEntry> entries{{kManifestName, manifest}, {kSignatureName, sig}};
  entries.insert(entries.end(), files.begin(), files.end());
  std::string tmp = out + ".tmp";
  if (auto e = write_bundle(tmp, entries); !e.empty()) throw std::runtime_error("cannot write " + out + ": " + e);
  fs::rename(tmp, out);
}

int build(uint64_t version, int64_t issued_at, const std::vector<std::string>& files, const std::vector<std::string>& samples,
          const std::string& cert, const std::string& key, const std::string& out) {
  Manifest m;
  m.version = version;
  m.issued_at = issued_at ? issued_at : static_cast<int64_t>(std::time(nullptr));
  std::vector<ArchiveEntry> entries;
  for (auto& f : files) {
    std::string name = fs::path(f).filename().string(), data = slurp(f);
    if (!valid_file_name(name)) throw std::runtime_error(name + " is not a ClamAV signature file name (.hdb .hsb .ndb .ldb .yar ...)");
    m.files.push_back({name, data.size(), sha256_hex(data)});
    entries.push_back({name, data});
  }
  for (auto& s : samples) m.samples.push_back(parse_sample(s));
  write_signed(out, manifest_json(m), entries, cert, key);
  std::cout << "bundle " << out << " version=" << version << " files=" << files.size() << " samples=" << samples.size() << "\n";
  return 0;
}

int resign(const std::string& in, const std::string& cert, const std::string& key, const std::string& out) {
  std::vector<ArchiveEntry> entries;
  if (auto f = read_bundle_entries(in, UnpackLimits{}, entries); !f.ok()) throw std::runtime_error(f.why);
  std::string manifest;
  std::vector<ArchiveEntry> files;
  for (auto& e : entries) {
    if (e.name == kManifestName) manifest = e.data;
    else if (e.name != kSignatureName) files.push_back(e);
  }
  write_signed(out, manifest, files, cert, key);
  std::cout << "bundle " << out << " re-signed (signature-only refresh)\n";
  return 0;
}

int inspect(const std::string& in, const std::string& root) {
  std::vector<ArchiveEntry> entries;
  if (auto f = read_bundle_entries(in, UnpackLimits{}, entries); !f.ok()) throw std::runtime_error(f.why);
  std::string manifest, sig;
  for (auto& e : entries) {
    if (e.name == kManifestName) manifest = e.data;
    if (e.name == kSignatureName) sig = e.data;
  }
  std::cout << manifest;
  if (root.empty()) return 0;
  SignerInfo s;
  auto f = verify_signature(manifest, sig, slurp(root), std::time(nullptr), true, s);
  std::cout << "signer: " << s.subject << " not_after=" << s.not_after << "\n"
            << (f.ok() ? "signature: good" : std::string("signature: ") + error_name(f.code) + ": " + f.why) << "\n";
  return f.ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"postern-bundle - make a pattern root and signers, build and re-sign pattern bundles (vendor side)"};
  app.require_subcommand(1);
  std::string cert, key, root_cert, root_key, cn, out, in, root;
  int days = 0;
  int64_t start = 0, issued_at = 0;
  uint64_t version = 0;
  std::vector<std::string> files, samples;
  auto* mr = app.add_subcommand("make-root", "make a pattern root CA certificate and key");
  mr->add_option("--cert", cert, "certificate out (PEM)")->required();
  mr->add_option("--key", key, "private key out (PEM, 0600)")->required();
  mr->add_option("--cn", cn, "common name")->default_val("Postern pattern root");
  mr->add_option("--days", days, "validity in days")->default_val(3650);
  auto* ms = app.add_subcommand("make-signer", "issue a signing certificate from the root");
  ms->add_option("--root-cert", root_cert)->required();
  ms->add_option("--root-key", root_key)->required();
  ms->add_option("--cert", cert, "certificate out (PEM)")->required();
  ms->add_option("--key", key, "private key out (PEM, 0600)")->required();
  ms->add_option("--cn", cn)->default_val("Postern pattern signer");
  ms->add_option("--days", days, "validity in days")->default_val(365);
  ms->add_option("--start", start, "notBefore as unix seconds (default now; tests make old signers)");
  auto* b = app.add_subcommand("build", "build and sign a bundle from signature files");
  b->add_option("--version", version, "bundle version (integer, grows with every change)")->required()->check(CLI::PositiveNumber);
  b->add_option("--issued-at", issued_at, "unix seconds (default now)");
  b->add_option("--signer-cert", cert)->required();
  b->add_option("--signer-key", key)->required();
  b->add_option("--sample", samples, "self-test sample NAME:FILE:EXPECT (FILE.hex: hex digits)");
  b->add_option("--out", out, "bundle file to write")->required();
  b->add_option("files", files, "signature files (.hdb .hsb .ndb .ldb .yar ...)")->required();
  auto* rs = app.add_subcommand("resign", "sign an existing bundle again (signature-only refresh)");
  rs->add_option("--in", in)->required();
  rs->add_option("--signer-cert", cert)->required();
  rs->add_option("--signer-key", key)->required();
  rs->add_option("--out", out)->required();
  auto* is = app.add_subcommand("inspect", "print a bundle's manifest (and verify it with --root)");
  is->add_option("--in", in)->required();
  is->add_option("--root", root, "pattern root certificate (PEM)");
  CLI11_PARSE(app, argc, argv);
  try {
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    if (*mr) write_pair(make_pattern_root(cn, now - 3600, now + int64_t{days} * 86400), cert, key);
    if (*ms) {
      int64_t nb = start ? start : now - 3600;
      write_pair(make_pattern_signer(slurp(root_cert), slurp(root_key), cn, nb, nb + int64_t{days} * 86400), cert, key);
    }
    if (*b) return build(version, issued_at, files, samples, cert, key, out);
    if (*rs) return resign(in, cert, key, out);
    if (*is) return inspect(in, root);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "postern-bundle: " << e.what() << "\n";
    return 1;
  }
}
