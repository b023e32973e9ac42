"""End-to-end tests of the inbound SMTP role against the real daemon: swaks and raw sockets."""
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import harness
from harness import Smtp, send_message, swaks, wait_for, make_cert, Daemon, log_tail


def running(sections=None, **kw):
    """These tests look at the queue: nothing is delivered (queue.deliver = false)."""
    return harness.running(sections, deliver=False, **kw)

QID = re.compile(r"queued as ([0-9A-Z]+)")


def test_swaks_plain_delivery_into_spool():
    with running() as d:
        rc, out = swaks(d.port, "--to", "alice@example.test", "--from", "bob@remote.example",
                        "--header", "Subject: plain e2e")
        assert rc == 0, out
        qid = QID.search(out).group(1)
        assert d.queued() == [qid]
        msg = d.message(qid)
        assert msg.startswith(b"Received: from "), msg[:200]
        assert b"with ESMTP id " + qid.encode() in msg
        assert b"Subject: plain e2e\r\n" in msg
        env = d.envelope(qid)
        assert env["from"] == "bob@remote.example"
        assert [r["addr"] for r in env["rcpts"]] == ["alice@example.test"]
        d.wait_log("queue_id=%s accepted" % qid)


def test_swaks_starttls_delivery():
    with running() as d:
        rc, out = swaks(d.port, "--tls", "--to", "alice@example.test", "--from", "bob@remote.example")
        assert rc == 0, out
        qid = QID.search(out).group(1)
        msg = d.message(qid)
        assert b"with ESMTPS id " + qid.encode() in msg
        assert re.search(rb"\(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \(\d+/\d+ bits\)\)", msg), msg[:400]
        assert os.path.exists(os.path.join(d.dir, "certs", "default_mta.crt"))


def test_swaks_pipelining():
    with running() as d:
        rc, out = swaks(d.port, "--pipeline", "--to", "alice@example.test,carol@example.test",
                        "--from", "bob@remote.example")
        assert rc == 0, out
        qid = QID.search(out).group(1)
        assert len(d.envelope(qid)["rcpts"]) == 2


def test_pipelined_transaction_in_one_write():
    with running() as d:
        c = Smtp(d.port)
        assert c.cmd("EHLO a")[0] == 250  # EHLO ends a group (RFC 2920): the client waits
        c.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<x@example.test>\r\n"
               "RCPT TO:<nobody@elsewhere.example>\r\nRCPT TO:<y@example.test>\r\nDATA\r\n")
        codes = [c.reply()[0] for _ in range(5)]
        assert codes == [250, 250, 554, 250, 354], codes
        c.send("Subject: p\r\n\r\nx\r\n.\r\nQUIT\r\n")
        code, text = c.reply()
        assert code == 250, text
        assert c.reply()[0] == 221
        qid = QID.search(text).group(1)
        assert [r["addr"] for r in d.envelope(qid)["rcpts"]] == ["x@example.test", "y@example.test"]


def test_bdat_chunks():
    with running() as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        assert c.cmd("MAIL FROM:<a@remote.example> BODY=8BITMIME")[0] == 250
        assert c.cmd("RCPT TO:<x@example.test>")[0] == 250
        part1 = b"Subject: chunked\r\n\r\n"
        part2 = "caf\u00e9 line\r\n.dot stays\r\n".encode()
        c.send(b"BDAT %d\r\n" % len(part1) + part1)
        assert c.reply()[0] == 250
        c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        code, text = c.reply()
        assert code == 250, text
        qid = QID.search(text).group(1)
        msg = d.message(qid)
        assert msg.endswith(part1 + part2), msg
        assert d.envelope(qid)["body"] == "8BITMIME"
        assert d.envelope(qid)["eight_bit"] is True  # the content itself, seen across the chunks
        # Declared 8BITMIME, ASCII content: eight_bit says what the bytes are.
        assert c.cmd("MAIL FROM:<a@remote.example> BODY=8BITMIME")[0] == 250
        assert c.cmd("RCPT TO:<x@example.test>")[0] == 250
        c.send(b"BDAT 17 LAST\r\nSubject: a\r\n\r\nb\r\n")
        code, text = c.reply()
        assert code == 250, text
        env = d.envelope(QID.search(text).group(1))
        assert env["body"] == "8BITMIME" and env["eight_bit"] is False


