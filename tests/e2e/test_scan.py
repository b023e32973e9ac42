"""End-to-end tests of the scanning gate: the real posternd with libclamav, signatures from a
ClamAV database directory (scan.clamav_database_dir, loose .hdb/.ndb files), the antivirus
license activated through the real vendor tools (as test_license does), and an SMTP sink peer
downstream. Dates move with posternd --test-clock; no test sleeps to move time."""
import base64
import datetime
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile

from harness import Daemon, ExternalPostgres, Peer, Smtp, log_tail, send_message, wait_for
from test_license import Vendor, licenses, midnight, psql, today

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"POSTERN-BODY-TEST-MARKER-7f3a"
QID = re.compile(r"queued as ([0-9A-Z]+)")


def sig_dir():
    d = tempfile.mkdtemp(prefix="postern-clamdb-")
    with open(os.path.join(d, "test.hdb"), "w") as f:
        f.write("44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n")
    with open(os.path.join(d, "test.ndb"), "w") as f:
        f.write("Postern.Test.Body:0:*:%s\n" % MARKER.hex())
    return d


def mail(attachment=None, name="x.bin", extra_headers="", subject="scan test"):
    head = ("From: bob@remote.example\r\nTo: alice@example.test\r\nSubject: %s\r\n%sMIME-Version: 1.0\r\n"
            % (subject, extra_headers))
    if attachment is None:
        return head + "\r\nhello, nothing to see\r\n"
    b64 = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return (head + 'Content-Type: multipart/mixed; boundary="BB"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\n'
            "see attachment\r\n--BB\r\nContent-Type: application/octet-stream; name=\"%s\"\r\n"
            "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"%s\"\r\n\r\n%s"
            "--BB--\r\n" % (name, name, b64))


