"""End-to-end tests of the outbound MTA: swaks -> Postern -> test peers (SMTP and DNS)."""
import os
import re
import signal
import threading
import time

from harness import (Daemon, DnsPeer, Peer, Smtp, cert_fingerprint, free_port, log_tail, make_cert, running,
                     send_message, swaks, wait_for)

QID = re.compile(r"queued as ([0-9A-Z]+)")


def metric(d, name):
    status, text = d.api("GET", "/metrics")
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise AssertionError("no metric " + name)


def relay_conf(peer, tls="may", extra=None):
    conf = {"routes": {"example.test": "[%s]:%d" % (peer.host, peer.port)},
            "outbound": {"tls": tls, "connect_timeout": "2s", "command_timeout": "4s"},
            "queue": {"min_backoff": "1s", "max_backoff": "2s"}}
    for k, v in (extra or {}).items():
        conf.setdefault(k, {}).update(v)
    return conf


def test_relay_with_starttls_on_both_legs_is_byte_identical():
    # The peer must trust Postern's client certificate: make default_mta before Postern starts
    # (posternd keeps an existing one), and give it to the peer as its client CA.
    d = Daemon()
    os.makedirs(os.path.join(d.dir, "certs"))
    mta_cert, _ = make_cert(os.path.join(d.dir, "certs", "default_mta"), "mx.e2e.test")
    peer = Peer(flags=["--client-cert", "--client-ca", mta_cert])
    try:
        d.write_config(relay_conf(peer, "encrypt"))
        d.start()
        data = ("From: bob@remote.example\r\nTo: alice@example.test\r\nSubject: both legs\r\n"
                "Message-ID: <legs@remote.example>\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n"
                "caf\u00e9\r\n").encode()
        path = os.path.join(d.dir, "in.eml")
        with open(path, "wb") as f:
            f.write(data[:-2])  # swaks ends the data with CRLF . CRLF itself
        rc, out = swaks(d.port, "--tls", "--to", "alice@example.test", "--from", "bob@remote.example",
                        "--data", "@" + path)
        assert rc == 0, out
        qid = QID.search(out).group(1)
        wait_for(lambda: len(peer.messages()) == 1, 15, "delivery to the peer")
        m = peer.messages()[0]
        assert m["tls"] is True
        body = m["body"]
        # The scanning gate's line first (the antivirus license is not activated here: no scan).
        gate = b"X-Postern-Scan: not scanned; antivirus license not activated\r\n"
        assert body.startswith(gate), body[:200]
        body = body[len(gate):]
        assert body.startswith(b"Received: from ")
        # Everything after our Received: header is what swaks sent, byte for byte.
        assert body.endswith(data), (body[-300:], data)
        header = body[:len(body) - len(data)]
        assert header.count(b"Received:") == 1 and b"id " + qid.encode() in header
        assert b"(using TLSv1." in header
        assert m["client_cert"] == cert_fingerprint(mta_cert), "the peer did not see Postern's certificate"
        assert "<bob@remote.example>" in m["mail_from"]
        assert not any(c["cmd"].upper().startswith("MAIL") and not c["tls"] for c in peer.commands())
        wait_for(lambda: d.queued() == [], 10, "queue file removal")
        d.wait_log("queue_id=%s to=<alice@example.test> relay=127.0.0.1[127.0.0.1:%d] attempt=1 status=sent"
                   % (qid, peer.port))
        assert d.stop() == 0
    except BaseException:
        print(log_tail(d))
        raise
    finally:
        d.cleanup()
        peer.cleanup()


def test_temporary_failure_is_retried_and_delivered_once():
    peer = Peer(control={"rules": [{"at": "EOD", "reply": "451 4.3.0 try again later", "times": 1}]})
    try:
        with running(relay_conf(peer)) as d:
            code, text = send_message(d.port, body="Subject: retry\r\n\r\nonce\r\n")
            assert code == 250, text
            qid = QID.search(text).group(1)
            d.wait_log("queue_id=%s deferred attempts=1" % qid)
            wait_for(lambda: len(peer.messages()) == 1, 20, "delivery after the retry")
            time.sleep(1.5)
            assert len(peer.messages()) == 1
            wait_for(lambda: d.queued() == [], 10, "queue file removal")
    finally:
        peer.cleanup()


