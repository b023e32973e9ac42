// next_hop.cpp — choose_next_hop (delivery_job.h): one rule for delivery and verification.
#include "mta/delivery/delivery_job.h"
#include "policy/tls_policy.h"

namespace postern::delivery {

NextHopChoice choose_next_hop(const Config& cfg, const std::string& domain) {
  NextHopChoice c;
  c.tls = policy::outbound_tls_level(cfg.outbound, domain);
  auto it = cfg.routes.find(domain);
  if (it == cfg.routes.end()) it = cfg.routes.find("*");
  if (it != cfg.routes.end()) {
    c.has_route = true;
    c.route = it->second;
    c.key = "route:" + c.route.host + ":" + std::to_string(c.route.port) + (c.route.mx ? "/mx" : "");
  } else {
    c.key = "mx:" + domain;
  }
  c.key += "|tls=" + std::to_string(static_cast<int>(c.tls));
  return c;
}

}  // namespace postern::delivery