def zipped(name, data, level=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", level) as z:
        z.writestr(name, data)
    return buf.getvalue()


def metric(d, line_start):
    status, text = d.api("GET", "/metrics")
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def scan_headers(body):
    head = body.split(b"\r\n\r\n", 1)[0]
    return [l for l in head.split(b"\r\n") if l.lower().startswith(b"x-postern-scan:")]


class Gate:
    """A vendor, a signature directory, a sink peer and posternd relaying example.test to it."""

    def __init__(self, activate=True, scan=None, test_clock=False, expires_in_days=200, extra=None, peer_flags=()):
        self.vendor = Vendor().start()
        self.sigs = sig_dir()
        self.peer = Peer(tls=False, flags=peer_flags)
        conf = {"license": {"server": self.vendor.url, "public_key_file": self.vendor.pub, "proxy": "direct"},
                "routes": {"example.test": "[%s]:%d" % (self.peer.host, self.peer.port)},
                "outbound": {"connect_timeout": "2s", "command_timeout": "4s"},
                "queue": {"min_backoff": "1s", "max_backoff": "2s"},
                "scan": dict({"clamav_database_dir": self.sigs}, **(scan or {})),
                # The patterns here are the test's own freshclam directory only (test_patterns
                # covers the starter bundle and the two sources together).
                "updates": {"starter_bundle": "none"}}
        conf.update(extra or {})
        self.d = Daemon(conf, test_clock=test_clock)
        self.D = today() + datetime.timedelta(days=expires_in_days)
        try:
            self.d.start()
            if activate:
                code = self.vendor.issue("antivirus", self.D)
                rc, out, err = self.d.ctl("license", "activate", "antivirus", code)
                assert rc == 0, out + err
            # The freshclam source is read on the control loop's tick and compiled off it.
            wait_for(lambda: "patterns source=freshclam version=" in self.d.log_text(), 30, "patterns installed")
        except BaseException:
            self.close(failed=True)
            raise

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

    def delivered(self, n=1):
        wait_for(lambda: len(self.peer.messages()) >= n, 20, "%d deliveries to the sink" % n)
        return self.peer.messages()


def with_gate(body, **kw):
    g = Gate(**kw)
    try:
        body(g)
    except BaseException:
        g.close(failed=True)
        raise
    g.close()


def test_eicar_rejected_in_base64_and_zip_clean_delivered_with_header_forgery_removed():
    def body(g):
        d = g.d
        code, text = send_message(d.port, body=mail(EICAR))
        assert code == 554 and text.startswith("554 5.7.1") and "Eicar-Test-Signature" in text, text
        code, text = send_message(d.port, body=mail(zipped("eicar.com", EICAR), name="eicar.zip"))
        assert code == 554 and "Eicar-Test-Signature" in text, text
        code, text = send_message(d.port, body=mail(b"xx " + MARKER + b" yy"))  # the .ndb body signature
        assert code == 554 and "Postern.Test.Body" in text, text
        assert d.queued() == [], "a refused message must leave nothing queued"
        forged = "X-Postern-Scan: clamav/1.4.6; patterns=bundle:9999 age=0d; verdict=clean\r\n"
        code, text = send_message(d.port, body=mail(b"harmless attachment", extra_headers=forged))
        assert code == 250, text
        m = g.delivered()[0]
        hs = scan_headers(m["body"])
        assert len(hs) == 1, hs
        h = hs[0].decode()
        assert re.match(r"X-Postern-Scan: clamav/1\.\d+\.\d+; patterns=freshclam:\d{14} age=\d+[smhd]; verdict=clean$", h), h
        assert b"bundle:9999" not in m["body"]
        assert m["body"].startswith(b"X-Postern-Scan: ") and b"\r\nReceived: from " in m["body"]
        assert metric(d, 'postern_scan_total{verdict="infected"}') >= 3
        assert metric(d, 'postern_scan_total{verdict="clean"}') >= 1
        assert metric(d, 'postern_patterns_stale') == 0
        assert metric(d, "postern_scan_seconds_count") >= 4
        status, text = d.api("GET", "/metrics")
        assert re.search(r'postern_patterns_version_info\{source="freshclam",version="\d{14}"\} 1', text), text
        d.wait_log("scan verdict=infected signature=Eicar-Test-Signature")
    with_gate(body)


def test_pipelined_transactions_wait_for_the_verdict():
    def body(g):
        c = Smtp(g.d.port)
        c.cmd("EHLO client.e2e")
        bad, good = mail(EICAR), mail(b"fine")
        c.send("MAIL FROM:<bob@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert c.reply()[0] == 250 and c.reply()[0] == 250 and c.reply()[0] == 354
        # The next transaction is pipelined behind the end of data: its replies come after the verdict.
        c.send(bad + ".\r\nMAIL FROM:<bob@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        code, text = c.reply()
        assert code == 554 and "Eicar-Test-Signature" in text, text
        assert c.reply()[0] == 250 and c.reply()[0] == 250 and c.reply()[0] == 354
        c.send(good + ".\r\n")
        code, text = c.reply()
        assert code == 250 and "queued as" in text, text
        c.cmd("QUIT")
        c.close()
        assert len(g.delivered()) == 1
    with_gate(body)


def test_not_activated_no_scan_and_the_header_says_so():
    def body(g):
        d = g.d
        assert licenses(d)["antivirus"]["state"] == "not activated"
        code, text = send_message(d.port, body=mail(EICAR))
        assert code == 250, text  # the engine does not run without the license (SPEC 5, 6)
        m = g.delivered()[0]
        assert scan_headers(m["body"]) == [b"X-Postern-Scan: not scanned; antivirus license not activated"]
        assert metric(d, 'postern_scan_total{verdict="not_scanned"}') >= 1
        assert metric(d, 'postern_scan_total{verdict="infected"}') == 0
    with_gate(body, activate=False)


def test_quarantine_kept_listed_released_delivered():
    def body(g):
        d = g.d
        code, text = send_message(d.port, body=mail(EICAR, subject="quarantine me"))
        assert code == 250, text
        qid = QID.search(text).group(1)
        assert d.queued() == [] and os.path.exists(os.path.join(d.dir, "queue", "quarantine", qid + ".msg"))
        rc, out, err = d.ctl("--json", "quarantine", "list", "--signature", "eicar")
        assert rc == 0, err
        entries = json.loads(out)["entries"]
        assert [e["id"] for e in entries] == [qid], entries
        e = entries[0]
        assert e["sender"] == "bob@remote.example" and e["recipients"] == ["alice@example.test"]
        assert e["subject"] == "quarantine me" and e["signature"].startswith("Eicar-Test-Signature")
        rc, out, err = d.ctl("--json", "quarantine", "list", "--rcpt", "nobody@")
        assert rc == 0 and json.loads(out)["entries"] == [], out
        rc, out, err = d.ctl("quarantine", "list")
        assert rc == 0 and qid in out, out
        rc, out, err = d.ctl("--json", "quarantine", "show", qid)
        assert rc == 0, err
        shown = json.loads(out)
        assert "verdict=infected (Eicar-Test-Signature" in shown["headers"] and "Subject: quarantine me" in shown["headers"]
        assert d.ctl("quarantine", "show", "../x")[0] != 0
        assert g.peer.messages() == []  # nothing delivered while quarantined
        # The database index, written from the quarantine area by the control plane.
        row = lambda: psql(d, "SELECT sender, recipients::text, subject, signature, state FROM quarantine "
                              "WHERE queue_id = '%s'" % qid, must=False)
        wait_for(lambda: row(), 30, "the quarantine index row")
        assert row() == 'bob@remote.example|["alice@example.test"]|quarantine me|%s|quarantined' % e["signature"], row()
        assert metric_index(d) == 0
        rc, out, err = d.ctl("quarantine", "release", qid)
        assert rc == 0, out + err
        m = g.delivered()[0]
        hs = scan_headers(m["body"])
        assert len(hs) == 1 and b"verdict=infected (Eicar-Test-Signature" in hs[0] and b"; released from quarantine " in hs[0], hs
        assert base64.b64encode(EICAR)[:40] in m["body"].replace(b"\r\n", b"")  # the attachment as it came
        wait_for(lambda: row() and row().endswith("|released"), 15, "the index row says released")
        rc, out, err = d.ctl("--json", "quarantine", "list")
        assert json.loads(out)["entries"] == []
        # A second one is deleted.
        code, text = send_message(d.port, body=mail(EICAR))
        qid2 = QID.search(text).group(1)
        assert d.ctl("quarantine", "delete", qid2)[0] == 0
        assert not os.path.exists(os.path.join(d.dir, "queue", "quarantine", qid2 + ".msg"))
        assert d.ctl("quarantine", "delete", qid2)[0] != 0
    with_gate(body, scan={"on_virus": "quarantine"})


def metric_index(d):
    rc, out, err = d.ctl("--json", "quarantine", "list")
    return json.loads(out).get("index_pending") if rc == 0 else None


def test_after_grace_eicar_still_rejected_header_and_metrics_say_stale():
    def body(g):
        d = g.d
        # Past the end of grace (D + 90 days), as test_license moves it.
        grace_end = g.D + datetime.timedelta(days=91)
        d.move_clock(midnight(grace_end) + 60 - int(time.time()))
        wait_for(lambda: licenses(d)["antivirus"]["state"] == "expired", 15, "license past grace")
        code, text = send_message(d.port, body=mail(EICAR))
        assert code == 554 and "Eicar-Test-Signature" in text, text
        code, text = send_message(d.port, body=mail(b"clean"))
        assert code == 250, text
        h = scan_headers(g.delivered()[0]["body"])
        assert len(h) == 1 and h[0].endswith(b"; verdict=clean; stale"), h
        assert metric(d, "postern_patterns_stale") == 1
    with_gate(body, test_clock=True, expires_in_days=70)


def test_engine_timeout_is_451_never_a_silent_pass():
    def body(g):
        d = g.d
        # A large archive of many members: libclamav cannot finish it within scan.timeout.
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(400):
                z.writestr("f%d.txt" % i, os.urandom(2048).hex())
        code, text = send_message(d.port, body=mail(buf.getvalue(), name="big.zip"))
        assert code == 451 and text.startswith("451 4.7.1"), text
        assert d.queued() == []
        assert metric(d, 'postern_scan_failures_total{reason="timeout"}') >= 1
        assert metric(d, 'postern_scan_total{verdict="error"}') >= 1
        assert g.peer.messages() == []
    with_gate(body, scan={"timeout": "5ms"})


def test_freshclam_directory_change_is_picked_up_without_restart():
    def body(g):
        d = g.d
        new_marker = b"POSTERN-SECOND-MARKER-91c4"
        code, text = send_message(d.port, body=mail(new_marker))
        assert code == 250, text  # not a signature yet
        path = os.path.join(g.sigs, "second.ndb")
        with open(path + ".tmp", "w") as f:
            f.write("Postern.Test.Second:0:*:%s\n" % new_marker.hex())
        later = int(time.time()) + 3600
        os.utime(path + ".tmp", (later, later))
        os.rename(path + ".tmp", path)
        version = time.strftime("%Y%m%d%H%M%S", time.gmtime(later))
        d.wait_log("patterns source=freshclam version=%s installed" % version, 20)
        code, text = send_message(d.port, body=mail(new_marker))
        assert code == 554 and "Postern.Test.Second" in text, text
        code, text = send_message(d.port, body=mail(EICAR))  # the first file's signatures stay
        assert code == 554 and "Eicar-Test-Signature" in text, text
        code, text = send_message(d.port, body=mail(b"clean"))
        assert code == 250
        hs = scan_headers(g.delivered(2)[-1]["body"])
        assert len(hs) == 1 and ("patterns=freshclam:%s " % version).encode() in hs[0], hs
        # A broken signature file is refused: the engine in use stays.
        with open(os.path.join(g.sigs, "broken.ndb"), "w") as f:
            f.write("not a signature\n")
        d.wait_log("event=PATTERN_ENGINE_BUILD_FAILED", 20)
        d.wait_log("event code=PATTERN_UPDATE_FAILED severity=error freshclam patterns", 10)
        code, text = send_message(d.port, body=mail(new_marker))
        assert code == 554 and "Postern.Test.Second" in text, text
    with_gate(body)


def test_quarantined_while_the_database_is_down_is_indexed_when_it_is_back():
    pg = ExternalPostgres()
    try:
        def body(g):
            d = g.d
            def row(qid):
                r = subprocess.run(["psql", pg.url, "-tAc", "SELECT state FROM quarantine WHERE queue_id = '%s'" % qid],
                                   capture_output=True, text=True, timeout=30)
                return r.stdout.strip() if r.returncode == 0 else None
            pg.stop()
            wait_for(lambda: d.api("GET", "/api/v1/health")[1]["database"] == "down", 15, "the database seen down")
            code, text = send_message(d.port, body=mail(EICAR))
            assert code == 250, text  # quarantined: the database is not needed for that
            qid = QID.search(text).group(1)
            rc, out, err = d.ctl("--json", "quarantine", "list")
            listed = json.loads(out)
            assert [e["id"] for e in listed["entries"]] == [qid]
            wait_for(lambda: metric_index(d) == 1, 15, "the entry pending for the index")
            pg.start()
            wait_for(lambda: row(qid) == "quarantined", 30, "the index row written once the database is back")
            assert metric_index(d) == 0
            # A release while it is down again is written when it is back.
            pg.stop()
            wait_for(lambda: d.api("GET", "/api/v1/health")[1]["database"] == "down", 15, "the database down again")
            assert d.ctl("quarantine", "release", qid)[0] == 0
            g.delivered()
            pg.start()
            wait_for(lambda: row(qid) == "released", 30, "the release written once the database is back")
        with_gate(body, scan={"on_virus": "quarantine"}, extra={"database": {"url": pg.url}})
    finally:
        pg.cleanup()


def test_release_and_delete_while_the_database_is_down_survive_a_restart():
    """QuarantineIndex: the changes the database has not confirmed are kept in
    <state_dir>/quarantine-index.json, read back at start and written once the database is up."""
    pg = ExternalPostgres()
    try:
        def body(g):
            d = g.d
            def row(qid):
                r = subprocess.run(["psql", pg.url, "-tAc", "SELECT state FROM quarantine WHERE queue_id = '%s'" % qid],
                                   capture_output=True, text=True, timeout=30)
                return r.stdout.strip() if r.returncode == 0 else None
            qids = []
            for _ in range(2):
                code, text = send_message(d.port, body=mail(EICAR))
                assert code == 250, text
                qids.append(QID.search(text).group(1))
            for q in qids:
                wait_for(lambda: row(q) == "quarantined", 30, "the index row of %s" % q)
            pg.stop()
            wait_for(lambda: d.api("GET", "/api/v1/health")[1]["database"] == "down", 15, "the database seen down")
            assert d.ctl("quarantine", "release", qids[0])[0] == 0
            assert d.ctl("quarantine", "delete", qids[1])[0] == 0
            g.delivered()
            path = os.path.join(d.dir, "quarantine-index.json")
            with open(path) as f:
                saved = json.load(f)
            assert saved["states"] == {qids[0]: "released", qids[1]: "deleted"}, saved
            assert d.stop() == 0
            d.start()  # the database still down
            d.wait_log("quarantine index: 2 release/delete changes still to write to the database", 15)
            wait_for(lambda: metric_index(d) == 2, 15, "both changes pending after the restart")
            pg.start()
            wait_for(lambda: row(qids[0]) == "released" and row(qids[1]) == "deleted", 30,
                     "the changes written once the database is back")
            wait_for(lambda: not os.path.exists(path), 15, "the pending file removed once written")
            assert metric_index(d) == 0
        with_gate(body, scan={"on_virus": "quarantine"}, extra={"database": {"url": pg.url}})
    finally:
        pg.cleanup()


def test_failure_action_accept_delivers_with_verdict_error():
    def body(g):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(400):
                z.writestr("f%d.txt" % i, os.urandom(2048).hex())
        code, text = send_message(g.d.port, body=mail(buf.getvalue(), name="big.zip"))
        assert code == 250, text
        hs = scan_headers(g.delivered()[0]["body"])
        assert len(hs) == 1 and hs[0].endswith(b"; verdict=error (timeout)"), hs
    with_gate(body, scan={"timeout": "5ms", "failure_action": "accept"})


def test_sigterm_with_a_scan_in_flight_answers_it_and_loses_nothing():
    def body(g):
        d = g.d
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(300):
                z.writestr("f%d.txt" % i, os.urandom(2048).hex())
        c = Smtp(d.port)
        c.cmd("EHLO client.e2e")
        assert c.cmd("MAIL FROM:<bob@remote.example>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(mail(buf.getvalue(), name="big.zip") + ".\r\n")
        d.signal(signal.SIGTERM)  # while the message is being scanned (or just after)
        code, text = c.reply()
        assert code == 250 and "queued as" in text, text
        qid = QID.search(text).group(1)
        code, text = c.reply()  # then the drain closes the session
        assert code == 421, text
        c.close()
        rc = d.proc.wait(30)  # the SIGTERM above: posternd drains and exits by itself
        d.proc = None
        assert rc == 0, (rc, log_tail(d, 30))
        d.wait_log("queue_id=%s client=127.0.0.1 scan verdict=clean" % qid)
        delivered = [m for m in g.peer.messages() if qid.encode() in m["body"]]
        assert delivered or qid in d.queued(), "the accepted message must be delivered or still queued"
    with_gate(body)


def raw_mail(head, attachment):
    """A message with exactly this header section (CRLF lines) and a base64 attachment."""
    b64 = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return (head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BB"\r\n\r\n--BB\r\n'
            "Content-Type: text/plain\r\n\r\nsee attachment\r\n--BB\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n%s--BB--\r\n" % b64)


def test_tag_prefixes_the_subject_once_and_the_header_says_infected():
    """scan.on_virus = "tag": the Subject gets scan.tag_subject in front of its text, once (folded,
    missing, already tagged), the stored file is not rewritten (the edit is made on the way out),
    the rest of the message is delivered byte for byte; over BDAT (exact sizes) and DATA."""
    cases = [  # (header fields sent, (what, by what) in the message as delivered after Received:)
        ("From: bob@remote.example\r\nSubject: invoice\r\n", ("Subject: invoice\r\n", "Subject: [VIRUS] invoice\r\n")),
        ("Subject:\r\n folded invoice\r\nFrom: bob@remote.example\r\n",
         ("Subject:\r\n folded", "Subject: [VIRUS]\r\n folded")),
        ("From: bob@remote.example\r\nTo: alice@example.test\r\n",  # at the end of the header section
         ('boundary="BB"\r\n\r\n', 'boundary="BB"\r\nSubject: [VIRUS]\r\n\r\n')),
        ("Subject: [VIRUS] already\r\n", ("", "")),
    ]

    def body(g):
        d = g.d
        sent = []
        for head, want in cases:
            msg = raw_mail(head, EICAR)
            code, text = send_message(d.port, body=msg)
            assert code == 250, text  # delivered, tagged
            sent.append((QID.search(text).group(1), msg, want))
        code, text = send_message(d.port, body=raw_mail("Subject: clean one\r\n", b"harmless"))
        assert code == 250, text
        clean_qid = QID.search(text).group(1)
        got = {}
        for m in g.delivered(len(cases) + 1):
            qid = re.search(rb"id ([0-9A-Z]+)", m["body"]).group(1).decode()
            got[qid] = m["body"]
        assert set(got) == {q for q, _, _ in sent} | {clean_qid}, got.keys()
        for qid, msg, want in sent:
            b = got[qid]
            hs = scan_headers(b)
            assert len(hs) == 1 and hs[0].endswith(b"; verdict=infected (Eicar-Test-Signature.UNOFFICIAL)"), hs
            # X-Postern-Scan, Postern's Received:, then the message with only the Subject edit.
            rest = b.split(b"\r\n", 1)[1]
            assert rest.startswith(b"Received: from "), rest[:200]
            after_received = re.sub(rb"^Received: [^\r]*\r\n(\t[^\r]*\r\n)*", b"", rest, count=1)
            expected = msg.replace(want[0], want[1], 1) if want[0] else msg
            assert after_received == expected.encode(), after_received[:300]
        assert b"Subject: clean one\r\n" in got[clean_qid] and b"[VIRUS]" not in got[clean_qid]
        assert scan_headers(got[clean_qid])[0].endswith(b"; verdict=clean")
        assert d.queued() == []
    for flags in ((), ("--no-chunking",)):
        def checked(g, flags=flags):
            body(g)
            bdat = any(c["cmd"].upper().startswith("BDAT") for c in g.peer.commands())
            assert bdat == (not flags), (flags, bdat)
        with_gate(checked, scan={"on_virus": "tag"}, peer_flags=flags)


def test_tag_is_kept_in_the_envelope_the_stored_file_untouched_across_a_restart():
    def body(g):
        d = g.d
        msg = raw_mail("From: bob@remote.example\r\nSubject: held one\r\n", EICAR)
        code, text = send_message(d.port, body=msg)
        assert code == 250, text
        qid = QID.search(text).group(1)
        stored = d.message(qid)
        assert b"\r\nSubject: held one\r\n" in stored and b"[VIRUS]" not in stored  # not rewritten
        env = d.envelope(qid)
        assert env["subject_edit"] == "[VIRUS] " and stored[env["subject_at"]:].startswith(b"held one\r\n"), env
        assert d.stop() == 0
        d.sections["queue"]["deliver"] = True
        d.write_config()
        d.start()  # the envelope is read back from the spool
        m = g.delivered()[0]
        assert b"\r\nSubject: [VIRUS] held one\r\n" in m["body"], m["body"][:600]
        assert scan_headers(m["body"])[0].endswith(b"; verdict=infected (Eicar-Test-Signature.UNOFFICIAL)")
    with_gate(body, scan={"on_virus": "tag"},
              extra={"queue": {"min_backoff": "1s", "max_backoff": "2s", "deliver": False}})


def test_tag_subject_empty_leaves_the_subject_and_a_bounce_quotes_the_scan_header():
    """tag_subject = "": the header alone says infected. A message the next hop refuses comes
    back in a DSN whose returned headers hold the X-Postern-Scan line it was sent with."""
    def body(g):
        d = g.d
        g.peer.set_control({"rules": [{"at": "EOD", "reply": "550 5.7.1 not wanted here"}]})
        msg = raw_mail("From: bob@remote.example\r\nSubject: refused one\r\n", EICAR)
        c = Smtp(d.port)
        c.cmd("EHLO client.e2e")
        assert c.cmd("MAIL FROM:<bob@remote.example> RET=HDRS")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(msg + ".\r\n")
        code, text = c.reply()
        assert code == 250, text
        qid = QID.search(text).group(1)
        c.cmd("QUIT")
        c.close()
        d.wait_log("queue_id=%s dsn_queue_id=" % qid, 30)
        dsn_qid = re.search(r"queue_id=%s dsn_queue_id=([0-9A-Z]+)" % qid, d.log_text()).group(1)
        # The DSN goes to bob@remote.example: no route there; it waits in the queue, readable.
        wait_for(lambda: dsn_qid in d.queued(), 15, "the DSN queued")
        text = d.message(dsn_qid).decode(errors="replace")
        part = text[text.index("text/rfc822-headers"):]
        assert "X-Postern-Scan: clamav/" in part and "verdict=infected (Eicar-Test-Signature.UNOFFICIAL)" in part, part[:800]
        assert "Subject: refused one\r\n" in part and "[VIRUS]" not in part, part[:800]
    with_gate(body, scan={"on_virus": "tag", "tag_subject": ""})


def slow_zip(members=400):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(members):
            z.writestr("f%d.txt" % i, os.urandom(2048).hex())
    return buf.getvalue()


def spool_files(d):
    out = []
    for root, _, files in os.walk(os.path.join(d.dir, "queue")):
        out += [os.path.join(root, f) for f in files]
    return sorted(out)


def test_client_leaving_during_the_scan_queues_nothing_and_the_file_goes():
    def body(g):
        d = g.d
        before = spool_files(d)
        for _ in range(3):
            c = Smtp(d.port)
            c.cmd("EHLO client.e2e")
            assert c.cmd("MAIL FROM:<bob@remote.example>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(mail(slow_zip(), name="big.zip") + ".\r\n")
            c.close()  # at once: the scan of this archive takes far longer than the close
        # Each verdict arrived to a session that was gone: dropped, said so.
        wait_for(lambda: d.log_text().count("after the client left: dropped, nothing queued")
                 + d.log_text().count("late scan verdict=") >= 3, 30, "three verdicts dropped")
        assert "accepted client=" not in d.log_text()
        # The unfinished files went back to the spool's pool of free files (free-*), nothing else.
        left = [f for f in spool_files(d) if f not in before]
        assert d.queued() == [] and d.tmp_files() == [], (d.queued(), d.tmp_files())
        assert all(os.path.basename(f).startswith("free-") for f in left), left
        assert g.peer.messages() == []
        # The daemon goes on.
        code, text = send_message(d.port, body=mail(b"fine"))
        assert code == 250, text
        assert len(g.delivered()) == 1
    with_gate(body)


def test_full_scan_queue_answers_451_and_every_250_is_delivered():
    def body(g):
        d = g.d
        n = 6
        big = mail(slow_zip(300), name="big.zip")
        clients = []
        for _ in range(n):
            c = Smtp(d.port, timeout=60)
            c.cmd("EHLO client.e2e")
            assert c.cmd("MAIL FROM:<bob@remote.example>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(big)
            clients.append(c)
        for c in clients:  # the ends of data together: one scans, one waits, the rest find it full
            c.send(".\r\n")
        replies = [c.reply() for c in clients]
        for c in clients:
            c.cmd("QUIT")
            c.close()
        ok = [QID.search(t).group(1) for code, t in replies if code == 250]
        full = [t for code, t in replies if code == 451]
        print("scan queue full: %d accepted, %d answered 451" % (len(ok), len(full)))
        assert len(ok) + len(full) == n, replies
        assert full and all(t.startswith("451 4.7.1") for t in full), replies
        assert ok, replies
        assert metric(d, 'postern_scan_failures_total{reason="queue_full"}') == len(full)
        delivered = g.delivered(len(ok))
        ids = {re.search(rb"id ([0-9A-Z]+)", m["body"]).group(1).decode() for m in delivered}
        assert ids == set(ok), (ids, ok)
        assert d.queued() == []
    with_gate(body, scan={"threads": 1, "queue_size": 1})


def test_no_verdict_within_the_deadline_is_451_and_the_late_verdicts_are_refused():
    """The session's own deadline (scan.timeout + 5 s, on the injected clock): one scan thread busy
    with a slow archive, a second message waiting behind it; the clock jumps past both deadlines:
    both get 451 4.7.1 while libclamav still runs. The second session's next message waits for its
    own verdict: the late verdict of the one before it arrives first and is refused (its ticket),
    the new one's is taken; nothing refused is delivered."""
    def body(g):
        d = g.d
        def start(c):
            c.cmd("EHLO client.e2e")
            assert c.cmd("MAIL FROM:<bob@remote.example>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
        a, b = Smtp(d.port, timeout=180), Smtp(d.port, timeout=180)
        start(a)
        # Seconds of libclamav on one thread (12,000 members: some 10 s on an idle 2-core machine, more
        # under load); the clock jump below must come while it still runs.
        a.send(mail(slow_zip(12000), name="slow.zip") + ".\r\n")
        wait_for(lambda: " scan queued size=" in d.log_text(), 30, "the slow one handed to the scan pool")
        start(b)
        b.send(mail(b"waits in the queue", subject="second") + ".\r\n")
        wait_for(lambda: d.log_text().count(" scan queued size=") >= 2, 30, "both handed to the scan pool")
        d.move_clock(3600)
        for c in (a, b):
            code, text = c.reply()
            assert code == 451 and text.startswith("451 4.7.1"), text
        d.wait_log("no scan verdict within scan.timeout + 5s")
        assert metric(d, 'postern_scan_failures_total{reason="timeout"}') == 2
        # The next message on b: queued behind the two scans still running or waiting.
        assert b.cmd("MAIL FROM:<bob@remote.example>")[0] == 250
        assert b.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert b.cmd("DATA")[0] == 354
        b.send(mail(b"the third", subject="third") + ".\r\n")
        code, text = b.reply()  # after the slow scan and the second one's (refused) verdict
        assert code == 250 and "queued as" in text, text
        qid = QID.search(text).group(1)
        wait_for(lambda: d.log_text().count("late scan verdict=clean ignored") >= 2, 180, "both late verdicts refused")
        for c in (a, b):
            c.cmd("QUIT")
            c.close()
        m = g.delivered(1)
        assert len(m) == 1 and qid.encode() in m[0]["body"] and b"Subject: third" in m[0]["body"], m
        wait_for(lambda: d.queued() == [], 10, "the delivered one removed from the queue")
        d.wait_log("scan verdict=error failure=timeout seconds=")
    with_gate(body, test_clock=True, scan={"threads": 1, "queue_size": 4, "max_files": 100000, "max_scan_size": "200MiB"})