def test_size_refusal():
    with running({"smtp": {"max_message_size": 20000}}) as d:
        c = Smtp(d.port)
        code, text = c.cmd("EHLO a")
        assert "SIZE 20000" in text
        code, text = c.cmd("MAIL FROM:<a@remote.example> SIZE=20001")
        assert code == 552 and "5.3.4" in text, text
        # Undeclared size, too much data: refused at the end, nothing queued.
        assert c.cmd("MAIL FROM:<a@remote.example>")[0] == 250
        assert c.cmd("RCPT TO:<x@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(("x" * 998 + "\r\n") * 30 + ".\r\n")
        code, text = c.reply()
        assert code == 552 and "5.3.4" in text, text
        assert c.cmd("NOOP")[0] == 250
        rc, out = swaks(d.port, "--to", "x@example.test", "--body", "y" * 30000)
        assert rc != 0 and "552 5.3.4" in out, out
        assert d.queued() == []


def test_recipient_limit():
    with running({"smtp": {"max_recipients": 3}}) as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<a@remote.example>")
        codes = [c.cmd("RCPT TO:<r%d@example.test>" % i) for i in range(4)]
        assert [x[0] for x in codes] == [250, 250, 250, 452], codes
        assert "4.5.3" in codes[3][1]
        c.close()


def test_relay_refusal():
    with running() as d:
        rc, out = swaks(d.port, "--to", "victim@elsewhere.example", "--from", "spam@remote.example")
        assert rc != 0 and "554 5.7.1" in out, out
        for rcpt in ["victim%elsewhere.example@example.test", "elsewhere.example!victim@example.test",
                     '"victim@elsewhere.example"@example.test', "@example.test:victim@elsewhere.example"]:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            c.cmd("MAIL FROM:<a@remote.example>")
            code, text = c.cmd("RCPT TO:<%s>" % rcpt)
            assert code == 554 and "5.7.1" in text, (rcpt, text)
            c.close()
        # A client in relay.networks may relay anywhere.
        rc, out = swaks(d.port, "--to", "friend@elsewhere.example", source="127.0.0.2")
        assert rc == 0, out
        assert len(d.queued()) == 1


def test_8bitmime_and_smtputf8_envelopes():
    with running() as d:
        c = Smtp(d.port)
        code, text = c.cmd("EHLO a")
        assert "8BITMIME" in text and "SMTPUTF8" in text
        code, text = c.cmd("MAIL FROM:<j\u00fcrgen@m\u00fcnchen.example> SMTPUTF8 BODY=8BITMIME")
        assert code == 250, text
        code, text = c.cmd("RCPT TO:<d\u00f6rte@example.test>")
        assert code == 250, text
        assert c.cmd("DATA")[0] == 354
        c.send("Subject: Gr\u00fc\u00dfe\r\n\r\n\u65e5\u672c\u8a9e\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
        qid = QID.search(text).group(1)
        env = d.envelope(qid)
        assert env["smtputf8"] is True and env["body"] == "8BITMIME"
        assert env["from"] == "j\u00fcrgen@m\u00fcnchen.example"
        assert env["rcpts"][0]["addr"] == "d\u00f6rte@example.test"
        assert b"with UTF8SMTP id" in d.message(qid)
        # Without SMTPUTF8, a non-ASCII address is refused.
        code, text = c.cmd("MAIL FROM:<j\u00fcrgen@example.org>")
        assert code == 553 and "5.6.7" in text, text


def test_starttls_injection_is_refused_by_default():
    with running() as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.send("STARTTLS\r\nRSET\r\n")  # RFC 3207 4.2: STARTTLS must end its group
        code, text = c.reply()
        assert code == 554 and "5.5.0" in text, text
        assert c.sock.recv(100) == b""  # closed, no TLS, RSET never answered
        d.wait_log("improper command pipelining after STARTTLS")


def test_starttls_injection_is_discarded():
    with running({"smtp": {"forbid_unauth_pipelining": False}}) as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.send("STARTTLS\r\nRSET\r\n")  # one write: RSET must never be answered
        code, text = c.reply()
        assert code == 220, text
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.e2e.test")
        assert c.nothing_pending(0.7), "server answered an injected command: %r" % c.buf
        # The session is back to before EHLO.
        code, text = c.cmd("MAIL FROM:<a@remote.example>")
        assert code == 503, text
        code, text = c.cmd("EHLO a")
        assert code == 250 and "STARTTLS" not in text
        code, text = c.cmd("STARTTLS")
        assert code == 554, text


def test_bare_lf_smuggling_never_ends_message():
    smuggle = ("Subject: s\r\n\r\nfirst\n.\r\nMAIL FROM:<evil@remote.example>\r\n"
               "RCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n")
    with running() as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<a@remote.example>")
        c.cmd("RCPT TO:<x@example.test>")
        assert c.cmd("DATA")[0] == 354
        c.send(smuggle + ".\r\n")
        code, text = c.reply()
        assert code == 550 and "5.5.2" in text, text
        assert c.nothing_pending(0.5), "extra replies: %r" % c.buf
        assert d.queued() == []
    with running({"smtp": {"bare_lf": "normalize"}}) as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<a@remote.example>")
        c.cmd("RCPT TO:<x@example.test>")
        c.cmd("DATA")
        c.send(smuggle + ".\r\n")
        code, text = c.reply()
        assert code == 250, text
        assert c.nothing_pending(0.5), "extra replies: %r" % c.buf
        assert len(d.queued()) == 1
        msg = d.message(d.queued()[0])
        assert b"first\r\n.\r\nMAIL FROM:<evil@remote.example>\r\n" in msg


def test_crash_after_250_keeps_every_message():
    with running() as d:
        results = []
        lock = threading.Lock()

        def sender(k):
            for i in range(10):
                body = "Subject: crash %d-%d\r\nX-Marker: m-%d-%d\r\n\r\n%s\r\n" % (k, i, k, i, "z" * 500)
                code, text = send_message(d.port, body=body)
                with lock:
                    results.append((code, text, "m-%d-%d" % (k, i)))

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        acked = {QID.search(t).group(1): m for code, t, m in results if code == 250}
        assert len(acked) == 80, results[:3]
        # A session in the middle of DATA when the daemon dies.
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<a@remote.example>")
        c.cmd("RCPT TO:<x@example.test>")
        c.cmd("DATA")
        c.send("Subject: half\r\n\r\n" + "h" * 100000)
        time.sleep(0.3)
        d.kill9()
        c.close()
        d.start()
        queued = set(d.queued())
        assert set(acked) <= queued, "lost: %s" % (set(acked) - queued)
        assert len(queued) == 80, "unexpected extra messages: %s" % (queued - set(acked))
        for qid, marker in acked.items():
            msg = d.message(qid)
            assert ("X-Marker: %s\r\n" % marker).encode() in msg and msg.endswith(b"z" * 500 + b"\r\n"), qid
        assert d.tmp_files() == []
        d.wait_log("spool recovered dir=%s/queue messages=80 " % d.dir)


def test_sighup_swaps_certificate_without_dropping_session():
    with running() as d:
        a = Smtp(d.port)
        a.cmd("EHLO a")
        a.starttls()
        old_fp = a.peer_fingerprint()
        assert a.cmd("EHLO a")[0] == 250
        assert a.cmd("MAIL FROM:<a@remote.example>")[0] == 250
        # Replace the certificate and reload while session a is mid-transaction.
        cert, key = make_cert(os.path.join(d.dir, "new"), "mx2.e2e.test")
        os.replace(cert, os.path.join(d.dir, "certs", "default_mta.crt"))
        os.replace(key, os.path.join(d.dir, "certs", "default_mta.key"))
        d.signal(signal.SIGHUP)
        d.wait_log("generation=2")
        assert a.cmd("RCPT TO:<x@example.test>")[0] == 250
        assert a.cmd("DATA")[0] == 354
        a.send("Subject: across reload\r\n\r\nok\r\n.\r\n")
        code, text = a.reply()
        assert code == 250, text
        assert a.peer_fingerprint() == old_fp
        b = Smtp(d.port)
        b.cmd("EHLO b")
        b.starttls()
        new_fp = b.peer_fingerprint()
        assert new_fp != old_fp
        assert "mx2.e2e.test" in str(b.sock.getpeercert(binary_form=True))
        # A broken certificate is refused; the good one keeps serving.
        with open(os.path.join(d.dir, "certs", "default_mta.crt"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        d.signal(signal.SIGHUP)
        d.wait_log("refused, keeping generation 2")
        c = Smtp(d.port)
        c.cmd("EHLO c")
        c.starttls()
        assert c.peer_fingerprint() == new_fp
        a.cmd("QUIT")
        b.cmd("QUIT")


def test_sighup_with_bad_config_keeps_running():
    with running() as d:
        with open(d.conf, "a") as f:
            f.write("\n[nonsense]\nkey = 1\n")
        d.signal(signal.SIGHUP)
        d.wait_log("config refused")
        code, _ = send_message(d.port)
        assert code == 250


def test_limits_idle_timeout_and_sessions_per_ip():
    with running({"smtp": {"idle_timeout": "1s", "max_sessions_per_ip": 2}}) as d:
        c = Smtp(d.port)
        code, text = c.reply()
        assert code == 421 and "4.4.2" in text, text
        assert c.sock.recv(100) == b""  # the server closed it
        time.sleep(0.3)                 # and has released its slot
        a, b = Smtp(d.port), Smtp(d.port)
        assert a.banner[0] == 220 and b.banner[0] == 220, (a.banner, b.banner)
        third = Smtp(d.port)
        assert third.banner[0] == 421 and "4.7.0" in third.banner[1], third.banner
        a.close()
        b.close()


def test_line_too_long_and_junk_limit():
    with running({"smtp": {"max_junk_commands": 3}}) as d:
        c = Smtp(d.port)
        code, text = c.cmd("NOOP " + "x" * 5000)
        assert code == 500 and "5.5.2" in text, text
        codes = [c.cmd("WHAT")[0] for _ in range(3)]
        assert codes == [500, 500, 421], codes


def test_sigterm_drains_open_transaction():
    with running() as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<a@remote.example>")
        c.cmd("RCPT TO:<x@example.test>")
        idle = Smtp(d.port)
        idle.cmd("EHLO idle")
        d.signal(signal.SIGTERM)
        code, text = idle.reply()
        assert code == 421 and "4.3.2" in text, text
        assert c.cmd("DATA")[0] == 354
        c.send("Subject: drain\r\n\r\nx\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
        code, text = c.cmd("MAIL FROM:<a@remote.example>")
        assert code == 421, text
        d.proc.wait(10)
        assert d.proc.returncode == 0
        d.proc = None


def test_config_check_names_bad_key():
    d = Daemon({"smtp": {"max_recipents": 3}})
    try:
        import harness
        r = subprocess.run([os.path.join(harness.BIN, "posternd"), "--config", d.conf, "--check"],
                           capture_output=True, text=True)
        assert r.returncode != 0
        assert "smtp.max_recipents" in r.stderr, r.stderr
        d.write_config({})
        r = subprocess.run([os.path.join(harness.BIN, "posternd"), "--config", d.conf, "--check"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        d.cleanup()


# ---- issue 9 ----

def test_improper_pipelining_is_refused():
    with running() as d:
        c = Smtp(d.port)
        c.send("EHLO a\r\nMAIL FROM:<a@remote.example>\r\n")  # MAIL before the EHLO reply
        code, text = c.reply()
        assert code == 554 and "5.5.0" in text, text
        assert c.sock.recv(100) == b""
        d.wait_log('improper command pipelining after EHLO: "MAIL FROM:<a@remote.example>\\x0d\\x0a"')
        c = Smtp(d.port)  # the same client, waiting for each reply: served
        c.cmd("EHLO a")
        c.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
        c.send("Subject: p\r\n\r\nx\r\n")
        assert c.nothing_pending(0.3)
        c.send(".\r\nQUIT\r\n")  # "." and QUIT in one group: RFC 2920's own example
        assert c.reply()[0] == 250 and c.reply()[0] == 221
        assert len(d.queued()) == 1
    with running({"smtp": {"forbid_unauth_pipelining": False}}) as d:
        c = Smtp(d.port)
        c.send("EHLO a\r\nMAIL FROM:<a@remote.example>\r\n")
        assert [c.reply()[0] for _ in range(2)] == [250, 250]
        d.wait_log("improper command pipelining after EHLO")  # still logged


def test_control_characters_and_bad_utf8_are_refused():
    with running() as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        # A backslash in a quoted local part used to skip the control check: CR and NUL reached
        # the envelope, the downstream MAIL/RCPT lines and the DSN's To:.
        for path in (b'"a\\\rb"@remote.example', b'"a\\\x00b"@remote.example', b"a\x01b@remote.example"):
            c.send(b"MAIL FROM:<" + path + b">\r\n")
            code, text = c.reply()
            assert code == 500 and "5.5.2" in text, (path, text)
        assert c.cmd("MAIL FROM:<s@remote.example> SMTPUTF8")[0] == 250
        for rcpt in (b"\xff\xfe@example.test", b"\xc0\xaf@example.test", b"\xed\xa0\x80@example.test"):
            c.send(b"RCPT TO:<" + rcpt + b">\r\n")
            code, text = c.reply()
            assert code == 501 and "5.1.3" in text, (rcpt, text)
        good = "\U0001F4E7d\u00f6rte@example.test"
        c.send(("RCPT TO:<%s>\r\n" % good).encode())
        assert c.reply()[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send("Subject: u\r\n\r\nx\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
        qid = QID.search(text).group(1)
        env = d.envelope(qid)
        assert [r["addr"] for r in env["rcpts"]] == [good]  # byte-exact, no U+FFFD
        assert env["from"] == "s@remote.example"


def _lines(msg):
    return msg.split(b"\r\n")


def test_long_lines_are_folded_or_refused():
    body_line = b"y" * 5000
    header = b"X-Long:" + b"".join(b" w%d" % i for i in range(800))
    msg = header + b"\r\nSubject: long\r\n\r\n" + body_line + b"\r\nend\r\n"
    with running() as d:  # smtp.long_lines = "fold" (the default)
        for bdat in (False, True):
            c = Smtp(d.port)
            c.cmd("EHLO a")
            c.cmd("MAIL FROM:<a@remote.example>")
            c.cmd("RCPT TO:<x@example.test>")
            if bdat:
                c.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
            else:
                assert c.cmd("DATA")[0] == 354
                c.send(msg + b".\r\n")
            code, text = c.reply()
            assert code == 250, text
            qid = QID.search(text).group(1)
            stored = d.message(qid)
            assert max(len(l) for l in _lines(stored)) <= 998, max(len(l) for l in _lines(stored))
            head, _, body = stored.partition(b"\r\n\r\n")
            assert header in head.replace(b"\r\n", b"")  # folded at its spaces: unfolds exactly
            assert body.replace(b"\r\n ", b"") == body_line + b"\r\nend\r\n"
            assert d.envelope(qid)["message_size"] == len(stored)
            d.wait_log("queue_id=%s client=127.0.0.1 long_lines=folded" % qid)
    with running({"smtp": {"long_lines": "reject"}}) as d:
        code, text = send_message(d.port, body="Subject: long\r\n\r\n" + "z" * 5000 + "\r\n")
        assert code == 550 and "5.6.0" in text, text
        assert d.queued() == []
    with running({"smtp": {"long_lines": "accept"}}) as d:
        code, text = send_message(d.port, body="Subject: long\r\n\r\n" + "z" * 5000 + "\r\n")
        assert code == 250, text
        assert b"z" * 5000 + b"\r\n" in d.message(QID.search(text).group(1))


def test_header_section_is_bounded():
    folded = b"X-Huge: start\r\n" + b" x\r\n" * 1000000  # 4 MB, a million folded lines
    with running() as d:
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<a@remote.example>")
        c.cmd("RCPT TO:<x@example.test>")
        assert c.cmd("DATA")[0] == 354
        c.send(folded + b"Subject: huge\r\n\r\nbody\r\n.\r\n")
        code, text = c.reply()
        assert code == 552 and "5.3.4" in text and "header" in text, text
        assert c.cmd("NOOP")[0] == 250  # the session goes on
        assert d.queued() == []
        # The same bytes as a body are fine.
        assert c.cmd("MAIL FROM:<a@remote.example>")[0] == 250
        c.cmd("RCPT TO:<x@example.test>")
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: big body\r\n\r\n" + folded + b".\r\n")
        code, text = c.reply()
        assert code == 250, text
    with running({"smtp": {"max_header_size": 2048}}) as d:
        code, text = send_message(d.port, body="Subject: s\r\nX-A: " + "a" * 3000 + "\r\n\r\nx\r\n")
        assert code == 552 and "5.3.4" in text, text


def test_mail_loop_is_refused():
    def msg(n):
        return "".join("Received: from hop%d.example by mx%d.example; Thu, 1 Jan 2026 00:00:00 +0000\r\n" % (i, i)
                       for i in range(n)) + "Subject: loop\r\n\r\nx\r\n"
    with running() as d:  # smtp.max_hops = 30
        code, text = send_message(d.port, body=msg(30))
        assert code == 554 and "5.4.6" in text, text
        code, text = send_message(d.port, body=msg(29))
        assert code == 250, text
        assert len(d.queued()) == 1
        d.wait_log("reject=hops")
    with running({"smtp": {"max_hops": 3}}) as d:
        code, text = send_message(d.port, body=msg(3))
        assert code == 554 and "5.4.6" in text, text


def test_unknown_recipients_refused_from_the_recipient_map():
    import tempfile
    mapdir = tempfile.mkdtemp(prefix="postern-rmap-")
    path = os.path.join(mapdir, "recipients")
    with open(path, "w") as f:
        f.write("# users of example.test\nalice@example.test\n")
    try:
        with running({"relay": {"recipient_map": path, "recipient_delimiter": "+"}}) as d:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            c.cmd("MAIL FROM:<a@remote.example>")
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            assert c.cmd("RCPT TO:<alice+news@example.test>")[0] == 250
            code, text = c.cmd("RCPT TO:<bob@example.test>")
            assert code == 550 and "5.1.1" in text, text
            assert c.cmd("RCPT TO:<postmaster@example.test>")[0] == 250
            d.wait_log("reject=unknown_recipient to=<bob@example.test>")
            # The map is read again on SIGHUP; a broken one is refused and the old one serves.
            with open(path, "a") as f:
                f.write("bob@example.test\n")
            d.signal(signal.SIGHUP)
            wait_for(lambda: "reload: config applied" in d.log_text(), 10, "the reload")
            c2 = Smtp(d.port)
            c2.cmd("EHLO a")
            c2.cmd("MAIL FROM:<a@remote.example>")
            assert c2.cmd("RCPT TO:<bob@example.test>")[0] == 250
            with open(path, "a") as f:
                f.write("not an address\n")
            d.signal(signal.SIGHUP)
            d.wait_log("config refused, keeping the running one: config key 'relay.recipient_map'")
            c3 = Smtp(d.port)
            c3.cmd("EHLO a")
            c3.cmd("MAIL FROM:<a@remote.example>")
            assert c3.cmd("RCPT TO:<bob@example.test>")[0] == 250
            assert c3.cmd("RCPT TO:<carol@example.test>")[0] == 550
    finally:
        import shutil
        shutil.rmtree(mapdir, ignore_errors=True)


def test_the_recipient_map_is_read_again_when_it_changes_without_sighup():
    import tempfile
    mapdir = tempfile.mkdtemp(prefix="postern-rmap-")
    path = os.path.join(mapdir, "example.test")
    with open(path, "w") as f:
        f.write("alice\n")

    def rcpt(addr):
        c = Smtp(d.port)
        c.cmd("EHLO a")
        c.cmd("MAIL FROM:<a@remote.example>")
        code = c.cmd("RCPT TO:<%s>" % addr)[0]
        c.cmd("QUIT")
        return code
    try:
        with running({"relay": {"recipient_map": mapdir}}) as d:
            assert rcpt("bob@example.test") == 550
            with open(path, "a") as f:
                f.write("bob\n")
            wait_for(lambda: "RECIPIENT_MAP_RELOADED" in d.log_text(), 30, "the map's reload on change")
            assert rcpt("bob@example.test") == 250
            assert "reload requested" not in d.log_text()  # only the map, not the whole config
            with open(path, "a") as f:
                f.write("carol\nnot one address\n")  # a broken entry
            wait_for(lambda: "RECIPIENT_MAP_REFUSED" in d.log_text(), 10, "the refusal")
            assert rcpt("bob@example.test") == 250  # the old map serves
            assert rcpt("carol@example.test") == 550
    finally:
        import shutil
        shutil.rmtree(mapdir, ignore_errors=True)
