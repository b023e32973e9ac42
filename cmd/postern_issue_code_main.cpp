// postern-issue-code — the vendor's tool that issues activation codes and renews them, in the
// license server's database file (licensing/vendor_db.h):
//   postern-issue-code LICENSE --expires YYYY-MM-DD --db FILE [--prefix IM|AS|DL]
//       prints a new code for LICENSE (antivirus, antispam, reputation = antispam, prefilter, dlp)
//   postern-issue-code --renew CODE --expires YYYY-MM-DD --db FILE
//       moves an issued code's expiry (a contract renewal); the running license server serves
//       the new date at its next request.
// Exit status 0, or 1 with the reason on stderr (2 for usage). Security-sensitive: serials come
// from the file under its lock; the random part of a code from RAND_bytes.
#include <openssl/rand.h>

#include <CLI/CLI.hpp>
#include <ctime>
#include <iostream>

#include "licensing/activation_code.h"
#include "licensing/vendor_db.h"

namespace lic = postern::licensing;

namespace {

int fail(const std::string& why) {
  std::cerr << "postern-issue-code: " << why << "\n";
  return 1;
}

int issue(const std::string& license, const std::string& prefix_in, lic::Day expires, const std::string& db_path) {
  auto kind = lic::kind_from_cli(license);
  if (!kind) return fail("unknown license '" + license + "' (antivirus, antispam, reputation, prefilter, dlp, encryption)");
  if (*kind == lic::LicenseKind::kReputation) kind = lic::LicenseKind::kAntispam;  // one code serves both
  if (!lic::can_activate(*kind)) return fail("email encryption is not sold: no code can be issued for it");
  std::string prefix = prefix_in.empty() ? std::string(lic::default_prefix(*kind)) : prefix_in;
  if (!lic::prefix_allowed_for_issue(*kind, prefix))
    return fail("the prefix " + prefix + "- is not for " + license + " codes");
  lic::VendorDbLock lock(db_path);
  if (!lock.ok()) return fail("cannot lock " + db_path + ".lock");
  lic::VendorDb db;
  if (auto e = lic::VendorDb::load(db_path, db); !e.empty()) return fail(e);
  uint32_t rnd = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&rnd), sizeof rnd) != 1) return fail("no randomness");
  uint64_t serial = db.next_serial++;
  std::string code = lic::make_code(*kind, prefix, serial, rnd & 0x3FFFFFFFu);
  if (db.codes.count(code)) return fail("code collision; run again");
  db.codes[code] = {*kind, expires, serial, static_cast<int64_t>(std::time(nullptr)), 0};
  if (auto e = db.save(db_path); !e.empty()) return fail(e);
  std::cout << code << "\n";
  return 0;
}

int renew(const std::string& code_in, lic::Day expires, const std::string& db_path) {
  auto code = lic::parse_code(code_in);
  if (!code) return fail(lic::kCodeRefused);
  lic::VendorDbLock lock(db_path);
  if (!lock.ok()) return fail("cannot lock " + db_path + ".lock");
  lic::VendorDb db;
  if (auto e = lic::VendorDb::load(db_path, db); !e.empty()) return fail(e);
  auto it = db.codes.find(code->text);
  if (it == db.codes.end()) return fail("no such code in " + db_path + ": " + code->text);
  it->second.expires = expires;
  it->second.renewed_at = static_cast<int64_t>(std::time(nullptr));
  if (auto e = db.save(db_path); !e.empty()) return fail(e);
  std::cout << code->text << " expires " << lic::format_date(expires) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"postern-issue-code - issue and renew Postern activation codes (vendor side)"};
  std::string license, expires, db, prefix, renew_code;
  app.add_option("license", license, "antivirus, antispam, reputation, prefilter or dlp");
  app.add_option("--expires", expires, "expiry date D, YYYY-MM-DD")->required();
  app.add_option("--db", db, "the license server's database file")->required();
  app.add_option("--prefix", prefix, "IM, AS (antispam) or DL (dlp); default IM, DL for dlp");
  app.add_option("--renew", renew_code, "renew this issued code instead of issuing one");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto d = lic::parse_date(expires);
  if (!d) return fail("--expires must be a date YYYY-MM-DD, not '" + expires + "'"), 2;
  try {
    if (!renew_code.empty()) {
      if (!license.empty()) return fail("give either LICENSE or --renew CODE"), 2;
      return renew(renew_code, *d, db);
    }
    if (license.empty()) return fail("LICENSE or --renew CODE is required"), 2;
    return issue(license, prefix, *d, db);
  } catch (const std::exception& e) {
    return fail(std::string("internal error: ") + e.what());
  }
}
