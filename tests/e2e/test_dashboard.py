"""End-to-end tests of the admin dashboard in a real headless Chromium (tests/e2e/browser.py):
the real posternd (private PostgreSQL, libclamav gate with a test signature directory), the real
license server, an SMTP sink downstream. The password is set with posternctl; the page logs in
with it. Dates move with posternd --test-clock; no test sleeps to move time. Screenshots of
every screen go to build/test-screenshots/dashboard-*.png."""
import base64
import datetime
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request

import harness
from browser import Browser
from harness import Daemon, ExternalPostgres, Peer, log_tail, make_cert, send_message, wait_for
from test_license import Vendor, today
from test_scan import EICAR, mail, sig_dir

PASSWORD = "dashboard-e2e-password"
SEED000 = "Invalid SMTP and HTTPS certificates detected in use"
DAY = 86400


def https(d, method, path, body=None, token=True, headers=None):
    """(status, JSON or text, response headers) without verifying the certificate: the consoles'
    certificate changes in these tests (the bearer token is what authenticates here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(d.admin_url() + path, method=method, data=data)
    if token:
        req.add_header("Authorization", "Bearer " + d.token())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
            text, status, hdrs = r.read().decode(), r.status, r.headers
    except urllib.error.HTTPError as e:
        text, status, hdrs = e.read().decode(), e.code, e.headers
    try:
        return status, json.loads(text), hdrs
    except ValueError:
        return status, text, hdrs


def served_fingerprint(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def norm_fp(fp):
    return fp.replace(":", "").lower()


class Site:
    """A vendor, a signature directory, a sink for example.test, and posternd with a password."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postern-e2e-dash-")
        self.vendor = Vendor().start()
        self.sigs = sig_dir()
        self.peer = Peer(tls=False)
        conf = {"license": {"server": self.vendor.url, "public_key_file": self.vendor.pub, "proxy": "direct"},
                "relay": {"domains": ["example.test", "slow.test"], "networks": ["127.0.0.2/32"]},
                # slow.test goes to a closed port: its mail stays in the queue (deferred).
                "routes": {"example.test": "[%s]:%d" % (self.peer.host, self.peer.port), "slow.test": "[127.0.0.1]:9"},
                "outbound": {"connect_timeout": "2s", "command_timeout": "4s"},
                "queue": {"min_backoff": "1h", "max_backoff": "2h"},
                "scan": {"clamav_database_dir": self.sigs, "on_virus": "quarantine"},
                # A dead update server: "Update now" must say why it failed.
                "updates": {"starter_bundle": "none", "server": "http://127.0.0.1:9"},
                # Sessions outlive the clock moves below (3 days); the lock-out is the test's.
                "admin": {"login_max_failures": 3, "login_lockout": "15m", "session_idle_timeout": "30d",
                          "session_lifetime": "30d"}}
        self.d = Daemon(conf, test_clock=True)
        try:
            self.d.start()
            wait_for(lambda: https(self.d, "GET", "/api/v1/health")[1].get("database") == "up", 30, "database up")
            pw = os.path.join(self.tmp, "password")
            with open(pw, "w") as f:
                f.write(PASSWORD + "\n")
            rc, out, err = self.d.ctl("admin", "set-password", "--password-file", pw)
            assert rc == 0, out + err
            assert "password is set" in out, out
        except BaseException:
            self.close(failed=True)
            raise

    @property
    def url(self):
        return self.d.admin_url() + "/"

    def close(self, failed=False):
        try:
            if failed:
                print("---- posternd log tail ----\n" + log_tail(self.d, 80))
            elif self.d.proc is not None:
                assert self.d.stop() == 0
        finally:
            self.d.cleanup()
            self.peer.cleanup()
            self.vendor.cleanup()
            shutil.rmtree(self.sigs, ignore_errors=True)
            shutil.rmtree(self.tmp, ignore_errors=True)


def login(b, page="main", password=PASSWORD):
    b.goto(b.site.url, page=page)
    b.wait("#login-screen", page=page)
    b.fill("#password", password, page=page)
    b.click("#login", page=page)


def test_dashboard_end_to_end():
    s = Site()
    try:
        with Browser(timeout=30) as b:
            b.site = s
            _run(s, b)
            # No script error, no CSP refusal; only the answers the test asked for (401, 403,
            # 429, the favicon's 404) may show as failed loads.
            errors = [e for e in b.errors() + b.errors(page="other") if "Failed to load resource" not in e]
            assert errors == [], errors
    except BaseException:
        s.close(failed=True)
        raise
    s.close()


