// recipient_map.h — is this recipient known at our domains? (relay.recipient_map)
//
// Pure: the SMTP session asks at RCPT, after the relay rules accepted the recipient. With a map
// configured, every recipient at one of relay.domains must be listed (an address, or "@domain"
// for all of a domain's addresses), as with Postfix's relay_recipient_maps; postmaster@ is
// always known (RFC 5321 4.5.1). A client relaying to other domains is not checked. Refusing
// unknown users at SMTP time is what keeps Postern from sending backscatter.
//
// The other half — asking the downstream server (a recipient-verification probe) — needs the
// outbound path and is not here.
#pragma once

#include <string>
#include <string_view>

#include "conf/config.h"

namespace postern::policy {

enum class RecipientVerdict {
  kNotChecked,  // no map, or not one of our domains
  kKnown,
  kUnknown,     // 550 5.1.1
};

RecipientVerdict recipient_lookup(const RelayConfig& relay, std::string_view local, std::string_view domain);

// A fingerprint of the map's file(s): names, sizes and modification times ("" when off or
// unreadable). A caller that polls it (once a second, say) and sees it change reloads the
// configuration, as on SIGHUP, to pick up an edited map.
std::string recipient_map_fingerprint(const std::string& path);

// Polled once a second: true once when the map's fingerprint changed and then stayed the same
// for one more poll (a map being written is not read half-way). A new path (a reload changed
// relay.recipient_map) or reset() after a reload that read the map starts afresh without a
// change. Only the map is reloaded on a change, not the configuration file, which an admin may
// be in the middle of editing.
class RecipientMapWatch {
 public:
  bool poll(const std::string& path);
  void reset(const std::string& path);

 private:
  std::string path_, seen_, pending_;
  bool started_ = false;
};

}  // namespace postern::policy
