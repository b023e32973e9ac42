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
        c.send("EHLO a\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<x@example.test>\r\n"
               "RCPT TO:<nobody@elsewhere.example>\r\nRCPT TO:<y@example.test>\r\nDATA\r\n")
        codes = [c.reply()[0] for _ in range(6)]
        assert codes == [250, 250, 250, 554, 250, 354], codes
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


def test_starttls_injection_is_discarded():
    with running() as d:
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