def _run(s, b):
    d = s.d
    # --- the pages are open, the API is not ----------------------------------------------------
    st, page, hdrs = https(d, "GET", "/", token=False)
    assert st == 200 and 'src="app.js"' in page and "<script>" not in page, page[:300]
    assert "script-src 'self'" in hdrs["Content-Security-Policy"]
    assert https(d, "GET", "/api/v1/health", token=False)[0] == 401
    assert https(d, "GET", "/metrics", token=False)[0] == 401

    # --- log in: a wrong password first, then the right one ------------------------------------
    login(b, password="not-the-password")
    b.wait_text("#login-error", "Wrong password.")
    b.screenshot("dashboard-login")
    b.fill("#password", PASSWORD)
    b.click("#login")
    b.wait_text("#status", "database up")
    cookie = [c for c in b.cookies() if c["name"] == "postern_admin"]
    assert len(cookie) == 1 and cookie[0]["secure"] and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict", cookie
    cookie = cookie[0]["value"]

    # --- CSRF: a change with the cookie but without the token is refused -------------------------
    st = b.eval("fetch('/api/v1/queue/flush', {method: 'POST'}).then(r => r.status)")
    assert st == 403, st
    csrf = b.eval("fetch('/api/v1/session').then(r => r.json()).then(j => j.csrf)")
    assert len(csrf) == 64
    st = b.eval("fetch('/api/v1/queue/flush', {method: 'POST', headers: {'X-CSRF-Token': '%s'}}).then(r => r.status)"
                % ("0" * 64))
    assert st == 403, st
    assert https(d, "POST", "/api/v1/queue/flush", token=False, headers={"Cookie": "postern_admin=" + cookie})[0] == 403
    st, j, _ = https(d, "POST", "/api/v1/queue/flush", token=False,
                     headers={"Cookie": "postern_admin=" + cookie, "X-CSRF-Token": csrf})
    assert st == 200 and "flushed" in j, j
    # The bearer token needs no CSRF token (posternctl, the other tests).
    assert https(d, "POST", "/api/v1/queue/flush")[0] == 200

    # --- certificates: a CSR with seed 001's fields, an import by file upload ------------------
    b.click('a[data-screen="certificates"]')
    b.wait_text("#certs", "default_mta")
    for sel, v in (("#csr-name", "New-certificate"), ("#csr-country", "JP"), ("#csr-state", "Tokyo"),
                   ("#csr-locality", "Shibuya"), ("#csr-org", "Example Inc."), ("#csr-unit", "Support Division"),
                   ("#csr-cn", "mx.example.test"), ("#csr-email", "postmaster@example.test"),
                   ("#csr-sans", "DNS:mx.example.test")):
        b.fill(sel, v)
    b.select("#csr-key", "ec-p256")
    b.click("#csr-submit")
    b.wait_text("#csr-out", "BEGIN CERTIFICATE REQUEST")
    b.wait_text('#certs tr[data-name="New-certificate"]', "requested")
    st, csr, _ = https(d, "GET", "/api/v1/certificates/New-certificate")
    want = {"country": "JP", "state": "Tokyo", "locality": "Shibuya", "organisation": "Example Inc.",
            "unit": "Support Division", "cn": "mx.example.test", "email": "postmaster@example.test",
            "key": "ec-p256", "sans": ["DNS:mx.example.test"]}
    assert st == 200 and csr["kind"] == "csr" and csr["status"] == "requested" and csr["fields"] == want, csr
    # A console certificate that expires in two days, imported from its files.
    cert, key = make_cert(os.path.join(s.tmp, "console-soon"), "console.e2e.test", days=2)
    b.upload("#import-cert", cert)
    b.upload("#import-key", key)
    b.click("#import-submit")
    b.wait_text("#flash", "Import console-soon.crt")
    b.wait_text('#certs tr[data-name="console-soon"]', "unused")
    b.screenshot("dashboard-certificates")
    # Export from the page.
    b.click('#certs tr[data-name="console-soon"] button:text("Export")')
    b.wait_text("#cert-export", "BEGIN CERTIFICATE")
    # Backup from the page (a download link); restore by upload (a backup made through the API).
    b.fill("#backup-pass", "backup-password-1")
    b.click("#backup-submit")
    b.wait("#backup-link")
    assert b.eval("document.querySelector('#backup-link').href").startswith("blob:")
    st, bk, _ = https(d, "POST", "/api/v1/certificates/backup", {"password": "backup-password-2"})
    assert st == 200, bk
    backup = os.path.join(s.tmp, "certs.backup")
    with open(backup, "wb") as f:
        f.write(base64.b64decode(bk["file"]))
    b.upload("#restore-file", backup)
    b.fill("#restore-pass", "backup-password-2")
    b.click("#restore-submit")
    b.wait_text("#flash", "Restore: %d entries and %d bindings restored" % (bk["entries"], bk["bindings"]))

    # --- licenses: activate in the page (expiry tomorrow), update status -----------------------
    D = today() + datetime.timedelta(days=1)
    code = s.vendor.issue("antivirus", D)
    b.click('a[data-screen="licenses"]')
    b.wait_text("#licenses", "Antivirus and content filter")
    b.fill("#code-antivirus", code)
    b.click("#activate-antivirus")
    b.wait_text('#licenses tr[data-license="antivirus"]', "expiring")
    b.wait_text("#license-notices", "The support contract for Antivirus and content filter ends in 1 day.")
    b.click("#license-update-status")
    b.wait_text("#license-result", "No update needed.")
    # The optional notices can be hidden and shown again.
    b.wait_text("#license-notices", "Cloud pre-filter is not activated.")
    b.click("#license-hide-optional")
    wait_for(lambda: "Cloud pre-filter is not activated" not in b.text("#license-notices"), 10, "optional notices hidden")
    b.screenshot("dashboard-licenses")
    b.click("#license-show-optional")
    b.wait_text("#license-notices", "Cloud pre-filter is not activated.")

    # --- seed 000: the consoles on the soon-to-expire certificate (through the API) -------------
    b.click('a[data-screen="dashboard"]')
    b.wait_text("#status", "database up")
    st, j, _ = https(d, "POST", "/api/v1/certificates/console-soon/assign", {"roles": ["admin", "euq"]})
    assert st == 200, j
    soon_fp = norm_fp(https(d, "GET", "/api/v1/certificates/console-soon")[1]["fingerprint"])
    assert served_fingerprint(d.admin_port) == soon_fp
    b.wait_text("#roles", "console-soon")  # the page kept working over this swap too
    # Three days on: the console certificate has expired, the license is in its grace period.
    d.move_clock(3 * DAY)
    b.wait_text("#alerts", SEED000, timeout=20)
    alert_text = b.text('#alerts li[data-code="CERT_INVALID_IN_USE"]')
    assert "console-soon" in alert_text and "admin_console" in alert_text, alert_text
    b.wait("#workaround-a")
    # Seed 004's grace text with the numbers of the daemon's date (today + 3 days).
    daemon_day = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)).date()
    left = (D + datetime.timedelta(days=90) - daemon_day).days
    grace = ("The support contract for Antivirus and content filter ended on %s. The renewal grace period after the "
             "end of the contract has %d days left. Renew the contract to keep your security up to date."
             % (D.strftime("%Y-%m-%d"), left))
    b.wait_text("#alerts", grace, timeout=20)
    b.wait_text("#dash-licenses", "grace")
    b.screenshot("dashboard-alert")
    # One click: workaround A. The alert clears; the same page goes on over its own swap.
    b.click("#workaround-a")
    b.wait_text("#flash", "Workaround A applied")
    wait_for(lambda: SEED000 not in b.text("#alerts"), 20, "the seed 000 alert to clear")
    mta_fp = norm_fp(https(d, "GET", "/api/v1/certificates/default_mta")[1]["fingerprint"])
    assert served_fingerprint(d.admin_port) == mta_fp
    roles = {r["role"]: r for r in https(d, "GET", "/api/v1/roles")[1]}
    assert roles["admin_console"]["certificate"] == "default_mta" and roles["euq_console"]["certificate"] == "default_mta"
    assert not [a for a in https(d, "GET", "/api/v1/alerts")[1] if a["code"] == "CERT_INVALID_IN_USE"]
    before = b.text("#status")
    st = b.eval("fetch('/api/v1/health').then(r => r.status)")  # the next call after the swap, same page
    assert st == 200, st
    wait_for(lambda: b.text("#status") != before, 10, "the dashboard to refresh after the swap")
    b.screenshot("dashboard-after-workaround")

    # --- mail: the throughput graph, the queue, the quarantine ---------------------------------
    for i in range(3):
        assert send_message(d.port, body="Subject: clean %d\r\n\r\nhello\r\n" % i)[0] == 250
    assert send_message(d.port, body=mail(EICAR, subject="infected one"))[0] == 250
    for i in range(2):
        assert send_message(d.port, rcpt="carol@slow.test", body="Subject: slow %d\r\n\r\nlater\r\n" % i)[0] == 250
    wait_for(lambda: len(s.peer.messages()) >= 3, 20, "three deliveries to the sink")
    b.wait_text("#throughput-totals", "messages in 6", timeout=20)
    b.wait_text("#throughput-totals", "delivered 3", timeout=20)
    assert b.eval("document.querySelector('#throughput polyline[data-series=\"in\"]').dataset.total") == "6"
    assert b.count("#throughput svg polyline") == 5
    b.screenshot("dashboard-throughput")

    b.click('a[data-screen="queue"]')
    b.wait_text("#queue", "carol@slow.test")
    qids = [m["queue_id"] for m in https(d, "GET", "/api/v1/queue")[1]["messages"]]
    assert len(qids) == 2, qids
    held = '#queue tr[data-qid="%s"]' % qids[1]
    b.click(held + ' button:text("Hold")')
    b.wait(held + ' button:text("Release")')
    assert https(d, "GET", "/api/v1/queue/" + qids[1])[1]["held"] is True
    b.click(held + ' button:text("Release")')
    b.wait(held + ' button:text("Hold")')
    assert https(d, "GET", "/api/v1/queue/" + qids[1])[1]["held"] is False
    b.click("#queue-flush-all")
    b.wait_text("#flash", "Flush the whole queue")
    b.screenshot("dashboard-queue")
    b.click('#queue tr[data-qid="%s"] button.danger' % qids[0])
    b.wait_text("#flash", "Delete " + qids[0])
    wait_for(lambda: [m["queue_id"] for m in https(d, "GET", "/api/v1/queue")[1]["messages"]] == [qids[1]], 10,
             "the deleted message to leave the queue")
    wait_for(lambda: b.count('#queue tr[data-qid="%s"]' % qids[0]) == 0, 10, "the row to go")

    b.click('a[data-screen="quarantine"]')
    b.fill("#q-rcpt", "alice@example.test")
    b.click("#q-submit")
    b.wait_text("#quarantine", "Eicar-Test-Signature")
    qid = https(d, "GET", "/api/v1/quarantine")[1]["entries"][0]["id"]
    b.click('#quarantine tr[data-qid="%s"] button:text("Headers")' % qid)
    b.wait_text("#quarantine-headers", "Subject: infected one")
    b.screenshot("dashboard-quarantine")
    b.click('#quarantine tr[data-qid="%s"] button:text("Release")' % qid)
    b.wait_text("#flash", "Release " + qid)
    wait_for(lambda: [m for m in s.peer.messages() if b"infected one" in m["body"]], 20, "the released message delivered")

    # --- patterns: update now against a dead server: the page says why --------------------------
    b.click('a[data-screen="patterns"]')
    b.wait_text("#patterns", "Last result")
    b.click("#patterns-update")
    b.wait_text("#patterns-result", "Update failed")
    b.wait_text("#patterns-result", "DOWNLOAD_FAILED")
    b.screenshot("dashboard-patterns")
    b.click('a[data-screen="dashboard"]')
    b.wait_text("#alerts", "The last pattern update failed")

    # --- events of the logins --------------------------------------------------------------------
    codes = [e["code"] for e in https(d, "GET", "/api/v1/events?limit=500")[1]]
    assert "ADMIN_LOGIN_OK" in codes and "ADMIN_LOGIN_FAILED" in codes and "ADMIN_PASSWORD_SET" in codes, codes

    # --- brute force: locked out after 3 failures, even with the right password -----------------
    for i in range(3):
        st, j, _ = https(d, "POST", "/login", {"password": "guess-%d" % i}, token=False)
        assert st == 401, (st, j)
    st, j, hdrs = https(d, "POST", "/login", {"password": PASSWORD}, token=False)
    assert st == 429 and int(hdrs["Retry-After"]) > 800, (st, j, dict(hdrs))
    login(b, page="other")
    b.wait_text("#login-error", "too many failed logins", page="other")
    b.screenshot("dashboard-locked", page="other")
    assert "ADMIN_LOGIN_LOCKED" in [e["code"] for e in https(d, "GET", "/api/v1/events?limit=50")[1]]
    # The session made before goes on; the bearer token too.
    assert b.eval("fetch('/api/v1/health').then(r => r.status)") == 200
    # After the lock-out (15 minutes on the daemon's clock) the right password works again.
    d.move_clock(3 * DAY + 16 * 60)
    wait_for(lambda: https(d, "POST", "/login", {"password": PASSWORD}, token=False)[0] == 200, 10, "login after the lock-out")
    # Logout ends the page's session.
    b.click("#logout")
    b.wait_text("#login-error", "Logged out.")
    assert https(d, "GET", "/api/v1/health", token=False, headers={"Cookie": "postern_admin=" + cookie})[0] == 401


