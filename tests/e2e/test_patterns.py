"""End-to-end tests of signed pattern bundles: the real posternd, the real postern-bundle vendor
tool, a test update server (tests/peers/update_server.py) and a second posternd as relay client.
Dates move with posternd --test-clock; no test sleeps to move time.

The tests marked GATE need the scanning engine (policy/scan_gate, scan/engine*: the "gate"
helper's branch); on a tree without it they fail, and run after the merge."""
import base64
import datetime
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading

import harness
from harness import PEERS, PYTHON, Daemon, Peer, free_port, log_tail, send_message, wait_for
from test_license import Vendor, today

DAY = 86400
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
HDB1 = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n"
HDB2 = HDB1 + "0123456789abcdef0123456789abcdef:17:Postern.Test.Two\n"


def tool(*args, ok=True):
    r = subprocess.run([os.path.join(harness.BIN, "postern-bundle")] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=60)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


class PatternVendor:
    """A pattern root, signers, bundles built with postern-bundle, and an update server."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postern-patterns-")
        self.root = self.p("root.pem")
        tool("make-root", "--cert", self.root, "--key", self.p("root.key"))
        self.signer("s1", days=365)
        with open(self.p("eicar.hex"), "w") as f:
            f.write(EICAR.hex())
        self.srv = None
        self.port = None

    def p(self, name):
        return os.path.join(self.dir, name)

    def signer(self, name, days=365, start=None):
        args = ["make-signer", "--root-cert", self.root, "--root-key", self.p("root.key"), "--cert",
                self.p(name + ".pem"), "--key", self.p(name + ".key"), "--days", days, "--cn", "signer " + name]
        if start is not None:
            args += ["--start", start]
        tool(*args)
        return name

    def build(self, version, hdb=HDB1, signer="s1", name=None):
        src = self.p("sigs-%d" % version)
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "postern.hdb"), "w") as f:
            f.write(hdb)
        out = self.p(name or "bundle-%d-%s.tar" % (version, signer))
        tool("build", "--version", version, "--signer-cert", self.p(signer + ".pem"), "--signer-key",
             self.p(signer + ".key"), "--sample", "eicar:%s:Eicar-Test-Signature" % self.p("eicar.hex"),
             "--out", out, os.path.join(src, "postern.hdb"))
        return out

    def resign(self, bundle, signer):
        out = bundle[:-4] + "-" + signer + ".tar"
        tool("resign", "--in", bundle, "--signer-cert", self.p(signer + ".pem"), "--signer-key",
             self.p(signer + ".key"), "--out", out)
        return out

    # --- the update server ---
    def publish(self, bundle):
        up = self.p("www/updates")
        shutil.rmtree(up, ignore_errors=True)
        os.makedirs(os.path.join(up, "files"))
        with tarfile.open(bundle) as t:
            for m in t.getmembers():
                data = t.extractfile(m).read()
                dest = os.path.join(up, m.name) if m.name.startswith("manifest.") else os.path.join(up, "files", m.name)
                with open(dest, "wb") as f:
                    f.write(data)

    def control(self, **kw):
        with open(self.p("www/control.json"), "w") as f:
            json.dump(kw, f)

    def start_server(self):
        os.makedirs(self.p("www/updates"), exist_ok=True)
        self.port = free_port()
        self.srv = subprocess.Popen([PYTHON, os.path.join(PEERS, "update_server.py"), "--dir", self.p("www"),
                                     "--listen", "127.0.0.1:%d" % self.port], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        assert b"ready" in self.srv.stdout.readline()
        return "http://127.0.0.1:%d" % self.port

    def requests(self):
        try:
            with open(self.p("www/requests.log")) as f:
                return [l.split()[1] for l in f]
        except OSError:
            return []

    def cleanup(self):
        if self.srv and self.srv.poll() is None:
            self.srv.terminate()
            self.srv.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def activate_antivirus(lv, d, days=365):
    """An antivirus license (offline import of a file from the license vendor)."""
    code = lv.issue("antivirus", today() + datetime.timedelta(days=days))
    lic = os.path.join(lv.dir, "av-%s.lic" % d.port)
    r = subprocess.run([os.path.join(harness.BIN, "postern-license-server"), "--export-license", code, "--db", lv.db,
                        "--key", lv.key, "--out", lic], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    rc, out, err = d.ctl("license", "import", lic)
    assert rc == 0, err


def status(d):
    rc, out, err = d.ctl("--json", "patterns", "status")
    assert rc == 0, err
    return json.loads(out)


def update(d):
    return d.ctl("--json", "patterns", "update")


def events(d, code):
    rc, out, err = d.ctl("--json", "events", "--limit", "200")
    if rc != 0 and "database unavailable" in err:  # the private cluster is still starting
        return []
    assert rc == 0, err
    return [e for e in json.loads(out) if e["code"] == code]


def wait_event(d, code, contains=""):
    return wait_for(lambda: [e for e in events(d, code) if contains in e["text"]], 30, "event %s %s" % (code, contains))


def node(pv, lv, server, extra=None, **kw):
    conf = {"license": {"server": "", "public_key_file": lv.pub},
            "updates": {"server": server, "interval": "", "pattern_root": pv.root, "starter_bundle": "none"}}
    for k, v in (extra or {}).items():
        conf.setdefault(k, {}).update(v)
    return Daemon(conf, **kw)


def run(body, license_days=365, extra=None, **kw):
    pv, lv = PatternVendor(), Vendor()
    url = pv.start_server()
    d = node(pv, lv, url, extra, **kw)
    try:
        d.start()
        if license_days:
            activate_antivirus(lv, d, license_days)
        body(pv, lv, d)
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d, 80))
        raise
    finally:
        d.cleanup()
        pv.cleanup()
        lv.cleanup()


def test_update_installed_and_shown_by_posternctl():
    def body(pv, lv, d):
        pv.publish(pv.build(3))
        rc, out, err = update(d)
        assert rc == 0, err
        st = status(d)
        assert st["installed"]["version"] == 3, st
        assert "signer s1" in st["installed"]["signer"]
        rc, out, err = d.ctl("patterns", "status")
        assert rc == 0 and "version 3" in out, out
        # Again: nothing new, two conditional requests (304) and no file download.
        n = len(pv.requests())
        rc, out, err = update(d)
        assert rc == 0 and json.loads(out)["result"] == "up to date", out
        assert pv.requests()[n:] == ["/updates/manifest.json", "/updates/manifest.sig"], pv.requests()
        status_code, text = d.api("GET", "/metrics")
        assert "postern_pattern_updates_total 1" in text and "postern_pattern_bundle_version 3" in text, text
        wait_event(d, "PATTERN_UPDATE_INSTALLED", "version 3")
    run(body)


def test_refusals_keep_the_old_version_and_raise_their_events():
    def body(pv, lv, d):
        pv.publish(pv.build(5))
        assert update(d)[0] == 0
        # Tampered file (after signing): FILE_MISMATCH.
        pv.publish(pv.build(6, HDB2))
        pv.control(tamper=["files/postern.hdb"])
        rc, out, err = update(d)
        assert rc == 1 and "FILE_MISMATCH" in err, err
        # Truncated download: cut after half the Content-Length.
        pv.control(truncate=["files/postern.hdb"])
        rc, out, err = update(d)
        assert rc == 1 and "DOWNLOAD_TRUNCATED" in err, err
        pv.control()
        # A manifest edited after signing: DIGITAL_SIGNATURE_FAILURE.
        with open(pv.p("www/updates/manifest.json"), "a") as f:
            f.write(" ")
        rc, out, err = update(d)
        assert rc == 1 and "DIGITAL_SIGNATURE_FAILURE" in err, err
        wait_event(d, "DIGITAL_SIGNATURE_FAILURE")
        # An older version, properly signed: VERSION_OLDER.
        pv.publish(pv.build(4))
        rc, out, err = update(d)
        assert rc == 1 and "VERSION_OLDER" in err, err
        # Same version, other content: VERSION_CONTENT_CHANGED.
        pv.publish(pv.build(5, HDB2, name="other-5.tar"))
        rc, out, err = update(d)
        assert rc == 1 and "VERSION_CONTENT_CHANGED" in err, err
        assert status(d)["installed"]["version"] == 5
        for code in ["-12", "-42", "-23", "-30", "-31"]:
            wait_event(d, "SECURITY_UPDATE_FAILED", "error code %s:" % code)
        status_code, text = d.api("GET", "/metrics")
        assert 'postern_pattern_update_failures_total{code="VERSION_OLDER"} 1' in text, text
    run(body)


def test_expired_signing_certificate_refused_under_the_test_clock():
    def body(pv, lv, d):
        pv.signer("short", days=30)
        pv.publish(pv.build(1, signer="short"))
        assert update(d)[0] == 0
        pv.publish(pv.build(2, HDB2, signer="short"))
        d.move_clock(40 * DAY)
        # The daemon re-reads the clock file lazily: wait until it tells the new time.
        wait_for(lambda: status(d)["installed"]["age_seconds"] >= 40 * DAY, 10, "the test clock")
        rc, out, err = update(d)
        assert rc == 1 and "DIGITAL_SIGNATURE_CERT_EXPIRE" in err and "error code -24" in err, (rc, out, err)
        wait_event(d, "DIGITAL_SIGNATURE_CERT_EXPIRE")
        wait_event(d, "SECURITY_UPDATE_FAILED", "error code -24")
        assert status(d)["installed"]["version"] == 1
        # The installed bundle's signer expired too: alert, and a restart still loads it.
        wait_for(lambda: status(d)["signer_alert"] == "PATTERN_SIGNER_EXPIRED", 10, "signer alert")
        assert d.stop() == 0
        d.start()
        assert status(d)["installed"]["version"] == 1
        assert "fails its check" not in d.log_text()
    run(body, test_clock=True)


def test_signature_only_refresh_directly_and_through_a_relay():
    pv, lv = PatternVendor(), Vendor()
    url = pv.start_server()
    a = node(pv, lv, url, extra={"updates": {"signer_warning_days": 60}})
    b = None
    try:
        a.start()
        activate_antivirus(lv, a)
        v7 = pv.build(7)
        pv.publish(v7)
        assert update(a)[0] == 0
        b = node(pv, lv, a.admin_url(), extra={"updates": {"ca_file": os.path.join(a.dir, "certs", "default_console.crt"),
                                                              "signer_warning_days": 60}})
        b.start()
        activate_antivirus(lv, b)
        rc, out, err = update(b)
        assert rc == 0, err
        assert status(b)["installed"]["version"] == 7
        # s1 expires in 365 days; with a 60-day warning nothing yet. A signer expiring in 20 days
        # raises the warning alert on both.
        pv.signer("s2", days=20)
        pv.publish(pv.resign(v7, "s2"))
        for n in (a, b):
            rc, out, err = update(n)
            assert rc == 0 and json.loads(out)["result"] == "signature-only refresh", (n.dir, out, err)
            assert "signer s2" in status(n)["installed"]["signer"]
            assert status(n)["signer_alert"] == "PATTERN_SIGNER_EXPIRING"
        # The vendor re-signs once more with a long-lived signer: same version, the relay passes the
        # new signature on although nothing else changed, and the warning clears.
        pv.signer("s3", days=730)
        pv.publish(pv.resign(v7, "s3"))
        assert update(a)[0] == 0
        rc, out, err = update(b)
        assert rc == 0 and json.loads(out)["result"] == "signature-only refresh", out
        st = status(b)
        assert st["installed"]["version"] == 7 and "signer s3" in st["installed"]["signer"], st
        assert st["signer_alert"] is None, st
        with open(os.path.join(a.dir, "patterns", "current", "manifest.sig"), "rb") as fa, \
                open(os.path.join(b.dir, "patterns", "current", "manifest.sig"), "rb") as fb:
            assert fa.read() == fb.read()
        wait_event(b, "PATTERN_SIGNATURE_REFRESHED")
        for n in (b, a):
            assert n.stop() == 0
    except BaseException:
        print("---- node a ----\n" + log_tail(a, 60))
        if b:
            print("---- node b ----\n" + log_tail(b, 60))
        raise
    finally:
        for n in (b, a):
            if n:
                n.cleanup()
        pv.cleanup()
        lv.cleanup()


def test_scheduled_updates_follow_the_test_clock():
    def body(pv, lv, d):
        pv.publish(pv.build(1))
        d.move_clock(2 * 3600)  # past the first scheduled check, whenever it was due
        wait_for(lambda: (status(d)["installed"] or {}).get("version") == 1, 20, "scheduled update to 1")
        pv.publish(pv.build(2, HDB2))
        d.move_clock(4 * 3600)  # an hour later than the next check
        wait_for(lambda: (status(d)["installed"] or {}).get("version") == 2, 20, "scheduled update to 2")
        rc, out, err = d.ctl("--json", "alerts")
        assert "PATTERN_UPDATES_LICENSE" not in out, out
    run(body, test_clock=True, extra={"updates": {"interval": "1h"}})


def test_relay_route_needs_no_token_and_serves_nothing_else():
    def body(pv, lv, d):
        import ssl
        import urllib.error
        import urllib.request
        pv.publish(pv.build(4))
        assert update(d)[0] == 0
        ctx = ssl.create_default_context(cafile=os.path.join(d.dir, "certs", "default_console.crt"))

        def get(path, method="GET"):
            req = urllib.request.Request(d.admin_url() + path, method=method, data=b"" if method == "POST" else None)
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()
        st, data = get("/updates/manifest.json")
        assert st == 200 and json.loads(data)["version"] == 4, (st, data)
        assert get("/updates/files/postern.hdb") == (200, HDB1.encode())
        assert get("/updates/files/../../admin.token")[0] == 404
        assert get("/updates/files/nothere.hdb")[0] == 404
        assert get("/updates/manifest.json", "POST")[0] == 401  # only GET skips the token
        assert get("/api/v1/patterns")[0] == 401
    run(body)


def test_offline_bundle_file_and_path_escape_refused():
    def body(pv, lv, d):
        good = pv.build(2)
        rc, out, err = d.ctl("patterns", "import-bundle", good)
        assert rc == 0, err
        assert status(d)["installed"]["version"] == 2
        # A bundle file with ../ in an entry name: refused, nothing written outside.
        evil = pv.p("evil.tar")
        with tarfile.open(good) as src, tarfile.open(evil, "w") as dst:
            for m in src.getmembers():
                data = src.extractfile(m)
                if m.name == "postern.hdb":
                    m.name = "../../escaped.hdb"
                dst.addfile(m, data)
        rc, out, err = d.ctl("patterns", "import-bundle", evil)
        assert rc == 1 and "ARCHIVE_UNSAFE" in err and "escapes" in err, err
        assert not os.path.exists(os.path.join(d.dir, "escaped.hdb"))
        assert not os.path.exists(os.path.join(d.dir, "patterns", "escaped.hdb"))
        # A symlink entry.
        link = pv.p("link.tar")
        with tarfile.open(good) as src, tarfile.open(link, "w") as dst:
            for m in src.getmembers():
                dst.addfile(m, src.extractfile(m))
            ti = tarfile.TarInfo("x.ndb")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "/etc/passwd"
            dst.addfile(ti)
        rc, out, err = d.ctl("patterns", "import-bundle", link)
        assert rc == 1 and "ARCHIVE_UNSAFE" in err, err
        wait_event(d, "SECURITY_UPDATE_FAILED", "error code -40")
        assert status(d)["installed"]["version"] == 2
    run(body)


def test_update_refused_after_the_antivirus_license_grace():
    def body(pv, lv, d):
        pv.signer("long", days=3650)
        pv.publish(pv.build(1, signer="long"))
        assert update(d)[0] == 0
        pv.publish(pv.build(2, HDB2, signer="long"))
        d.move_clock((10 + 91) * DAY)  # expiry D = today + 10, grace ends D + 90
        def av_state():
            ls = json.loads(d.ctl("--json", "license", "list")[1])["licenses"]
            return [l for l in ls if l["license"] == "antivirus"][0]["state"]
        wait_for(lambda: av_state() == "expired", 15, "antivirus expired")
        rc, out, err = update(d)
        assert rc == 1 and "LICENSE_NO_UPDATES" in err, err
        wait_event(d, "SECURITY_UPDATE_FAILED", "error code -50")
        rc, out, err = d.ctl("--json", "alerts")
        assert "PATTERN_UPDATES_LICENSE" in out, out
        st = status(d)
        assert st["installed"]["version"] == 1 and st["stale"] and not st["updates_allowed"], st
        status_code, text = d.api("GET", "/metrics")
        assert "postern_pattern_updates_allowed 0" in text
    run(body, license_days=10, test_clock=True)


def test_gate_eicar_still_rejected_by_the_stale_patterns_after_grace():
    """GATE: needs the scanning engine. After grace no update is installed, yet EICAR is still
    rejected by the installed (stale) bundle, also after a restart."""
    def body(pv, lv, d):
        pv.signer("long", days=3650)
        pv.publish(pv.build(1, signer="long"))
        assert update(d)[0] == 0
        d.move_clock((10 + 91) * DAY)
        wait_for(lambda: status(d)["stale"], 15, "stale patterns")
        assert update(d)[0] == 1
        # EICAR as an attachment: the bundle's hash signature covers the 68-byte file itself.
        eicar = ("Subject: eicar\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n"
                 "--BB\r\nContent-Type: application/octet-stream; name=\"eicar.com\"\r\n"
                 "Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(EICAR).decode() + "\r\n--BB--\r\n")
        c = send_message(d.port, body=eicar)
        assert c[0] == 554 and "Eicar-Test-Signature" in c[1], c
        assert d.stop() == 0
        d.start()
        # Until the installed bundle is compiled again a message is answered 451 (never passed
        # unscanned); then the stale patterns reject EICAR as before.
        wait_for(lambda: status(d)["engine"]["loaded"], 30, "the engine built from the installed bundle")
        c = send_message(d.port, body=eicar)
        assert c[0] == 554 and "Eicar-Test-Signature" in c[1], c
        status_code, text = d.api("GET", "/metrics")
        assert "stale" in text, text
    run(body, license_days=10, test_clock=True)


def test_fresh_install_pins_the_test_root_and_installs_the_starter_bundle():
    d = Daemon({})
    try:
        d.start()
        st = wait_for(lambda: status(d)["installed"], 10, "starter bundle")
        assert st["version"] == 1, st
        assert os.path.exists(os.path.join(d.dir, "patterns", "root.pem"))
        assert "TEST pattern root" in d.log_text()
        assert d.stop() == 0
    except BaseException:
        print(log_tail(d, 60))
        raise
    finally:
        d.cleanup()


def test_gate_update_while_20_sessions_send_none_fail_and_next_message_names_the_new_version():
    """GATE: needs the scanning engine and its X-Postern-Scan header."""
    peer = Peer(tls=False)

    def body(pv, lv, d):
        pv.publish(pv.build(1))
        assert update(d)[0] == 0
        pv.publish(pv.build(2, HDB2))
        results, errors = [], []
        start = threading.Event()

        def sender(i):
            start.wait(10)
            for n in range(3):
                try:
                    results.append(send_message(d.port, body="Subject: load %d/%d\r\n\r\nhello\r\n" % (i, n))[0])
                except Exception as e:  # noqa: BLE001 — every failure is counted
                    errors.append(repr(e))

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        start.set()
        rc, out, err = update(d)
        for t in threads:
            t.join(60)
        assert rc == 0, err
        assert not errors and results == [250] * 60, (errors, results)
        assert send_message(d.port, body="Subject: after\r\n\r\nhello\r\n")[0] == 250
        msgs = wait_for(lambda: [m for m in peer.messages() if b"Subject: after" in m["body"]], 20, "delivery")
        hdr = [l for l in msgs[0]["body"].split(b"\r\n") if l.lower().startswith(b"x-postern-scan:")]
        assert hdr and b"patterns=bundle:2" in hdr[0], hdr
    try:
        _run_with_route(body, peer)
    finally:
        peer.cleanup()


def _run_with_route(body, peer):
    pv, lv = PatternVendor(), Vendor()
    url = pv.start_server()
    d = node(pv, lv, url, extra={"routes": {"*": "[127.0.0.1]:%d" % peer.port}})
    try:
        d.start()
        activate_antivirus(lv, d)
        body(pv, lv, d)
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d, 80))
        raise
    finally:
        d.cleanup()
        pv.cleanup()
        lv.cleanup()
