"""Interoperability with an MTA none of us wrote: real Postfix instances on both sides of Postern.

    swaks -> Postfix (upstream, STARTTLS required) -> Postern -> Postfix (downstream, STARTTLS,
    asks for a client certificate, delivers to maildirs)

The Postfix instances are private (scripts/postfix-instance: own config, queue and log under a
temporary directory, loopback only) and stopped at the end of each test.
"""
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile

from harness import free_port, log_tail, make_cert, running, swaks, wait_for

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QID = re.compile(r"queued as ([0-9A-Z]+)")


class Postfix:
    def __init__(self, *main_cf):
        self.dir = tempfile.mkdtemp(prefix="postern-pfx-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.lines = list(main_cf)

    def start(self):
        assert os.geteuid() == 0, "the interop tests start private Postfix instances, which needs root"
        r = subprocess.run([os.path.join(ROOT, "scripts", "postfix-instance"), self.dir, str(self.port), "start"]
                           + self.lines, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr + self.maillog()
        return self

    def maillog(self):
        try:
            with open(os.path.join(self.dir, "maillog"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return "(no maillog)"

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts", "postfix-instance"), self.dir, str(self.port), "stop"],
                       capture_output=True, timeout=90)
        shutil.rmtree(self.dir, ignore_errors=True)


def downstream():
    """A Postfix that takes mail for example.test and remote.example into maildirs."""
    pf = Postfix()
    cert, key = make_cert(os.path.join(pf.dir, "smtpd"), "downstream.e2e.test")
    pw = pwd.getpwnam("postfix")
    mail = os.path.join(pf.dir, "mail")
    os.makedirs(mail)
    os.chown(mail, pw.pw_uid, pw.pw_gid)
    with open(os.path.join(pf.dir, "vmailbox"), "w") as f:
        for addr in ("alice@example.test", "carol@example.test", "sender@remote.example"):
            user, domain = addr.split("@")
            f.write("%s %s/%s/\n" % (addr, domain, user))
    pf.lines = [
        "relay_domains =",
        "virtual_mailbox_domains = example.test remote.example",
        "virtual_mailbox_maps = texthash:%s/vmailbox" % pf.dir,
        "virtual_mailbox_base = " + mail,
        "virtual_uid_maps = static:%d" % pw.pw_uid,
        "virtual_gid_maps = static:%d" % pw.pw_gid,
        "smtpd_tls_security_level = may",
        "smtpd_tls_cert_file = " + cert,
        "smtpd_tls_key_file = " + key,
        "smtpd_tls_ask_ccert = yes",
        "smtpd_tls_received_header = yes",
        "smtpd_tls_loglevel = 1",
        "myhostname = downstream.e2e.test",
    ]
    return pf.start()


def postfix_processes():
    r = subprocess.run(["ps", "-o", "pid,sid,stat,wchan:20,etime,args", "-C",
                        "master,smtpd,smtp,qmgr,postlogd,tlsmgr,cleanup,virtual,pickup"],
                       capture_output=True, text=True, timeout=10)
    return "\n---- Postfix processes ----\n" + r.stdout


def maildir(pf, addr):
    user, domain = addr.split("@")
    files = sorted(glob.glob(os.path.join(pf.dir, "mail", domain, user, "new", "*")))
    out = []
    for p in files:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def routes_to(pf):
    return {"example.test": "[127.0.0.1]:%d" % pf.port, "remote.example": "[127.0.0.1]:%d" % pf.port}


def test_postfix_to_postern_to_postfix_with_starttls_on_both_legs():
    down = downstream()
    up = None
    try:
        conf = {"routes": routes_to(down), "outbound": {"tls": "encrypt"}}
        with running(conf) as d:
            up = Postfix("relay_transport = smtp:[127.0.0.1]:%d" % d.port,
                         "default_transport = smtp:[127.0.0.1]:%d" % d.port,
                         "smtp_tls_security_level = encrypt", "myhostname = upstream.e2e.test").start()
            body = ("Subject: interop\r\nMessage-ID: <interop@remote.example>\r\n\r\n"
                    "caf\u00e9 cr\u00e8me\r\n.a line starting with a dot\r\nend\r\n")
            rc, out = swaks(up.port, "--to", "alice@example.test", "--from", "sender@remote.example",
                            "--data", body[:-2])  # swaks ends the data with CRLF . CRLF itself
            assert rc == 0, out
            wait_for(lambda: maildir(down, "alice@example.test"), 30,
                     lambda: "delivery into the downstream Postfix's maildir\n" + log_tail(d)
                     + up.maillog() + down.maillog() + postfix_processes())
            msg = maildir(down, "alice@example.test")[0].replace(b"\n", b"\r\n")
            head, _, got = msg.partition(b"\r\n\r\n")
            assert got == "caf\u00e9 cr\u00e8me\r\n.a line starting with a dot\r\nend\r\n".encode(), got
            received = [h for h in re.split(rb"\r\n(?=\S)", head) if h.startswith(b"Received:")]
            # Newest first: downstream Postfix (from Postern, over TLS), Postern (from the upstream
            # Postfix, over TLS), the upstream Postfix (from swaks).
            assert len(received) == 3, received
            assert b"from mx.e2e.test" in received[0] and b"(using TLSv1." in received[0], received[0]
            assert b"by mx.e2e.test (Postern)" in received[1] and b"TLSv1." in received[1], received[1]
            assert b"from upstream.e2e.test" in received[1]
            qid = re.search(rb"id ([0-9A-Z]+)", received[1]).group(1).decode()
            d.wait_log("queue_id=%s to=<alice@example.test> relay=127.0.0.1[127.0.0.1:%d] attempt=1 status=sent"
                       % (qid, down.port), timeout=15)
            # Postfix saw Postern's client certificate (the outbound role's) on that leg.
            assert b"(Client CN " in received[0] and b"(not verified)" in received[0], received[0]
            wait_for(lambda: d.queued() == [], 10, "Postern's queue empty")
    finally:
        if up:
            up.stop()
        down.stop()


def test_rejection_by_postfix_bounces_only_that_recipient_with_a_dsn():
    down = downstream()
    try:
        with running({"routes": routes_to(down)}) as d:
            rc, out = swaks(d.port, "--to", "alice@example.test,nobody@example.test,carol@example.test",
                            "--from", "sender@remote.example", "--header", "Subject: three")
            assert rc == 0, out
            qid = QID.search(out).group(1)
            for who in ("alice@example.test", "carol@example.test"):
                wait_for(lambda: maildir(down, who), 30,
                         lambda: "delivery to " + who + "\n" + log_tail(d) + down.maillog() + postfix_processes())
            wait_for(lambda: maildir(down, "sender@remote.example"), 30,
                     lambda: "the DSN\n" + log_tail(d) + down.maillog() + postfix_processes())
            dsn = maildir(down, "sender@remote.example")[0].decode(errors="replace")
            assert "Return-Path: <>" in dsn
            assert "report-type=delivery-status" in dsn
            report = dsn.split("message/delivery-status")[1]
            assert "Final-Recipient: rfc822; nobody@example.test" in report
            assert "Action: failed" in report and "Status: 5.1.1" in report
            assert "Remote-MTA: dns; 127.0.0.1" in report
            assert "alice@" not in report.split("message/rfc822")[0]
            d.wait_log("queue_id=%s to=<nobody@example.test>" % qid)
            assert len(maildir(down, "alice@example.test")) == 1
            wait_for(lambda: d.queued() == [], 10, "Postern's queue empty")
    finally:
        down.stop()