def test_database_down_the_pages_say_so_and_login_works_from_the_cache():
    pg = ExternalPostgres()
    tmp = tempfile.mkdtemp(prefix="postern-e2e-dash-db-")
    d = Daemon({"database": {"url": pg.url}, "updates": {"starter_bundle": "none"}})
    try:
        d.start()
        wait_for(lambda: https(d, "GET", "/api/v1/health")[1].get("database") == "up", 30, "database up")
        pw = os.path.join(tmp, "password")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        # From stdin this time (test_dashboard_end_to_end uses --password-file); a short one is refused.
        ctl = [os.path.join(harness.BIN, "posternctl"), "--config", d.conf, "admin", "set-password"]
        r = subprocess.run(ctl, input="short\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "at least 8 characters" in r.stderr, (r.returncode, r.stderr)
        r = subprocess.run(ctl, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert oct(os.stat(os.path.join(d.dir, "cache", "control.json")).st_mode & 0o777) == "0o600"
        with Browser(timeout=30) as b:
            b.goto(d.admin_url() + "/")
            b.fill("#password", PASSWORD)
            b.click("#login")
            b.wait_text("#status", "database up")
            b.wait_text("#events", "ADMIN_LOGIN_OK")
            pg.stop()
            b.wait_text("#dbdown", "Database unavailable", timeout=15)
            b.wait_text('#alerts li[data-code="DATABASE_UNAVAILABLE"]', "Database unavailable")
            b.wait_text("#status", "database down")
            b.wait_text("#dash-licenses", "Antivirus")  # what does not need the database still shows
            b.screenshot("dashboard-database-down")
            b.click('a[data-screen="certificates"]')
            b.wait_text("#certs-error", "Database unavailable", timeout=20)
            # Setting a password needs the database; logging in does not (the cached settings).
            rc, out, err = d.ctl("admin", "set-password", "--password-file", pw)
            assert rc == 1 and "503" in err and "database unavailable" in err, (rc, out, err)
            b.goto(d.admin_url() + "/", page="other")
            b.fill("#password", PASSWORD, page="other")
            b.click("#login", page="other")
            b.wait_text("#status", "database down", page="other")
            pg.start()
            b.wait_text("#status", "database up", page="other", timeout=30)
            b.wait("#dbdown", state="hidden", page="other")
            errors = [e for e in b.errors() + b.errors(page="other") if "Failed to load resource" not in e]
            assert errors == [], errors
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d, 60))
        raise
    finally:
        d.cleanup()
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def test_console_answers_carry_each_header_once():
    """testssl.sh found every security header twice on the admin listener's pages (the file server,
    the listener's wrapper and the HTTP server's defaults each added theirs): each once now, on
    the pages, the login, the API and the EUQ console."""
    import http.client
    from harness import running
    with running() as d:
        def headers(port, method, path, auth=False):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            h = {"Authorization": "Bearer " + d.token()} if auth else {}
            c.request(method, path, body=b"{}" if method == "POST" else None, headers=h)
            r = c.getresponse()
            r.read()
            names = [k.lower() for k, _ in r.getheaders()]
            c.close()
            return names
        for port, method, path, auth in ((d.admin_port, "GET", "/", False), (d.admin_port, "GET", "/app.js", False),
                                         (d.admin_port, "POST", "/login", False),
                                         (d.admin_port, "GET", "/api/v1/health", True),
                                         (d.euq_port, "GET", "/", False), (d.euq_port, "GET", "/api/me", False)):
            names = headers(port, method, path, auth)
            dup = sorted({n for n in names if names.count(n) > 1})
            assert dup == [], (port, path, dup)
            assert "strict-transport-security" in names and "cache-control" in names, (path, names)