def test_one_of_three_recipients_bounces_with_dsn():
    peer = Peer(control={"rules": [{"at": "RCPT", "match": "bob@", "reply": "550 5.1.1 <bob@example.test>: no such user"}]})
    try:
        with running(relay_conf(peer)) as d:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            assert c.cmd("MAIL FROM:<sender@example.test> ENVID=env42")[0] == 250
            for r in ("alice", "bob", "carol"):
                assert c.cmd("RCPT TO:<%s@example.test> NOTIFY=FAILURE" % r)[0] == 250
            c.cmd("DATA")
            c.send("Subject: three\r\nMessage-ID: <three@example.test>\r\n\r\nhello\r\n.\r\n")
            code, text = c.reply()
            assert code == 250, text
            c.cmd("QUIT")
            wait_for(lambda: len(peer.messages()) == 2, 20, "message and DSN at the peer")
            msgs = peer.messages()
            orig = [m for m in msgs if "sender@example.test" in m["mail_from"]]
            dsn = [m for m in msgs if m["mail_from"].startswith("FROM:<>")]
            assert len(orig) == 1 and len(dsn) == 1, [m["mail_from"] for m in msgs]
            assert sorted(orig[0]["rcpts"]) == ["TO:<alice@example.test> NOTIFY=FAILURE",
                                                "TO:<carol@example.test> NOTIFY=FAILURE"], orig[0]["rcpts"]
            assert dsn[0]["rcpts"] == ["TO:<sender@example.test>"]
            b = dsn[0]["body"].decode()
            assert "multipart/report; report-type=delivery-status" in b
            assert "Final-Recipient: rfc822; bob@example.test" in b
            assert "Action: failed" in b and "Status: 5.1.1" in b
            assert "Diagnostic-Code: smtp; 550 5.1.1" in b
            assert "Original-Envelope-Id: env42" in b
            assert "alice@example.test" not in b.split("message/delivery-status")[1].split("message/rfc822")[0]
            assert "Message-ID: <three@example.test>" in b
            wait_for(lambda: d.queued() == [], 10, "queue empty")
    finally:
        peer.cleanup()


def test_notify_success_to_a_next_hop_without_dsn_gets_a_relayed_notice():
    # RFC 3461 4.2: the next hop does not offer DSN, so NOTIFY=SUCCESS cannot be passed on; the
    # success notice ("Action: relayed") is Postern's to send, once, and only for the recipient
    # that asked for it.
    peer = Peer(flags=["--no-dsn"])
    try:
        with running(relay_conf(peer)) as d:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            assert c.cmd("MAIL FROM:<sender@example.test> ENVID=env77")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alice+2Bx@example.test")[0] == 250
            assert c.cmd("RCPT TO:<carol@example.test>")[0] == 250
            c.cmd("DATA")
            c.send("Subject: relayed\r\nMessage-ID: <relayed@example.test>\r\n\r\nthe body text\r\n.\r\n")
            code, text = c.reply()
            assert code == 250, text
            qid = QID.search(text).group(1)
            c.cmd("QUIT")
            wait_for(lambda: len(peer.messages()) == 2, 20, "message and relayed notice at the peer")
            msgs = peer.messages()
            orig = [m for m in msgs if "sender@example.test" in m["mail_from"]]
            dsn = [m for m in msgs if m["mail_from"].startswith("FROM:<>")]
            assert len(orig) == 1 and len(dsn) == 1, [m["mail_from"] for m in msgs]
            # Without DSN at the peer, no NOTIFY/ORCPT went downstream.
            assert sorted(orig[0]["rcpts"]) == ["TO:<alice@example.test>", "TO:<carol@example.test>"], orig[0]["rcpts"]
            assert dsn[0]["rcpts"] == ["TO:<sender@example.test>"]
            b = dsn[0]["body"].decode()
            assert "Subject: Successful Mail Delivery Report" in b
            report = b.split("message/delivery-status")[1].split("text/rfc822-headers")[0]
            assert "Final-Recipient: rfc822; alice@example.test" in report
            assert "Original-Recipient: rfc822; Alice+x@example.test" in report
            assert "Action: relayed" in report and "Status: 2.0.0" in report
            assert "Remote-MTA: dns; 127.0.0.1[127.0.0.1:%d]" % peer.port in report
            assert "carol@example.test" not in report
            assert "Original-Envelope-Id: env77" in report
            assert "Message-ID: <relayed@example.test>" in b and "the body text" not in b
            d.wait_log("queue_id=%s dsn_queue_id=" % qid)
            wait_for(lambda: d.queued() == [], 10, "queue empty")
            time.sleep(1.5)
            assert len(peer.messages()) == 2  # once
    finally:
        peer.cleanup()


