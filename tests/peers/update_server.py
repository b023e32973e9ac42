#!/usr/bin/env python3
"""A test pattern update server: serves DIR/updates/ (manifest.json, manifest.sig, files/NAME) over
plain HTTP on 127.0.0.1, with ETags (If-None-Match -> 304). DIR/control.json, re-read on every
request, can make it misbehave: {"truncate": ["files/x.hdb"]} sends the full Content-Length and
then only half the body before closing (a cut download); {"tamper": ["files/x.hdb"]} flips the
first byte of the body. Every request is appended to DIR/requests.log ("GET path status").

usage: update_server.py --dir DIR --listen 127.0.0.1:PORT   (prints "ready" when listening)
"""
import argparse
import hashlib
import http.server
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--listen", required=True)
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    assert host == "127.0.0.1", "loopback only"
    root = os.path.abspath(a.dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def control(self):
            try:
                with open(os.path.join(root, "control.json")) as f:
                    return json.load(f)
            except (OSError, ValueError):
                return {}

        def record(self, status):
            with open(os.path.join(root, "requests.log"), "a") as f:
                f.write("%s %s %d\n" % (self.command, self.path, status))

        def do_GET(self):
            rel = self.path.split("?", 1)[0]
            if not rel.startswith("/updates/") or ".." in rel:
                return self.answer(404, b"no such file\n")
            name = rel[len("/updates/"):]
            path = os.path.join(root, "updates", name)
            if not os.path.isfile(path):
                return self.answer(404, b"no such file\n")
            with open(path, "rb") as f:
                body = f.read()
            ctl = self.control()
            if name in ctl.get("tamper", []) and body:
                body = bytes([body[0] ^ 1]) + body[1:]
            etag = '"%s"' % hashlib.sha256(body).hexdigest()[:32]
            if self.headers.get("If-None-Match") == etag:
                self.record(304)
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if name in ctl.get("truncate", []):
                self.record(200)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.answer(200, body, etag)

        def answer(self, status, body, etag=None):
            self.record(status)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if etag:
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
