#!/usr/bin/env python3
"""license_tamper_proxy.py — a man in the middle for the license tests: forwards POSTs to the
real postern-license-server and, in "tamper" mode, rewrites the signed answer's payload (a later
expiry date) while keeping its signature, as an attacker on the path would. It also serves as a
forward HTTP proxy (a request line with an absolute http:// URL goes to that URL; loopback
only), so license.proxy can be tested; --log FILE gets one line per request. Loopback only.

usage: license_tamper_proxy.py --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT
                                [--mode tamper|pass] [--expires YYYY-MM-DD] [--log FILE]
Prints "ready" once listening; stopped by its PID.
"""
import argparse
import http.server
import json
import re
import sys
import urllib.error
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--mode", default="tamper", choices=["tamper", "pass"])
    ap.add_argument("--expires", default="2099-12-31")
    ap.add_argument("--log")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    assert host.startswith("127."), "loopback only"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = min(int(self.headers.get("Content-Length", "0")), 65536)
            body = self.rfile.read(n)
            url = self.path if self.path.startswith("http://") else a.upstream + self.path
            assert url.startswith("http://127."), "loopback only"
            if a.log:
                with open(a.log, "a") as f:
                    f.write("POST %s\n" % url)
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status, data = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, data = e.code, e.read()
            if a.mode == "tamper" and status == 200:
                doc = json.loads(data)
                doc["payload"] = re.sub(r'"expires":"[0-9-]+"', '"expires":"%s"' % a.expires, doc["payload"])
                data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer((host, int(port)), Handler)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
