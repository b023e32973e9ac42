#!/usr/bin/env python3
"""dns_peer.py — a small authoritative DNS server for tests (UDP, 127.0.0.x only).

  dns_peer.py --listen 127.0.0.1:5353 --zone zone.json

zone.json (re-read on every query):
  {"example.test": {"MX": [[10, "mx1.example.test"], [20, "mx2.example.test"]]},
   "mx1.example.test": {"A": ["127.0.0.10"]},
   "nullmx.test": {"MX": [[0, "."]]},
   "broken.test": "SERVFAIL",
   "slow.test": "TIMEOUT"}
A name not in the zone is NXDOMAIN; a known name without the asked type is NODATA.
"""
import argparse
import json
import socket

from dnslib import AAAA, A, DNSRecord, MX, QTYPE, RCODE, RR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--zone", required=True)
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    assert host.startswith("127."), "test peers bind loopback only"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(4096)
        try:
            q = DNSRecord.parse(data)
        except Exception:
            continue
        with open(a.zone) as f:
            zone = json.load(f)
        name = str(q.q.qname).rstrip(".").lower()
        qtype = QTYPE[q.q.qtype]
        r = q.reply()
        entry = zone.get(name)
        if entry == "TIMEOUT":
            continue
        if entry == "SERVFAIL":
            r.header.rcode = RCODE.SERVFAIL
        elif entry is None:
            r.header.rcode = RCODE.NXDOMAIN
        elif qtype == "MX":
            for pref, exch in entry.get("MX", []):
                r.add_answer(RR(name, QTYPE.MX, rdata=MX(exch, pref), ttl=60))
        elif qtype == "A":
            for ip in entry.get("A", []):
                r.add_answer(RR(name, QTYPE.A, rdata=A(ip), ttl=60))
        elif qtype == "AAAA":
            for ip in entry.get("AAAA", []):
                r.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(ip), ttl=60))
        s.sendto(r.pack(), addr)


if __name__ == "__main__":
    main()
