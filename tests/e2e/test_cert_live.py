"""End-to-end tests of the live side of certificates: the EUQ listener and each console serving
its own role's certificate, file-backed certificates followed through certbot-style symlinks
(no SIGHUP), a truncated file refused while the old one serves on, the expiry alert by the
injected clock, and the per-role metrics. Every wait is bounded; everything binds 127.0.0.1."""
import json
import os
import shutil
import tempfile
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request

from harness import Daemon, ExternalPostgres, Smtp, cert_fingerprint, log_tail, make_cert, running, wait_for

DAY = 86400


def served_fingerprint(port, server_name=None):
    """SHA-256 (hex) of the certificate an HTTPS port presents."""
    import hashlib
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def starttls_fingerprint(port):
    s = Smtp(port)
    try:
        s.cmd("EHLO client.example")
        s.starttls()
        return s.peer_fingerprint()
    finally:
        s.close()


def https(port, path, token=None):
    """(status, parsed JSON or text) without verifying the certificate (it changes in these tests)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (port, path))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            body, status, ctype = r.read().decode(), r.status, r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        body, status, ctype = e.read().decode(), e.code, e.headers.get("Content-Type", "")
    return status, (json.loads(body) if ctype.startswith("application/json") else body)


def metrics(d):
    status, text = https(d.admin_port, "/metrics", d.token())
    assert status == 200, text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def not_after_unix(path):
    import subprocess
    import calendar
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-enddate"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return calendar.timegm(time.strptime(out.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))


def wait_db(d, timeout=30):
    wait_for(lambda: https(d.admin_port, "/api/v1/health", d.token())[1].get("database") == "up", timeout,
             "database up")


def test_euq_listener_and_each_console_serves_its_own_role_certificate():
    tmp = tempfile.mkdtemp(prefix="postern-e2e-certs-")
    try:
        _consoles(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _consoles(tmp):
    mta = make_cert(os.path.join(tmp, "mta"), "mx.e2e.test", days=400)
    adm = make_cert(os.path.join(tmp, "admin"), "admin.e2e.test", days=200)
    euq = make_cert(os.path.join(tmp, "euq"), "euq.e2e.test", days=100)
    sections = {"smtp": {"tls_cert_file": mta[0], "tls_key_file": mta[1]},
                "admin": {"tls_cert_file": adm[0], "tls_key_file": adm[1]},
                "euq": {"tls_cert_file": euq[0], "tls_key_file": euq[1]}}
    with running(sections) as d:
        wait_for(lambda: _connects(d.euq_port), 10, "the EUQ listener")
        assert served_fingerprint(d.euq_port) == cert_fingerprint(euq[0])
        assert served_fingerprint(d.admin_port) == cert_fingerprint(adm[0])
        assert starttls_fingerprint(d.port) == cert_fingerprint(mta[0])
        assert len({cert_fingerprint(p) for p in (mta[0], adm[0], euq[0])}) == 3
        status, body = https(d.euq_port, "/health")
        assert status == 200 and body["status"] == "ok" and body["service"] == "euq", body
        assert https(d.euq_port, "/")[0] == 200  # the EUQ console's page (test_euq)
        for path in ("/api/v1/health", "/metrics", "/health/x"):
            assert https(d.euq_port, path)[0] == 404, path
        # The gauge of each role's notAfter; handshakes counted per role (the EUQ ones above).
        m = metrics(d)
        assert m['postern_tls_certificate_not_after_seconds{role="euq_console",key_type="EC-prime256v1",sni=""}'] == \
            not_after_unix(euq[0])
        assert m['postern_tls_certificate_not_after_seconds{role="inbound_mta",key_type="EC-prime256v1",sni=""}'] == \
            not_after_unix(mta[0])
        assert m['postern_tls_handshakes_total{role="euq_console"}'] >= 6
        assert m['postern_tls_handshakes_total{role="inbound_mta"}'] >= 1
        assert m['postern_tls_handshakes_total{role="admin_console"}'] >= 1
        assert m['postern_tls_assigns_total{role="euq_console"}'] == 1
        assert m['postern_tls_assigns_refused_total{role="euq_console"}'] == 0
        # A plaintext client on the EUQ port: a handshake failure for that role only.
        with socket.create_connection(("127.0.0.1", d.euq_port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                s.recv(100)
            except OSError:
                pass
        wait_for(lambda: metrics(d)['postern_tls_handshake_failures_total{role="euq_console"}'] >= 1, 5,
                 "the EUQ handshake failure counted")
        # [euq] listen = "": no EUQ listener after a restart.
        assert d.stop() == 0
        d.write_config(dict(sections, euq=dict(sections["euq"], listen="")))
        d.start()
        assert not _connects(d.euq_port)
        assert "euq console: off" in d.log_text() or d.wait_log("euq console: off")


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _certbot_layout(base, n, cn):
    """archive/mx/fullchainN.pem + privkeyN.pem (certbot's names); returns (cert, key)."""
    arch = os.path.join(base, "archive", "mx")
    os.makedirs(arch, exist_ok=True)
    cert, key = make_cert(os.path.join(arch, "tmp%d" % n), cn, days=90)
    full, priv = os.path.join(arch, "fullchain%d.pem" % n), os.path.join(arch, "privkey%d.pem" % n)
    os.rename(cert, full)
    os.rename(key, priv)
    return full, priv


def _point(base, n):
    """live/mx/{fullchain,privkey}.pem -> ../../archive/mx/...N.pem, each link replaced atomically."""
    live = os.path.join(base, "live", "mx")
    os.makedirs(live, exist_ok=True)
    for name in ("fullchain", "privkey"):
        tmp = os.path.join(live, ".%s.tmp" % name)
        os.symlink("../../archive/mx/%s%d.pem" % (name, n), tmp)
        os.rename(tmp, os.path.join(live, name + ".pem"))


def test_certbot_renewal_is_served_without_sighup_and_a_truncated_file_is_refused():
    base = tempfile.mkdtemp(prefix="postern-e2e-certbot-")
    try:
        _certbot(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _certbot(base):
    c1, _ = _certbot_layout(base, 1, "mx.e2e.test")
    _point(base, 1)
    live = os.path.join(base, "live", "mx")
    sections = {"smtp": {"tls_cert_file": os.path.join(live, "fullchain.pem"),
                         "tls_key_file": os.path.join(live, "privkey.pem")}}
    with running(sections) as d:
        assert starttls_fingerprint(d.port) == cert_fingerprint(c1)
        # A session that started on the old certificate stays up across the renewal.
        old = Smtp(d.port)
        old.cmd("EHLO old.example")
        old.starttls()
        assert old.peer_fingerprint() == cert_fingerprint(c1)
        c2, _ = _certbot_layout(base, 2, "mx.e2e.test")
        t0 = time.time()
        _point(base, 2)
        want = cert_fingerprint(c2)
        wait_for(lambda: starttls_fingerprint(d.port) == want, 2.0, "the renewed certificate within 2 s")
        print("renewal served after %.2fs" % (time.time() - t0))
        assert "reload requested by file change: " in d.log_text() or d.wait_log("reload requested by file change: ")
        roles = {r["role"]: r for r in https(d.admin_port, "/api/v1/roles", d.token())[1]}
        assert roles["inbound_mta"]["origin"] == "file:" + sections["smtp"]["tls_cert_file"], roles
        assert roles["inbound_mta"]["fingerprint"].replace(":", "").lower() == want and roles["inbound_mta"]["sni"] == []
        assert "SIGHUP" not in d.log_text()
        assert old.cmd("NOOP")[0] == 250  # in flight: still on its session
        old.close()
        # A truncated certificate in place of the next renewal: refused, the old one serves on.
        c3, _ = _certbot_layout(base, 3, "mx.e2e.test")
        with open(c3) as f:
            text = f.read()
        with open(c3, "w") as f:
            f.write(text[:len(text) // 2])
        _point(base, 3)
        d.wait_log("reload role=inbound_mta refused", 5)
        assert starttls_fingerprint(d.port) == want
        # The good file back: served again without a signal.
        _point(base, 2)
        with open(c3, "w") as f:
            f.write(text)
        _point(base, 3)
        wait_for(lambda: starttls_fingerprint(d.port) == cert_fingerprint(c3), 2.0, "the repaired renewal")


def _alerts(d):
    status, body = https(d.admin_port, "/api/v1/alerts", d.token())
    assert status == 200, body
    return [a for a in body if a["code"] == "CERT_INVALID_IN_USE"]


def _events(d, code):
    status, body = https(d.admin_port, "/api/v1/events?limit=200", d.token())
    assert status == 200, body
    return [e for e in body if e["code"] == code]


def test_expiry_alert_by_the_test_clock_and_cleared_by_workaround_a():
    d = Daemon(test_clock=True)
    console = make_cert(os.path.join(d.dir, "console"), "console.e2e.test", days=40)
    d.write_config({"admin": {"tls_cert_file": console[0], "tls_key_file": console[1]},
                    "euq": {"tls_cert_file": console[0], "tls_key_file": console[1]}})
    try:
        d.start()
        wait_db(d)
        assert _alerts(d) == []
        d.move_clock(35 * DAY)  # 5 days left: the 7-day warning
        ev = wait_for(lambda: _events(d, "CERT_EXPIRING"), 10, "CERT_EXPIRING")
        assert ev[0]["severity"] == "warning" and "admin_console, euq_console" in ev[0]["text"], ev
        d.move_clock(41 * DAY)  # expired while in use
        alerts = wait_for(lambda: _alerts(d), 10, "the CERT_INVALID_IN_USE alert")
        text = alerts[0]["text"]
        assert text.startswith("Invalid SMTP and HTTPS certificates detected in use: " + console[0] +
                               " (admin_console, euq_console) expired at "), text
        assert alerts[0]["severity"] == "error" and alerts[0]["alert"], alerts
        assert len(_events(d, "CERT_EXPIRING")) == 1  # once per certificate and threshold
        # Workaround A, by files until the store's assign: both consoles to default_mta, SIGHUP.
        mta = (os.path.join(d.dir, "certs", "default_mta.crt"), os.path.join(d.dir, "certs", "default_mta.key"))
        d.write_config({"admin": {"tls_cert_file": mta[0], "tls_key_file": mta[1]},
                        "euq": {"tls_cert_file": mta[0], "tls_key_file": mta[1]}})
        d.signal(signal.SIGHUP)
        wait_for(lambda: not _alerts(d), 10, "the alert to clear")
        assert _events(d, "CERT_INVALID_RESOLVED")
        assert served_fingerprint(d.admin_port) == served_fingerprint(d.euq_port) == cert_fingerprint(mta[0])
        # An expired certificate is refused at reload by the same clock: the role keeps default_mta.
        d.write_config({"admin": {"tls_cert_file": console[0], "tls_key_file": console[1]},
                        "euq": {"tls_cert_file": mta[0], "tls_key_file": mta[1]}})
        d.signal(signal.SIGHUP)
        d.wait_log("reload role=admin_console refused", 5)
        assert served_fingerprint(d.admin_port) == cert_fingerprint(mta[0])
        assert not _alerts(d)
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d)))
        raise
    finally:
        d.cleanup()


def test_store_bound_console_expires_and_the_one_command_workaround_clears_it():
    # Seed 000: a certificate bound to both consoles through the store expires while in use; the
    # alert names the entry; workaround A is one command (both consoles to default_mta).
    d = Daemon(test_clock=True)
    console = make_cert(os.path.join(d.dir, "console"), "console.e2e.test", days=40)
    try:
        d.start()
        wait_db(d)
        def run(*args):
            rc, out, err = d.ctl(*args)
            assert rc == 0, (args, out, err)
            return out
        wait_for(lambda: d.ctl("cert", "show", "default_mta")[0] == 0, 30, "the store's defaults")
        run("cert", "import", "--name", "console40", "--cert", console[0], "--key", console[1])
        run("cert", "assign", "console40", "--role", "admin,euq")
        assert served_fingerprint(d.admin_port) == served_fingerprint(d.euq_port) == cert_fingerprint(console[0])
        assert _alerts(d) == []
        d.move_clock(41 * DAY)
        alerts = wait_for(lambda: _alerts(d), 10, "the CERT_INVALID_IN_USE alert")
        assert alerts[0]["text"].startswith("Invalid SMTP and HTTPS certificates detected in use: console40 "
                                            "(admin_console, euq_console)"), alerts
        run("cert", "assign", "default_mta", "--role", "admin,euq")  # workaround A
        wait_for(lambda: not _alerts(d), 10, "the alert to clear")
        mta = os.path.join(d.dir, "certs", "default_mta.crt")
        assert served_fingerprint(d.admin_port) == served_fingerprint(d.euq_port) == cert_fingerprint(mta)
        assert json.loads(run("--json", "status"))["status"] == "ok"  # posternctl follows the console's certificate
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d)))
        raise
    finally:
        d.cleanup()


