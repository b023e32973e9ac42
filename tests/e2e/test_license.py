"""End-to-end tests of licensing: the real posternd against the real postern-license-server
(and postern-issue-code), a tampering proxy from tests/peers, and an SMTP sink for the daily
mail. Dates are moved with posternd --test-clock; no test sleeps to move time."""
import calendar
import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import harness
from harness import PEERS, PYTHON, Daemon, Peer, free_port, log_tail, send_message, wait_for

REFUSED = "The activation code is incorrect. Check the code and try again."
UPDATED = "License updated successfully."
NO_UPDATE = "No update needed."
UNREACHABLE = "Unable to complete the update. Check the Internet connection and try again."
DAY = 86400


def today():
    return datetime.datetime.now(datetime.timezone.utc).date()


def date_str(d):
    return d.strftime("%Y-%m-%d")


def midnight(d):
    return calendar.timegm(d.timetuple())


def tool(name):
    return os.path.join(harness.BIN, name)


class Vendor:
    """A key pair, a database file and postern-license-server on a loopback port."""

    def __init__(self, key_dir=None):
        self.dir = tempfile.mkdtemp(prefix="postern-vendor-")
        self.db = os.path.join(self.dir, "licenses.db")
        self.key = os.path.join(self.dir, "vendor.key")
        self.pub = os.path.join(self.dir, "vendor.pub")
        r = subprocess.run([tool("postern-license-server"), "--gen-key", "--key", self.key, "--public-key", self.pub],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert oct(os.stat(self.key).st_mode & 0o777) == "0o600"
        self.proc = None
        self.port = None

    def issue(self, license, expires, prefix=None):
        args = [tool("postern-issue-code"), license, "--expires", date_str(expires), "--db", self.db]
        if prefix:
            args += ["--prefix", prefix]
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def renew(self, code, expires):
        r = subprocess.run([tool("postern-issue-code"), "--renew", code, "--expires", date_str(expires), "--db", self.db],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr

    def start(self, db=None, key=None):
        self.port = self.port or free_port()
        self.proc = subprocess.Popen([tool("postern-license-server"), "--listen", "127.0.0.1:%d" % self.port,
                                      "--db", db or self.db, "--key", key or self.key],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline()
        assert b"listening" in line, line
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class TamperProxy:
    def __init__(self, upstream, mode="tamper", log=None):
        self.port = free_port()
        self.proc = subprocess.Popen([PYTHON, os.path.join(PEERS, "license_tamper_proxy.py"), "--listen",
                                      "127.0.0.1:%d" % self.port, "--upstream", upstream, "--mode", mode]
                                     + (["--log", log] if log else []),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert b"ready" in self.proc.stdout.readline()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def api(d, method, path, body=None):
    ctx = ssl.create_default_context(cafile=os.path.join(d.dir, "certs", "default_console.crt"))
    data = body.encode() if isinstance(body, str) else (json.dumps(body).encode() if body is not None else b"")
    req = urllib.request.Request(d.admin_url() + path, method=method, data=data if method == "POST" else None)
    req.add_header("Authorization", "Bearer " + d.token())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=40) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def licenses(d):
    rc, out, err = d.ctl("--json", "license", "list")
    assert rc == 0, err
    return {l["license"]: l for l in json.loads(out)["licenses"]}


def daemon(vendor, server=None, extra=None, **kw):
    conf = {"license": {"server": server if server is not None else vendor.url, "public_key_file": vendor.pub,
                        "proxy": "direct"}}
    for k, v in (extra or {}).items():
        conf.setdefault(k, {}).update(v)
    return Daemon(conf, **kw)


def run(vendor_started, body, server=None, extra=None, **kw):
    v = Vendor()
    if vendor_started:
        v.start()
    d = daemon(v, server, extra, **kw)
    try:
        d.start()
        body(v, d)
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d, 60))
        raise
    finally:
        d.cleanup()
        v.cleanup()


def with_symbol_changed(code):
    i = len(code) - 3
    c = "0" if code[i] != "0" else "1"
    return code[:i] + c + code[i + 1:]


def test_activation_rules_through_the_real_license_server():
    def body(v, d):
        exp = today() + datetime.timedelta(days=365)
        as_code = v.issue("antispam", exp, prefix="AS")
        av_code = v.issue("antivirus", exp)
        dl_code = v.issue("dlp", exp)
        assert as_code.startswith("AS-") and av_code.startswith("IM-") and dl_code.startswith("DL-")
        for lic, code in [("antivirus", as_code), ("antivirus", with_symbol_changed(av_code)),
                          ("encryption", av_code), ("encryption", as_code), ("dlp", av_code)]:
            rc, out, err = d.ctl("license", "activate", lic, code)
            assert rc == 1 and REFUSED in err, (lic, code, rc, err)
        # A well-formed code the vendor never issued: the server says no, with the same text.
        stray = subprocess.run([tool("postern-issue-code"), "antivirus", "--expires", date_str(exp), "--db",
                                os.path.join(v.dir, "other.db")], capture_output=True, text=True, timeout=30)
        rc, out, err = d.ctl("license", "activate", "antivirus", stray.stdout.strip())
        assert rc == 1 and REFUSED in err, err
        rc, out, err = d.ctl("license", "activate", "antispam", as_code)
        assert rc == 0, err
        ls = licenses(d)
        assert ls["antispam"]["state"] == "active" and ls["antispam"]["code"] == as_code
        assert ls["reputation"]["state"] == "active" and ls["reputation"]["code"] == as_code, ls["reputation"]
        assert ls["reputation"]["expires"] == date_str(exp)
        assert ls["antivirus"]["state"] == "not activated"
        assert ls["encryption"]["state"] == "not activated" and not ls["encryption"]["can_activate"]
        rc, out, err = d.ctl("license", "activate", "antivirus", av_code)
        assert rc == 0, err
        rc, out, err = d.ctl("license", "list")
        assert rc == 0 and "antivirus" in out and av_code in out and date_str(exp) in out, out
        assert "Regulatory compliance (DLP) is not activated. Activate it to use this feature." in out
        rc, out, err = d.ctl("license", "hide-optional")
        assert rc == 0, err
        assert licenses(d)["dlp"]["notice"] is None
        rc, out, err = d.ctl("license", "show-optional")
        assert licenses(d)["dlp"]["notice"].startswith("Regulatory compliance (DLP) is not activated")
        status, text = d.api("GET", "/metrics")
        assert 'postern_license_state{license="reputation",state="active"} 1' in text, text
        assert 'postern_license_days_to_expiry{license="antivirus"} 365' in text
    run(True, body)


def test_server_down_tampered_and_other_key_leave_the_state_alone():
    def body(v, d):
        exp = today() + datetime.timedelta(days=300)
        code = v.issue("antivirus", exp)
        assert d.ctl("license", "activate", "antivirus", code)[0] == 0
        v.renew(code, exp + datetime.timedelta(days=365))  # an honest answer would now update
        v.stop()
        rc, out, err = d.ctl("license", "update-status")
        assert rc == 1 and UNREACHABLE in err, (rc, out, err)
        assert licenses(d)["antivirus"]["expires"] == date_str(exp)
        assert licenses(d)["antivirus"]["state"] == "active"
        # A tampering proxy: a later date in the signed payload.
        v.start()
        proxy = TamperProxy(v.url)
        try:
            d.write_config({"license": {"server": proxy.url, "public_key_file": v.pub, "proxy": "direct"}})
            d.signal(signal.SIGHUP)
            d.wait_log("reload: config applied")
            time.sleep(1.2)  # the manager takes the new config at its next 1 s tick
            rc, out, err = d.ctl("license", "update-status")
            assert rc == 1 and UNREACHABLE in err, (rc, out, err)
            assert licenses(d)["antivirus"]["expires"] == date_str(exp)
            d.wait_log("does not verify against the pinned license key")
            # A record signed by another key (a license server with the same database, another key).
            v2 = Vendor()
            v2.start(db=v.db)
            d.write_config({"license": {"server": v2.url, "public_key_file": v.pub, "proxy": "direct"}})
            d.signal(signal.SIGHUP)
            time.sleep(1.5)
            rc, out, err = d.ctl("license", "update-status")
            assert rc == 1 and UNREACHABLE in err, (rc, out, err)
            assert licenses(d)["antivirus"]["expires"] == date_str(exp)
            v2.cleanup()
            # The real server, directly: the renewal arrives, then nothing more to do.
            d.write_config({"license": {"server": v.url, "public_key_file": v.pub, "proxy": "direct"}})
            d.signal(signal.SIGHUP)
            time.sleep(1.5)
            rc, out, err = d.ctl("license", "update-status")
            assert rc == 0 and UPDATED in out, (rc, out, err)
            assert licenses(d)["antivirus"]["expires"] == date_str(exp + datetime.timedelta(days=365))
            rc, out, err = d.ctl("license", "update-status")
            assert rc == 0 and NO_UPDATE in out, (rc, out, err)
            status, text = d.api("GET", "/metrics")
            assert "postern_license_records_refused_total 2" in text, text
        finally:
            proxy.stop()
    run(True, body)


def test_offline_import_and_profiles():
    def body(v, d):
        exp = today() + datetime.timedelta(days=100)
        code = v.issue("dlp", exp)
        other = v.issue("dlp", exp + datetime.timedelta(days=10))
        lic = os.path.join(v.dir, "site.lic")
        r = subprocess.run([tool("postern-license-server"), "--export-license", code, "--db", v.db, "--key", v.key,
                            "--out", lic], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        rc, out, err = d.ctl("license", "import", lic)
        assert rc == 0, err
        assert licenses(d)["dlp"]["code"] == code and licenses(d)["dlp"]["state"] == "active"
        # A hand-edited file: a later date, the old signature.
        doc = json.load(open(lic))
        doc["payload"] = doc["payload"].replace(date_str(exp), "2099-01-01")
        bad = os.path.join(v.dir, "edited.lic")
        json.dump(doc, open(bad, "w"))
        rc, out, err = d.ctl("license", "import", bad)
        assert rc == 1 and "does not verify" in err, err
        # A profile replacing the code by another one is refused; the same code is taken.
        other_lic = os.path.join(v.dir, "other.lic")
        subprocess.run([tool("postern-license-server"), "--export-license", other, "--db", v.db, "--key", v.key,
                        "--out", other_lic], check=True, capture_output=True, timeout=30)
        status, j = api(d, "POST", "/api/v1/licenses/profile", open(other_lic).read())
        assert status == 409 and "cannot replace" in j["error"], (status, j)
        v.renew(code, exp + datetime.timedelta(days=30))
        subprocess.run([tool("postern-license-server"), "--export-license", code, "--db", v.db, "--key", v.key,
                        "--out", lic], check=True, capture_output=True, timeout=30)
        status, j = api(d, "POST", "/api/v1/licenses/profile", open(lic).read())
        assert status == 200, j
        assert licenses(d)["dlp"]["expires"] == date_str(exp + datetime.timedelta(days=30))
        assert licenses(d)["dlp"]["code"] == code
    run(False, body, server="")


def test_renewal_picked_up_by_the_next_scheduled_check_without_restart():
    def body(v, d):
        exp = today() + datetime.timedelta(days=200)
        code = v.issue("antivirus", exp)
        assert d.ctl("license", "activate", "antivirus", code)[0] == 0
        nxt = today() + datetime.timedelta(days=20)  # D-180 is the next 30-day point
        assert licenses(d)["antivirus"]["next_check"] == date_str(nxt) + "T00:00:00Z", licenses(d)["antivirus"]
        v.renew(code, exp + datetime.timedelta(days=365))
        pid = d.proc.pid
        d.move_clock(midnight(nxt) + 30 - int(time.time()))
        wait_for(lambda: licenses(d)["antivirus"]["expires"] == date_str(exp + datetime.timedelta(days=365)), 15,
                 "the scheduled check to pick up the renewal")
        assert d.proc.pid == pid and d.proc.poll() is None
        assert licenses(d)["antivirus"]["last_check"].startswith(date_str(nxt))
    run(True, body, test_clock=True)


def test_states_notices_and_the_daily_mail_end_to_end():
    peer = Peer(tls=False)
    try:
        def body(v, d):
            D = today() + datetime.timedelta(days=70)
            code = v.issue("antivirus", D)
            assert d.ctl("license", "activate", "antivirus", code)[0] == 0

            def at(days, secs=60):
                d.move_clock(midnight(D + datetime.timedelta(days=days)) + secs - int(time.time()))

            def state_is(state, notice=None):
                def ok():
                    l = licenses(d)["antivirus"]
                    return l["state"] == state and (notice is None or (l["notice"] or "").startswith(notice)) and l
                return wait_for(ok, 10, "state %s" % state)

            at(-61)
            state_is("active")
            assert licenses(d)["antivirus"]["notice"] is None
            at(-60)
            state_is("expiring", "The support contract for Antivirus and content filter ends in 60 days.")
            def alert():
                status, alerts = d.api("GET", "/api/v1/alerts")  # 503 until the database is up
                return status == 200 and [a for a in alerts
                                          if a["code"] == "LICENSE_ANTIVIRUS" and "ends in 60 days" in a["text"]]
            wait_for(alert, 20, "the expiry notice as an alert")
            assert peer.messages() == []
            at(-15)
            state_is("expiring", "The support contract for Antivirus and content filter ends in 15 days.")
            subj = "The license for Antivirus and content filter expires in 15 days."
            wait_for(lambda: [m for m in peer.messages() if subj.encode() in m["body"]], 20, "the D-15 mail")
            at(-15, 3600 * 5)  # later the same day: no second mail
            at(-14)
            subj14 = "The license for Antivirus and content filter expires in 14 days."
            wait_for(lambda: [m for m in peer.messages() if subj14.encode() in m["body"]], 20, "the D-14 mail")
            mails = [m for m in peer.messages() if b"Subject: The license for" in m["body"]]
            assert len(mails) == 2, [m["body"][:300] for m in mails]
            assert all(len(m["rcpts"]) == 1 and "<admin@example.test>" in m["rcpts"][0] and "<>" in m["mail_from"]
                       for m in mails), [(m["mail_from"], m["rcpts"]) for m in mails]
            at(0)
            state_is("grace", "The support contract for Antivirus and content filter ended on %s. The renewal "
                              "grace period after the end of the contract has 90 days left." % date_str(D))
            wait_for(lambda: [m for m in peer.messages()
                              if b"Subject: The license for Antivirus and content filter expired 0 days ago." in m["body"]
                              and b"which ends in 90 days." in m["body"]], 20, "the D mail")
            at(90)
            end = date_str(D + datetime.timedelta(days=90))
            state_is("expired", "Product updates for Antivirus and content filter ended on %s." % end)
            at(91)
            state_is("expired")
            time.sleep(2)  # two ticks: no mail after grace
            subjects = [m["body"].split(b"Subject: ")[1].split(b"\r\n")[0] for m in peer.messages()]
            assert len(subjects) == 3, subjects
            # Setting the clock back to today does not bring the license back from expiry.
            d.move_clock(0)
            d.wait_log("the clock went back")
            time.sleep(1.5)
            assert licenses(d)["antivirus"]["state"] == "expired"
        run(True, body, test_clock=True,
            extra={"license": {"admin_email": "admin@example.test"},
                   "routes": {"example.test": "[127.0.0.1]:%d" % peer.port},
                   "queue": {"min_backoff": "1s", "max_backoff": "2s"}})
    finally:
        peer.cleanup()


def test_activating_while_20_sessions_send_mail_drops_none():
    def body(v, d):
        code = v.issue("antispam", today() + datetime.timedelta(days=400))
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
        rc, out, err = d.ctl("license", "activate", "antispam", code)
        for t in threads:
            t.join(60)
        assert rc == 0, err
        assert not errors, errors
        assert results == [250] * 60, results
        assert licenses(d)["reputation"]["state"] == "active"
    run(True, body, deliver=False)


def psql(d, sql, must=True):
    r = subprocess.run(["psql", "-h", os.path.join(d.dir, "pgsock"), "-U", "postern", "-d", "postgres", "-tAc", sql],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 or not must, r.stderr
    return r.stdout.strip() if r.returncode == 0 else None


def test_a_hand_edited_database_row_extends_nothing():
    def body(v, d):
        exp = today() + datetime.timedelta(days=40)
        code = v.issue("antivirus", exp)
        assert d.ctl("license", "activate", "antivirus", code)[0] == 0
        # Activated before the private cluster was up: written to the database once it is.
        wait_for(lambda: psql(d, "SELECT count(*) FROM licenses WHERE record IS NOT NULL", must=False) == "1", 30,
                 "the row")
        assert int(psql(d, "SELECT max(version) FROM schema_migrations")) >= 3  # licensing is migration 3
        # An admin with database access moves the date: in the readable column and in the record.
        psql(d, "UPDATE licenses SET expires_on = '2099-01-01', record = replace(record, '%s', '2099-01-01')"
             % date_str(exp))
        d.stop()
        # Only the database is left to believe: the cache is broken too (wrong types: ignored, not fatal).
        with open(os.path.join(d.dir, "cache", "licenses.json"), "w") as f:
            f.write('{"records": "x", "hide_optional": "yes", "latest_seen": []}')
        d.start()
        d.wait_log("the database's record for antivirus is refused")
        assert "licenses.json is malformed and ignored" in d.log_text()
        l = licenses(d)["antivirus"]
        assert l["state"] == "not activated" and l["expires"] is None, l
        # The vendor's record, activated again, is what counts (and is written back over the edit).
        assert d.ctl("license", "activate", "antivirus", code)[0] == 0
        assert licenses(d)["antivirus"]["expires"] == date_str(exp)
        assert licenses(d)["antivirus"]["state"] == "expiring"
    run(True, body)


def test_two_nodes_on_one_database_share_the_license_and_send_one_mail_a_day():
    from harness import ExternalPostgres
    pg = ExternalPostgres()
    v = Vendor().start()
    peer = Peer(tls=False)
    nodes = []
    try:
        for name in ("node-a", "node-b"):
            nodes.append(daemon(v, extra={"database": {"url": pg.url}, "server": {"node_name": name},
                                          "license": {"admin_email": "admin@example.test"},
                                          "routes": {"example.test": "[127.0.0.1]:%d" % peer.port}},
                                test_clock=True).start())
        a, b = nodes
        for d in nodes:
            wait_for(lambda: d.api("GET", "/api/v1/health")[1].get("database") == "up", 30, "the database")
        time.sleep(0.5)  # both LISTENing
        D = today() + datetime.timedelta(days=30)
        code = v.issue("antivirus", D)
        assert a.ctl("license", "activate", "antivirus", code)[0] == 0
        wait_for(lambda: licenses(b)["antivirus"]["code"] == code, 10, "node B to take node A's activation")
        for d in nodes:
            d.move_clock(midnight(D - datetime.timedelta(days=10)) + 60 - int(time.time()))
        subj = b"Subject: The license for Antivirus and content filter expires in 10 days."
        wait_for(lambda: [m for m in peer.messages() if subj in m["body"]], 20, "the mail")
        time.sleep(2)
        assert len([m for m in peer.messages() if subj in m["body"]]) == 1, "one mail for two nodes"
        assert "sent by another node" in a.log_text() + b.log_text()
        for d in nodes:
            assert d.stop() == 0
    except BaseException:
        for d in nodes:
            print(log_tail(d, 40))
        raise
    finally:
        for d in nodes:
            d.cleanup()
        peer.cleanup()
        v.cleanup()
        pg.cleanup()


def test_days_turn_at_midnight_in_server_timezone():
    def body(v, d):
        D = today() + datetime.timedelta(days=100)
        code = v.issue("antivirus", D)
        assert d.ctl("license", "activate", "antivirus", code)[0] == 0
        assert json.loads(d.ctl("--json", "license", "list")[1])["timezone"] == "+09:00"
        jst_midnight = midnight(D) - 9 * 3600  # D 00:00 in Japan is D-1 15:00 UTC
        d.move_clock(jst_midnight - 60 - int(time.time()))
        wait_for(lambda: licenses(d)["antivirus"]["days_left"] == 1, 10, "one day left at 23:59 JST")
        assert licenses(d)["antivirus"]["state"] == "expiring"
        d.move_clock(jst_midnight + 60 - int(time.time()))
        wait_for(lambda: licenses(d)["antivirus"]["state"] == "grace", 10, "grace from 00:00 JST")
        # The check on D ran at once; the next is D+30 00:00 in Japan, (D+29) 15:00 UTC.
        wait_for(lambda: licenses(d)["antivirus"]["next_check"] == date_str(D + datetime.timedelta(days=29)) +
                 "T15:00:00Z", 10, "the next check at D+30 00:00 JST")
    run(True, body, test_clock=True, extra={"server": {"timezone": "+09:00"}})


def test_checks_go_through_license_proxy():
    v = Vendor().start()
    log = os.path.join(v.dir, "proxy.log")
    proxy = TamperProxy("http://127.0.0.1:9", mode="pass", log=log)  # upstream unused: a forward proxy
    try:
        def body(v2, d):
            code = v.issue("antivirus", today() + datetime.timedelta(days=300))
            assert d.ctl("license", "activate", "antivirus", code)[0] == 0
            rc, out, err = d.ctl("license", "update-status")
            assert rc == 0 and NO_UPDATE in out, (rc, out, err)
            lines = open(log).read().splitlines()
            assert lines == ["POST %s/v1/activate" % v.url, "POST %s/v1/status" % v.url], lines
            proxy.stop()  # the proxy gone: unreachable, whatever the server says
            rc, out, err = d.ctl("license", "update-status")
            assert rc == 1 and UNREACHABLE in err, (rc, out, err)
            assert licenses(d)["antivirus"]["state"] == "active"
        d = Daemon({"license": {"server": v.url, "public_key_file": v.pub, "proxy": proxy.url}})
        try:
            d.start()
            body(v, d)
            assert d.stop() == 0
        except BaseException:
            print(log_tail(d, 40))
            raise
        finally:
            d.cleanup()
    finally:
        proxy.stop()
        v.cleanup()