def test_recipient_verification_asks_the_next_hop_at_rcpt():
    # relay.verify_recipients: an unknown user is refused at SMTP time with the downstream's own
    # words (no backscatter later); the probe sends MAIL, RCPT and RSET, never DATA; answers are
    # cached; an unreachable next hop gets relay.verify_unreachable (450 4.1.1, or accept).
    peer = Peer(control={"rules": [{"at": "RCPT", "match": "bob@", "reply": "550 5.1.1 <bob@example.test>: no such user here"}]})
    dead = free_port()
    conf = relay_conf(peer, extra={"relay": {"domains": ["example.test", "down.test"], "verify_recipients": True,
                                             "verify_timeout": "3s"}})
    conf["routes"]["down.test"] = "[127.0.0.1]:%d" % dead
    try:
        with running(conf) as d:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            assert c.cmd("MAIL FROM:<sender@remote.example>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            code, text = c.cmd("RCPT TO:<bob@example.test>")
            assert code == 550 and "5.1.1" in text and "no such user here" in text, text
            code, text = c.cmd("RCPT TO:<carol@down.test>")
            assert code == 450 and "4.1.1" in text, text
            c.cmd("DATA")
            c.send("Subject: verified\r\n\r\nbody\r\n.\r\n")
            code, text = c.reply()
            assert code == 250, text
            c.cmd("QUIT")
            wait_for(lambda: len(peer.messages()) == 1, 20, "the message at the peer")
            assert peer.messages()[0]["rcpts"] == ["TO:<alice@example.test>"]
            cmds = [x["cmd"] for x in peer.commands()]
            assert "MAIL FROM:<>" in cmds, cmds
            probe_at = cmds.index("MAIL FROM:<>")
            # The probe: MAIL FROM:<>, RCPT, RSET, and no DATA in between.
            assert cmds[probe_at + 1] == "RCPT TO:<alice@example.test>" and cmds[probe_at + 2] == "RSET", cmds
            probes = metric(d, "postern_verify_probes_total")
            # Cached: asking again does not reach the peer; pipelined RCPTs keep their order.
            c = Smtp(d.port)
            c.cmd("EHLO a")
            c.send("MAIL FROM:<sender@remote.example>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n")
            assert c.reply()[0] == 250
            assert c.reply()[0] == 550
            assert c.reply()[0] == 250
            c.cmd("QUIT")
            assert metric(d, "postern_verify_probes_total") == probes
            assert metric(d, "postern_verify_cached_total") >= 2
            # The answer when the next hop cannot be asked is configurable.
            conf["relay"]["verify_unreachable"] = "accept"
            d.write_config(conf)
            d.signal(signal.SIGHUP)
            wait_for(lambda: "reload: config applied" in d.log_text(), 10, "the reload")
            c = Smtp(d.port)
            c.cmd("EHLO a")
            c.cmd("MAIL FROM:<sender@remote.example>")
            assert c.cmd("RCPT TO:<dave@down.test>")[0] == 250
            c.cmd("QUIT")
    finally:
        peer.cleanup()


def test_null_sender_failure_never_bounces():
    peer = Peer(control={"rules": [{"at": "RCPT", "reply": "550 5.1.1 no such user"}]})
    try:
        with running(relay_conf(peer)) as d:
            code, text = send_message(d.port, sender="", body="Subject: bounce of a bounce\r\n\r\nx\r\n")
            assert code == 250, text
            qid = QID.search(text).group(1)
            d.wait_log("queue_id=%s no DSN: null sender" % qid)
            wait_for(lambda: d.queued() == [], 10, "queue empty")
            time.sleep(1)
            assert peer.messages() == []
            assert d.queued() == []
    finally:
        peer.cleanup()


def check_encrypt_defers(peer_flags=(), control=None):
    peer = Peer(flags=list(peer_flags), control=control)
    try:
        with running(relay_conf(peer, "encrypt")) as d:
            code, text = send_message(d.port, body="Subject: secret\r\n\r\nnever in clear\r\n")
            assert code == 250, text
            qid = QID.search(text).group(1)
            d.wait_log("queue_id=%s deferred attempts=1" % qid, 20)
            assert d.queued() == [qid]
            assert peer.messages() == []
            cmds = [c["cmd"] for c in peer.commands()]
            assert not any(c.upper().startswith(("MAIL", "RCPT", "DATA", "BDAT")) for c in cmds), cmds
            return d.log_text()
    finally:
        peer.cleanup()


def test_encrypt_policy_without_starttls_defers():
    log = check_encrypt_defers(["--no-starttls"])
    assert "does not offer STARTTLS" in log


def test_encrypt_policy_with_failing_handshake_defers():
    log = check_encrypt_defers(control={"starttls": "garbage"})
    # The garbage either arrives with the 220 (and is discarded as pre-TLS bytes, then the peer
    # hangs up on our ClientHello) or after it (and fails the handshake): deferred either way.
    assert ("TLS with" in log and "failed" in log) or "closed" in log, log[-2000:]


def test_encrypt_policy_with_injected_reply_defers():
    check_encrypt_defers(control={"starttls": "inject"})


def test_mx_lookup_prefers_lower_preference_then_falls_back():
    mx1 = Peer(host="127.0.0.10", tls=False)
    mx2 = Peer(host="127.0.0.11", port=mx1.port, tls=False)
    dns = DnsPeer({"mx.example": {"MX": [[20, "mx2.mx.example"], [10, "mx1.mx.example"]]},
                   "mx1.mx.example": {"A": ["127.0.0.10"]},
                   "mx2.mx.example": {"A": ["127.0.0.11"]},
                   "nullmx.example": {"MX": [[0, "."]]},
                   "broken.example": "SERVFAIL"})
    try:
        conf = {"routes": {"*": None},
                "outbound": {"dns_servers": ["127.0.0.1:%d" % dns.port], "mx_port": mx1.port,
                             "connect_timeout": "2s"},
                "relay": {"domains": ["mx.example", "nullmx.example", "broken.example"]},
                "queue": {"min_backoff": "1s", "max_backoff": "2s"}}
        with running(conf) as d:
            assert send_message(d.port, rcpt="a@mx.example")[0] == 250
            wait_for(lambda: len(mx1.messages()) == 1, 15, "delivery to the preferred MX")
            assert mx2.messages() == []
            mx1.stop()
            assert send_message(d.port, rcpt="b@mx.example")[0] == 250
            wait_for(lambda: len(mx2.messages()) == 1, 15, "fallback to the next MX")
            code, text = send_message(d.port, rcpt="c@nullmx.example", sender="")
            qid = QID.search(text).group(1)
            d.wait_log("queue_id=%s to=<c@nullmx.example> relay=none attempt=1 status=bounced dsn=5.1.10" % qid)
            code, text = send_message(d.port, rcpt="d@broken.example")
            qid = QID.search(text).group(1)
            d.wait_log("queue_id=%s to=<d@broken.example> relay=none attempt=1 status=deferred dsn=4.4.3" % qid)
    finally:
        mx1.cleanup()
        mx2.cleanup()
        dns.cleanup()


def test_kill9_during_delivery_loses_nothing():
    peer = Peer(tls=False, control={"rules": [{"at": "EOD", "sleep": 0.05}]})
    try:
        with running(relay_conf(peer)) as d:
            markers = []
            lock = threading.Lock()

            def sender(k):
                for i in range(8):
                    m = "k9-%d-%d" % (k, i)
                    code, _ = send_message(d.port, body="Subject: %s\r\nX-Marker: %s\r\n\r\nx\r\n" % (m, m))
                    assert code == 250
                    with lock:
                        markers.append(m)

            threads = [threading.Thread(target=sender, args=(k,)) for k in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(markers) == 40
            wait_for(lambda: len(peer.messages()) >= 3, 15, "some deliveries")
            d.kill9()
            d.start()
            def got():
                seen = set()
                for m in peer.messages():
                    mm = re.search(rb"X-Marker: (k9-\d+-\d+)", m["body"])
                    if mm:
                        seen.add(mm.group(1).decode())
                return seen
            wait_for(lambda: got() >= set(markers), 40, "every message delivered after the restart")
            wait_for(lambda: d.queued() == [], 15, "queue empty")
    finally:
        peer.cleanup()


def test_connection_is_reused_for_the_next_message():
    peer = Peer(tls=False)
    try:
        with running(relay_conf(peer, extra={"outbound": {"connection_cache_time": "5s"}})) as d:
            for i in range(3):
                assert send_message(d.port, body="Subject: reuse %d\r\n\r\nx\r\n" % i)[0] == 250
                wait_for(lambda: len(peer.messages()) == i + 1, 10, "delivery %d" % i)
            cmds = [c["cmd"].split(" ")[0].upper() for c in peer.commands()]
            assert cmds.count("MAIL") == 3, cmds
            assert cmds.count("EHLO") == 1, "expected one connection for three messages: %s" % cmds
            assert "QUIT" not in cmds  # still cached
            wait_for(lambda: "QUIT" in [c["cmd"].upper() for c in peer.commands()], 10, "QUIT after the cache time")
            # The scheduler forgets the quiet destination once its cached connection is gone, and
            # one after the other, the three messages used one queue file, recycled (two when a
            # retirement rides on a commit that came after the next message was opened: a loaded
            # machine; never three).
            wait_for(lambda: metric(d, "postern_queue_destinations") == 0, 10, "destination forgotten")
            free = metric(d, "postern_spool_free_files")
            assert free in (1, 2), free
            assert d.queued() == [] and len(d.free_files()) == free
    finally:
        peer.cleanup()


def test_delay_warning_is_sent_once_for_recipients_still_pending():
    peer = Peer(control={"rules": [{"at": "RCPT", "match": "slow", "reply": "451 4.2.1 mailbox busy"}]})
    try:
        conf = relay_conf(peer, extra={"queue": {"delay_warning": "2s"}})
        with running(conf) as d:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            assert c.cmd("MAIL FROM:<sender@example.test> ENVID=late7")[0] == 250
            assert c.cmd("RCPT TO:<slow1@example.test>")[0] == 250              # NOTIFY absent: warned
            assert c.cmd("RCPT TO:<slow2@example.test> NOTIFY=FAILURE")[0] == 250  # asked for failures only
            assert c.cmd("RCPT TO:<quick@example.test>")[0] == 250              # delivered at once
            c.cmd("DATA")
            c.send("Subject: late\r\nMessage-ID: <late@example.test>\r\n\r\nsecret body text\r\n.\r\n")
            code, text = c.reply()
            assert code == 250, text
            qid = QID.search(text).group(1)
            c.cmd("QUIT")
            dsns = lambda: [m for m in peer.messages() if m["mail_from"].startswith("FROM:<>")]
            wait_for(lambda: len(dsns()) == 1, 20, "the delay warning")
            b = dsns()[0]["body"].decode()
            assert "Subject: Delayed Mail (still being retried)" in b
            report = b.split("message/delivery-status")[1].split("text/rfc822-headers")[0]
            assert "Final-Recipient: rfc822; slow1@example.test" in report
            assert "slow2@" not in report and "quick@" not in report
            assert "Action: delayed" in report and "Status: 4.2.1" in report
            assert "Will-Retry-Until: " in report and "Original-Envelope-Id: late7" in report
            assert "Message-ID: <late@example.test>" in b and "secret body text" not in b
            # Still queued and retried, and never warned twice (the flag is in the envelope).
            d.wait_log("queue_id=%s deferred attempts=4" % qid, timeout=30)
            assert len(dsns()) == 1
            assert qid in d.queued() and d.envelope(qid)["delay_warned"] is True
            assert [r["state"] for r in d.envelope(qid)["rcpts"]] == [0, 0, 1]
    finally:
        peer.cleanup()


def test_eight_bit_message_is_converted_for_a_server_without_8bitmime():
    peer = Peer(tls=False, flags=["--no-8bitmime"])
    try:
        with running(relay_conf(peer)) as d:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            assert c.cmd("MAIL FROM:<sender@example.test> BODY=8BITMIME")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
            c.cmd("DATA")
            c.send("Subject: accents\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\n\r\ncaf\u00e9 = cr\u00e8me\r\n.\r\n")
            code, text = c.reply()
            assert code == 250, text
            qid = QID.search(text).group(1)
            # And one declared 8BITMIME that is plain ASCII: sent as it is, no conversion.
            assert c.cmd("MAIL FROM:<sender@example.test> BODY=8BITMIME")[0] == 250
            assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
            c.cmd("DATA")
            c.send("Subject: ascii\r\n\r\nplain\r\n.\r\n")
            assert c.reply()[0] == 250
            c.cmd("QUIT")
            wait_for(lambda: len(peer.messages()) == 2, 20, "both deliveries")
            by_subject = {b"accents" if b"accents" in m["body"] else b"ascii": m for m in peer.messages()}
            m = by_subject[b"accents"]
            assert "BODY=" not in m["mail_from"], m["mail_from"]
            body = m["body"]
            assert all(b < 0x80 for b in body), body
            assert b"Content-Transfer-Encoding: quoted-printable\r\n" in body
            assert b"Content-Transfer-Encoding: 8bit" not in body
            assert body.endswith(b"\r\n\r\ncaf=C3=A9 =3D cr=C3=A8me\r\n"), body
            assert by_subject[b"ascii"]["body"].endswith(b"Subject: ascii\r\n\r\nplain\r\n")
            d.wait_log("queue_id=%s relay=127.0.0.1[127.0.0.1:%d] no 8BITMIME: converted to 7-bit MIME" % (qid, peer.port))
            wait_for(lambda: d.queued() == [], 10, "queue empty")
    finally:
        peer.cleanup()


def test_pipelined_data_without_chunking():
    # PIPELINING without CHUNKING: DATA goes in the group with MAIL and RCPT; a refused RCPT
    # still lets the others through, and when every RCPT is refused no body is sent.
    peer = Peer(tls=False, flags=["--no-chunking"],
                control={"rules": [{"at": "RCPT", "match": "bob@", "reply": "550 5.1.1 no such user"}]})
    try:
        with running(relay_conf(peer)) as d:
            c = Smtp(d.port)
            c.cmd("EHLO a")
            assert c.cmd("MAIL FROM:<>")[0] == 250
            for r in ("alice", "bob"):
                assert c.cmd("RCPT TO:<%s@example.test>" % r)[0] == 250
            c.cmd("DATA")
            c.send("Subject: two\r\n\r\n..dot\r\n.\r\n")  # dot-stuffed: the line is ".dot"
            assert c.reply()[0] == 250
            assert c.cmd("MAIL FROM:<>")[0] == 250
            assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
            c.cmd("DATA")
            c.send("Subject: only bob\r\n\r\nx\r\n.\r\n")
            assert c.reply()[0] == 250
            c.cmd("QUIT")
            wait_for(lambda: d.queued() == [], 15, "both messages done")
            msgs = peer.messages()
            assert len(msgs) == 1 and msgs[0]["rcpts"] == ["TO:<alice@example.test>"], msgs
            assert msgs[0]["body"].endswith(b"Subject: two\r\n\r\n.dot\r\n"), msgs[0]["body"]
            cmds = [x["cmd"].split(" ")[0].upper() for x in peer.commands()]
            assert "BDAT" not in cmds and cmds.count("DATA") == 2, cmds
    finally:
        peer.cleanup()


def test_test_clock_moves_the_queue_to_its_delay_warning_and_its_bounce():
    """posternd --test-clock: a message deferred by the next hop gets its delay warning and then
    its 4.4.7 bounce when the clock is moved, in seconds of real time, never hours."""
    import email.utils
    peer = Peer(tls=False, control={"rules": [{"at": "RCPT", "match": "alice@", "reply": "451 4.2.0 mailbox busy"}]})
    try:
        conf = relay_conf(peer, extra={"queue": {"min_backoff": "1h", "max_backoff": "4h", "lifetime": "2d",
                                                 "delay_warning": "3h"}})
        with running(conf, test_clock=True) as d:
            t0 = time.time()
            code, text = send_message(d.port, sender="sender@example.test",
                                      body="Subject: stuck\r\nMessage-ID: <stuck@example.test>\r\n\r\nx\r\n")
            assert code == 250, text
            qid = QID.search(text).group(1)
            d.wait_log("queue_id=%s deferred attempts=1 next_retry_in=3600s" % qid)
            dsns = lambda: [m["body"].decode() for m in peer.messages() if m["mail_from"].startswith("FROM:<>")]
            assert dsns() == [] and d.queued() == [qid]
            # Three hours later: the retry is due, fails again, and the sender is warned once.
            d.move_clock(3 * 3600 + 60)
            d.wait_log("test clock: offset=10860s")
            d.wait_log("queue_id=%s deferred attempts=2" % qid, 10)
            wait_for(lambda: len(dsns()) == 1, 15, "the delay warning")
            assert "Action: delayed" in dsns()[0] and "Status: 4.2.0" in dsns()[0]
            assert d.envelope(qid)["delay_warned"] is True
            # Past queue.lifetime: the next try is the last one, and the message bounces (4.4.7).
            d.move_clock(2 * 86400 + 3600)
            wait_for(lambda: len(dsns()) == 2, 20, "the bounce after the lifetime")
            b = dsns()[1]
            assert "Subject: Undelivered Mail Returned to Sender" in b
            report = b.split("message/delivery-status")[1].split("message/rfc822")[0]
            assert "Final-Recipient: rfc822; alice@example.test" in report
            assert "Action: failed" in report and "Status: 4.4.7" in report, report
            assert "delivery time expired after 3 attempts" in report
            assert "Message-ID: <stuck@example.test>" in b
            # The DSN is dated by the daemon's (moved) clock.
            date = email.utils.parsedate_to_datetime(re.search(r"^Date: (.*)\r$", b, re.M).group(1)).timestamp()
            assert abs(date - (time.time() + 2 * 86400 + 3600)) < 120, date
            wait_for(lambda: qid not in d.queued(), 10, "the original removed")
            assert not any("alice@" in r for m in peer.messages() for r in m["rcpts"])
            assert time.time() - t0 < 60  # the two days took seconds
    finally:
        peer.cleanup()


def test_a_crash_mid_job_does_not_resend_what_the_next_hop_took():
    """Two messages in one job; the next hop takes the first, then stalls on the second's data;
    posternd is killed then. The first was recorded (and retired) as soon as it was accepted, so
    the restart sends only the second. (Before, results were kept until the whole job ended.)"""
    import signal
    peer = Peer(tls=False, control={"rules": [{"at": "EOD", "match": "second@", "sleep": 6, "times": 1}]})
    try:
        with running(relay_conf(peer, extra={"outbound": {"command_timeout": "30s"}}), deliver=False) as d:
            q1 = QID.search(send_message(d.port, sender="first@remote.example")[1]).group(1)
            q2 = QID.search(send_message(d.port, sender="second@remote.example")[1]).group(1)
            assert d.queued() == sorted([q1, q2])
            d.deliver = True  # both go in one job
            d.write_config()
            d.signal(signal.SIGHUP)
            firsts = lambda: [m for m in peer.messages() if "first@" in m["mail_from"]]
            wait_for(lambda: len(firsts()) == 1, 15, "the first message at the next hop")
            wait_for(lambda: q1 not in d.queued(), 3, "the first retired while the job goes on")
            assert q2 in d.queued()
            d.kill9()  # the peer is still sleeping on the second message's data
            d.start()
            wait_for(lambda: d.queued() == [], 30, "the second delivered after the restart")
            assert len(firsts()) == 1, "the first message was sent again"
            assert any("second@" in m["mail_from"] for m in peer.messages())
    finally:
        peer.cleanup()


def test_queue_listing_is_paged_in_the_api_and_posternctl():
    import json as _json
    with running({}, deliver=False) as d:
        ids = []
        c = Smtp(d.port)
        c.cmd("EHLO a")
        for i in range(25):
            assert c.cmd("MAIL FROM:<s%d@remote.example>" % i)[0] == 250
            assert c.cmd("RCPT TO:<r%d@example.test>" % i)[0] == 250
            c.cmd("DATA")
            c.send("Subject: %d\r\n\r\nx\r\n.\r\n" % i)
            code, text = c.reply()
            assert code == 250, text
            ids.append(QID.search(text).group(1))
        c.cmd("QUIT")
        assert ids == sorted(ids)  # queue IDs follow arrival
        status, page = d.api("GET", "/api/v1/queue?limit=10")
        assert status == 200, page
        assert page["total"] == 25 and page["limit"] == 10
        assert [m["queue_id"] for m in page["messages"]] == ids[:10]
        assert page["next_after"] == ids[9]
        assert page["messages"][3]["from"] == "s3@remote.example"
        assert page["messages"][3]["recipients"][0]["address"] == "r3@example.test"
        status, page = d.api("GET", "/api/v1/queue?limit=10&after=" + ids[19])
        assert [m["queue_id"] for m in page["messages"]] == ids[20:] and page["next_after"] is None
        status, page = d.api("GET", "/api/v1/queue")  # the default page (100) holds them all
        assert len(page["messages"]) == 25 and page["next_after"] is None
        for bad in ("limit=0", "limit=1001", "limit=x", "after=../x"):
            status, body = d.api("GET", "/api/v1/queue?" + bad)
            assert status == 400, (bad, status, body)
        rc, out, err = d.ctl("queue", "list", "--limit", "10")
        assert rc == 0, err
        assert [l.split()[0] for l in out.splitlines()[1:]] == ids[:10], out
        assert "25 messages in the queue; next page: posternctl queue list --after %s --limit 10" % ids[9] in err
        rc, out, err = d.ctl("queue", "list", "--limit", "10", "--after", ids[9])
        assert [l.split()[0] for l in out.splitlines()[1:]] == ids[10:20], out
        rc, out, err = d.ctl("queue", "list", "--limit", "7", "--all")
        assert rc == 0 and [l.split()[0] for l in out.splitlines()[1:]] == ids, out
        rc, out, err = d.ctl("--json", "queue", "list", "--limit", "7", "--all")
        j = _json.loads(out)
        assert j["total"] == 25 and [m["queue_id"] for m in j["messages"]] == ids
        rc, out, err = d.ctl("queue", "list", "--limit", "0")
        assert rc != 0


def test_per_file_sync_mode_queues_and_relays():
    peer = Peer(tls=False)
    try:
        with running(relay_conf(peer, extra={"queue": {"sync": "file"}})) as d:
            code, text = send_message(d.port, body="Subject: per file\r\n\r\nx\r\n")
            assert code == 250, text
            wait_for(lambda: len(peer.messages()) == 1, 15, "delivery")
            wait_for(lambda: d.queued() == [], 10, "queue empty")
            d.wait_log("mode=file")  # the commit's debug line names how it synced
    finally:
        peer.cleanup()