def test_an_alert_from_before_a_restart_is_resolved_when_the_database_comes_back():
    """The alert is open in the database; posternd restarts while the database is down with the
    problem gone (here: the test clock back before the notAfter). Its first check resolves the
    alert; the resolve waits with the buffered events and is applied, in order, once the database
    is back: no stale alert is left on the dashboard."""
    pg = ExternalPostgres()
    d = Daemon({"database": {"url": pg.url}}, test_clock=True)
    console = make_cert(os.path.join(d.dir, "console"), "console.e2e.test", days=40)
    d.write_config({"database": {"url": pg.url},
                    "admin": {"tls_cert_file": console[0], "tls_key_file": console[1]}})
    try:
        d.start()
        wait_db(d)
        d.move_clock(41 * DAY)
        wait_for(lambda: _alerts(d), 10, "the CERT_INVALID_IN_USE alert")
        assert d.stop() == 0
        pg.stop()
        d.move_clock(0)
        d.start()
        wait_for(lambda: os.path.exists(os.path.join(d.dir, "cache", "events.pending")) and
                 "CERT_INVALID_IN_USE" in open(os.path.join(d.dir, "cache", "events.pending")).read(), 10,
                 "the resolve waiting for the database")
        pg.start()
        wait_db(d)
        wait_for(lambda: not _alerts(d), 15, "the alert from before the restart resolved")
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d)))
        raise
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        d.cleanup()
        pg.cleanup()
