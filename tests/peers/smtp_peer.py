#!/usr/bin/env python3
"""smtp_peer.py — a downstream SMTP server for tests: a stand-in for the outside world.

It stores what it receives and answers as the test tells it. Binds 127.0.0.x only.

  smtp_peer.py --listen 127.0.0.1:2526 --dir DIR [--cert C --key K] [--no-starttls]
               [--no-chunking] [--no-pipelining] [--no-8bitmime] [--no-smtputf8]
               [--client-cert] [--control FILE]

DIR/NNNN.eml and DIR/NNNN.json (mail_from, rcpts, tls, tls_resumed, client_cert) for every message accepted;
DIR/commands.log: one JSON line per command received ({"cmd": ..., "tls": bool}).
The control file (JSON, re-read for every connection) scripts replies:
  {"rules": [{"at": "MAIL|RCPT|DATA|EOD|EHLO|GREETING", "match": "substring", "reply": "451 ...",
              "times": N}, {"at": "EOD", "sleep": 0.2}],
   "starttls": "offer" | "inject" | "garbage"}
"times" counts down across connections; a rule with no "times" always applies.
"inject": answer STARTTLS with "220 go\\r\\n250 fake\\r\\n" in one write, then wait (CVE-2021-38371).
"garbage": answer 220, then send bytes that are no TLS.
"""
import argparse
import json
import os
import socket
import socketserver
import ssl
import threading
import time

LOCK = threading.Lock()
COUNTER = [0]
USED = {}


_TLS_CTX = None


def server_tls_context():
    """One server context for every connection, as a real MTA has: TLS sessions can resume."""
    global _TLS_CTX
    if _TLS_CTX is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        if ARGS.client_cert:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.check_hostname = False
            ctx.load_verify_locations(ARGS.client_ca or ARGS.cert)
        _TLS_CTX = ctx
    return _TLS_CTX


class Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def setup(self):
        super().setup()
        self.tls = False
        self.client_cert = None
        self.tls_resumed = False

    def log_cmd(self, line):
        with LOCK, open(os.path.join(ARGS.dir, "commands.log"), "a") as f:
            f.write(json.dumps({"cmd": line, "tls": self.tls}) + "\n")

    def control(self):
        try:
            with open(ARGS.control) as f:
                return json.load(f)
        except (OSError, ValueError, TypeError):
            return {}

    def rule(self, at, arg=""):
        with LOCK:
            for i, r in enumerate(self.ctl.get("rules", [])):
                if r.get("at") != at or r.get("match", "") not in arg:
                    continue
                key = (i, json.dumps(r, sort_keys=True))
                if "times" in r:
                    if USED.get(key, 0) >= r["times"]:
                        continue
                    USED[key] = USED.get(key, 0) + 1
                if "sleep" in r:  # slow down, then answer normally
                    time.sleep(r["sleep"])
                    continue
                return r["reply"]
        return None

    def send(self, text):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def readline(self):
        line = self.rfile.readline(65536)
        if not line:
            raise ConnectionError("closed")
        return line.decode("utf-8", errors="replace").rstrip("\r\n")

    def handle(self):
        self.ctl = self.control()
        try:
            self.session()
        except (ConnectionError, ssl.SSLError, OSError, socket.timeout):
            pass

    def ehlo_lines(self):
        ext = ["peer.test"]
        if not ARGS.no_pipelining:
            ext.append("PIPELINING")
        ext.append("SIZE 100000000")
        if not ARGS.no_8bitmime:
            ext.append("8BITMIME")
        if not ARGS.no_smtputf8:
            ext.append("SMTPUTF8")
        if not ARGS.no_chunking:
            ext.append("CHUNKING")
        if not ARGS.no_dsn:
            ext.append("DSN")
        if ARGS.cert and not ARGS.no_starttls and not self.tls:
            ext.append("STARTTLS")
        return "\r\n".join(("250-" if i < len(ext) - 1 else "250 ") + e for i, e in enumerate(ext))

    def session(self):
        g = self.rule("GREETING")
        self.send(g or "220 peer.test ESMTP test peer")
        if g and not g.startswith("2"):
            return
        mail_from, rcpts = None, []
        while True:
            line = self.readline()
            self.log_cmd(line)
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb) + 1:]
            if verb in ("EHLO", "HELO"):
                r = self.rule("EHLO", arg)
                self.send(r or (self.ehlo_lines() if verb == "EHLO" else "250 peer.test"))
                mail_from, rcpts = None, []
            elif verb == "STARTTLS":
                mode = self.ctl.get("starttls", "offer")
                if mode == "inject":
                    self.wfile.write(b"220 go\r\n250 fake\r\n")
                    self.wfile.flush()
                    while self.rfile.read(1):  # a real TLS client hello arrives; never answered
                        pass
                    return
                if mode == "garbage":
                    self.send("220 2.0.0 Ready to start TLS")
                    self.wfile.write(b"this is not TLS at all\r\n" * 4)
                    self.wfile.flush()
                    return
                self.send("220 2.0.0 Ready to start TLS")
                sock = server_tls_context().wrap_socket(self.connection, server_side=True)
                self.connection = sock
                self.rfile = sock.makefile("rb")
                self.wfile = sock.makefile("wb")
                self.tls = True
                self.tls_resumed = sock.session_reused
                der = sock.getpeercert(binary_form=True)
                if der:
                    import hashlib
                    self.client_cert = hashlib.sha256(der).hexdigest()
                mail_from, rcpts = None, []
            elif verb == "MAIL":
                r = self.rule("MAIL", arg)
                if r:
                    self.send(r)
                    continue
                mail_from, rcpts = arg, []
                self.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                r = self.rule("RCPT", arg)
                if r:
                    self.send(r)
                    continue
                rcpts.append(arg)
                self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                r = self.rule("DATA", arg)
                if r or not rcpts:
                    self.send(r or "554 5.5.1 no valid recipients")
                    continue
                self.send("354 go ahead")
                body = bytearray()
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l:
                        raise ConnectionError("closed in data")
                    if l == b".\r\n":
                        break
                    if l.startswith(b"."):
                        l = l[1:]
                    body += l
                self.finish_message(mail_from, rcpts, bytes(body))
                mail_from, rcpts = None, []
            elif verb == "BDAT":
                parts = arg.split()
                size = int(parts[0])
                data = self.rfile.read(size)
                if not hasattr(self, "chunks"):
                    self.chunks = bytearray()
                self.chunks += data
                if len(parts) > 1 and parts[1].upper() == "LAST":
                    self.finish_message(mail_from, rcpts, bytes(self.chunks))
                    self.chunks = bytearray()
                    mail_from, rcpts = None, []
                else:
                    self.send("250 2.0.0 chunk ok")
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("502 5.5.2 unknown command")

    def finish_message(self, mail_from, rcpts, body):
        r = self.rule("EOD", mail_from or "")
        if r:
            self.send(r)
            return
        with LOCK:
            COUNTER[0] += 1
            n = COUNTER[0]
            base = os.path.join(ARGS.dir, "%04d" % n)
            with open(base + ".eml", "wb") as f:
                f.write(body)
            with open(base + ".json.tmp", "w") as f:
                json.dump({"mail_from": mail_from, "rcpts": rcpts, "tls": self.tls,
                           "tls_resumed": self.tls_resumed, "client_cert": self.client_cert}, f)
            os.rename(base + ".json.tmp", base + ".json")
        self.send("250 2.0.0 Ok: stored %d" % n)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca")
    ap.add_argument("--control")
    for flag in ("no-starttls", "no-chunking", "no-pipelining", "no-8bitmime", "no-smtputf8", "no-dsn", "client-cert"):
        ap.add_argument("--" + flag, action="store_true")
    ARGS = ap.parse_args()
    host, port = ARGS.listen.rsplit(":", 1)
    assert host.startswith("127."), "test peers bind loopback only"
    os.makedirs(ARGS.dir, exist_ok=True)
    srv = Server((host, int(port)), Handler)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
