"""End-to-end tests of the end-user quarantine console (admin/euq_console.h) in a real headless
Chromium (tests/e2e/browser.py): the scanning gate quarantines EICAR for alice; alice asks for a
sign-in link, which Postern mails through its own outbound path to the downstream peer; she
opens it, sees the message, previews its headers and releases it (the peer receives it). carol
signs in and sees nothing of alice's, not even by ID. Used and expired links are refused, the
daily digest arrives at euq.digest_time with working single-use links, and retention purges old
entries. Dates move with posternd --test-clock; nothing sleeps to pass time."""
import calendar
import datetime
import json
import os
import re
import ssl
import time
import urllib.error
import urllib.request

from browser import Browser
from harness import Daemon, ExternalPostgres, Smtp, send_message, wait_for
from test_scan import EICAR, QID, Gate, mail

LINK = re.compile(rb"https://127\.0\.0\.1:\d+/\?(?:signin|link)=[A-Za-z0-9_.-]+")
ALICE, CAROL = "alice@example.test", "carol@example.test"


def euq_http(d, method, path, body=None, cookie=None, headers=None):
    """(status, JSON) from the EUQ listener (its certificate is the test's own default one)."""
    ctx = ssl.create_default_context(cafile=os.path.join(d.dir, "certs", "default_console.crt"))
    ctx.check_hostname = False
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (d.euq_port, path), method=method, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if cookie:
        req.add_header("Cookie", cookie)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read().decode()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode()), dict(e.headers)


def euq_mails(peer, kind, to):
    out = []
    for m in peer.messages():
        head = m["body"].split(b"\r\n\r\n", 1)[0]
        if (b"\r\nX-Postern-EUQ: " + kind.encode()) in head and ("To: <%s>" % to).encode() in head:
            out.append(m)
    return out


def wait_mail(peer, kind, to, n=1):
    wait_for(lambda: len(euq_mails(peer, kind, to)) >= n, 20, "%s mail #%d to %s" % (kind, n, to))
    return euq_mails(peer, kind, to)[n - 1]


def links(m):
    return [l.decode() for l in LINK.findall(m["body"])]


def quarantine(g, rcpt, subject):
    code, text = send_message(g.d.port, rcpt=rcpt, body=mail(EICAR, subject=subject).replace(ALICE, rcpt))
    assert code == 250, text
    return QID.search(text).group(1)


def quarantine_to_both(g, subject):
    """One EICAR message for alice and carol (one envelope, two recipients)."""
    c = Smtp(g.d.port)
    c.cmd("EHLO client.e2e")
    assert c.cmd("MAIL FROM:<bob@remote.example>")[0] == 250
    for r in (ALICE, CAROL):
        assert c.cmd("RCPT TO:<%s>" % r)[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(mail(EICAR, subject=subject) + ".\r\n")
    code, text = c.reply()
    c.cmd("QUIT")
    c.close()
    assert code == 250, text
    return QID.search(text).group(1)


def ask_link(b, d, address, page):
    b.goto("https://127.0.0.1:%d/" % d.euq_port, page=page)
    b.wait("#signin", page=page)
    b.fill("#address", address, page=page)
    b.click("#signin-send", page=page)
    b.wait_text("#signin-result", "a sign-in link is on its way", page=page)


def delivered_with(peer, subject):
    return [m for m in peer.messages() if ("Subject: " + subject).encode() in m["body"]
            and b"X-Postern-EUQ" not in m["body"]]


def move_clock(d, offset):
    """Moves the daemon's clock and waits until it has read the new offset (it logs it)."""
    d.move_clock(offset)
    wait_for(lambda: "test clock: offset=%ds " % offset in d.log_text(), 10, "the daemon to read the clock offset")


def events(d, code):
    return d.log_text().count("event code=" + code + " ")


def test_euq_signin_isolation_release_links_digest_purge():
    g = Gate(scan={"on_virus": "quarantine"}, test_clock=True, extra={"euq": {"signin_limit_per_ip": 9}})
    d, peer = g.d, g.peer
    try:
        url = "https://127.0.0.1:%d/" % d.euq_port
        qid = quarantine(g, ALICE, "euq first")
        qdel = quarantine(g, ALICE, "euq delete me")
        qboth = quarantine_to_both(g, "euq for both")
        assert os.path.exists(os.path.join(d.dir, "queue", "quarantine", qid + ".msg"))
        with Browser() as b:
            # alice asks for a link: the page answers; the mail goes out through the queue.
            ask_link(b, d, ALICE, "a")
            b.screenshot("euq-signin-asked", page="a")
            m = wait_mail(peer, "signin", ALICE)
            assert b"Auto-Submitted: auto-generated" in m["body"] and m["mail_from"].startswith("FROM:<> "), m
            (link_a,) = links(m)
            assert "?signin=" in link_a
            b.goto(link_a, page="a")
            b.wait_text("#address-shown", ALICE, page="a")
            b.wait("#m-" + qid, page="a")
            row = b.text("#m-" + qid, page="a")
            assert "euq first" in row and "Eicar-Test-Signature" in row and "bob@remote.example" in row, row
            assert b.url(page="a").endswith("/"), b.url(page="a")  # the token left the address bar
            cookie = [c for c in b.cookies(page="a") if c["name"] == "euq_session"]
            assert cookie and cookie[0]["secure"] and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict", cookie
            b.click("#preview-" + qid, page="a")
            b.wait_text("#preview-headers", "Subject: euq first", page="a")
            assert "verdict=infected (Eicar-Test-Signature" in b.text("#preview-headers", page="a")
            b.screenshot("euq-list-preview", page="a")
            # A message to alice and carol: listed for alice, but hers alone to release it is not (409).
            b.wait("#m-" + qboth, page="a")
            b.click("#release-" + qboth, page="a")
            b.wait_text("#status", "also addressed to others", page="a")
            assert os.path.exists(os.path.join(d.dir, "queue", "quarantine", qboth + ".msg"))

            # carol: her own session sees nothing of alice's, not even by ID.
            ask_link(b, d, CAROL, "b")
            (link_b,) = links(wait_mail(peer, "signin", CAROL))
            b.goto(link_b, page="b")
            b.wait_text("#address-shown", CAROL, page="b")
            b.wait("#m-" + qboth, page="b")  # hers too
            assert b.count("#m-" + qid, page="b") == 0 and b.count("#m-" + qdel, page="b") == 0
            assert b.eval("fetch('/api/messages/%s').then(r => r.status)" % qid, page="b") == 404
            assert b.eval("fetch('/api/messages').then(r => r.json()).then(j => j.messages.map(m => m.id))",
                          page="b") == [qboth]
            csrf_b = b.eval("fetch('/api/me').then(r => r.json()).then(j => j.csrf)", page="b")
            assert b.eval("fetch('/api/messages/%s/release', {method: 'POST', headers: {'X-CSRF-Token': '%s'}})"
                          ".then(r => r.status)" % (qid, csrf_b), page="b") == 404
            b.screenshot("euq-other-recipient-empty", page="b")
            # CSRF: a change without the token is refused (her cookie alone is not enough).
            (cb,) = [c for c in b.cookies(page="b") if c["name"] == "euq_session"]
            st, j, _ = euq_http(d, "POST", "/api/messages/%s/delete" % qid, {}, cookie="euq_session=" + cb["value"])
            assert st == 403 and "CSRF" in j["error"], (st, j)
            assert os.path.exists(os.path.join(d.dir, "queue", "quarantine", qid + ".msg"))

            # The used link again, in a fresh browser: refused, no session.
            b.goto(link_a, page="c")
            b.wait_text("#status", "already used", page="c")
            b.wait("#signin", page="c")
            assert not [c for c in b.cookies(page="c") if c["name"] == "euq_session"]
            b.screenshot("euq-used-link", page="c")

            # alice releases it: delivered downstream with the verdict noted.
            b.click("#release-" + qid, page="a")
            b.wait_text("#status", "Released", page="a")
            wait_for(lambda: delivered_with(peer, "euq first"), 20, "the released message downstream")
            rel = delivered_with(peer, "euq first")[0]["body"]
            assert b"verdict=infected (Eicar-Test-Signature" in rel and b"released from quarantine" in rel
            assert not os.path.exists(os.path.join(d.dir, "queue", "quarantine", qid + ".msg"))
            # ... and deletes the other one from the page.
            b.click("#delete-" + qdel, page="a")
            b.wait_text("#status", "Deleted", page="a")
            assert not os.path.exists(os.path.join(d.dir, "queue", "quarantine", qdel + ".msg"))
            b.wait_text("#messages tbody", "euq for both", page="a")
            # The list is drawn again after the delete: wait for it rather than count at once.
            wait_for(lambda: b.count("#messages tbody tr", page="a") == 1, 15, "the list without the deleted one")
            assert not delivered_with(peer, "euq delete me")
            b.screenshot("euq-released", page="a")

            # An expired link: asked now, opened after link_lifetime (15m) on the daemon's clock.
            ask_link(b, d, ALICE, "d")
            (late,) = links(wait_mail(peer, "signin", ALICE, 2))
            move_clock(d, 16 * 60)
            b.goto(late, page="d")
            b.wait_text("#status", "expired", page="d")
            assert not [c for c in b.cookies(page="d") if c["name"] == "euq_session"]
            b.screenshot("euq-expired-link", page="d")

            # The digest: two more for alice, one for carol; at the next 08:00 each gets one mail.
            q2, q3 = quarantine(g, ALICE, "euq second"), quarantine(g, ALICE, "euq third")
            q4 = quarantine(g, CAROL, "euq carol")
            now = time.time() + 16 * 60
            day = datetime.datetime.utcfromtimestamp(now).date() + datetime.timedelta(days=1)
            at = calendar.timegm(day.timetuple()) + 8 * 3600 + 30
            move_clock(d, int(at - time.time()))
            dm = wait_mail(peer, "digest " + day.isoformat(), ALICE)
            wait_mail(peer, "digest " + day.isoformat(), CAROL)
            text = dm["body"].decode()
            assert "euq second" in text and "euq third" in text and "euq carol" not in text, text
            assert "euq for both" in text and "addressed to others too" in text, text
            ls = [l for l in links(dm) if "?link=" in l]
            assert len(ls) == 4, ls  # release + delete for each of hers alone
            rel2, del2, rel3, del3 = ls
            # Which link is whose: the digest lists the messages in the order of the quarantine list.
            first_is_q2 = text.index("euq second") < text.index("euq third")
            release_q2 = rel2 if first_is_q2 else rel3
            delete_q3 = del3 if first_is_q2 else del2
            b.goto(release_q2, page="e")
            b.wait_text("#status", "Released", page="e")
            wait_for(lambda: delivered_with(peer, "euq second"), 20, "the digest-released message downstream")
            b.screenshot("euq-digest-release", page="e")
            b.goto(delete_q3, page="e")
            b.wait_text("#status", "Deleted", page="e")
            assert not os.path.exists(os.path.join(d.dir, "queue", "quarantine", q3 + ".msg"))
            b.goto(release_q2, page="f")
            b.wait_text("#status", "already used", page="f")
            # No script error on the pages (the refused requests above are logged by the browser too).
            for p in "abcdef":
                errs = [e for e in b.errors(page=p) if not e.startswith("console: Failed to load resource")]
                assert errs == [], (p, errs)

        # Sign-in requests: the same answer for an address Postern does not serve; limited per address.
        same = None
        for i in range(5):
            st, j, h = euq_http(d, "POST", "/api/signin", {"address": "nobody@elsewhere.test"})
            assert st == 200 and "on its way" in j["message"], (st, j)
            assert "default-src 'self'" in h.get("Content-Security-Policy", ""), h
            same = j
        st, j, _ = euq_http(d, "POST", "/api/signin", {"address": "nobody@elsewhere.test"})
        assert st == 429, (st, j)
        st, j2, _ = euq_http(d, "POST", "/api/signin", {"address": "dave@example.test"})
        assert st == 200 and j2 == same, (j2, same)
        # Per client IP (euq.signin_limit_per_ip = 9 here): 6 + 1 asked in this window (the clock moved a day
        # since the browser's three), whatever the address.
        for i in range(2):
            assert euq_http(d, "POST", "/api/signin", {"address": "x%d@elsewhere.test" % i})[0] == 200
        st, j, _ = euq_http(d, "POST", "/api/signin", {"address": "fresh@elsewhere.test"})
        assert st == 429, (st, j)
        assert euq_http(d, "GET", "/api/messages")[0] == 401

        # Retention: carol's entry is purged after euq.retention (30d) on the daemon's clock.
        assert os.path.exists(os.path.join(d.dir, "queue", "quarantine", q4 + ".msg"))
        move_clock(d, int(at - time.time()) + 31 * 86400)
        wait_for(lambda: not os.path.exists(os.path.join(d.dir, "queue", "quarantine", q4 + ".msg")), 20, "the purge")
        wait_for(lambda: events(d, "EUQ_PURGE") >= 1, 10, "EUQ_PURGE")
        for code in ("EUQ_SIGNIN_SENT", "EUQ_SIGNIN", "EUQ_RELEASE", "EUQ_DELETE", "EUQ_DIGEST_SENT",
                     "EUQ_LINK_REFUSED", "EUQ_SIGNIN_LIMITED"):
            assert events(d, code) >= 1, code
        # The link key: 0600 in the state dir, and shared through the database.
        assert oct(os.stat(os.path.join(d.dir, "euq.key")).st_mode & 0o777) == "0o600"
    except BaseException:
        g.close(failed=True)
        raise
    g.close()


def test_euq_database_down_refuses_links_says_so_and_recovers():
    pg = ExternalPostgres()
    g = None
    try:
        g = Gate(scan={"on_virus": "quarantine"}, extra={"database": {"url": pg.url}})
        d, peer = g.d, g.peer
        wait_for(lambda: euq_http(d, "GET", "/health")[1]["database"] == "up", 20, "the database up")
        qid = quarantine(g, ALICE, "euq db down")
        with Browser() as b:
            ask_link(b, d, ALICE, "a")
            (first,) = links(wait_mail(peer, "signin", ALICE))
            b.goto(first, page="a")
            b.wait("#m-" + qid, page="a")
            ask_link(b, d, ALICE, "b")
            (second,) = links(wait_mail(peer, "signin", ALICE, 2))
            pg.stop()
            wait_for(lambda: euq_http(d, "GET", "/health")[1]["database"] == "down", 20, "the database down")
            # A link cannot be checked against the used ones: refused at once, and the page says why.
            t0 = time.time()
            b.goto(second, page="b")
            b.wait_text("#status", "database is unavailable", page="b")
            assert time.time() - t0 < 10
            assert not [c for c in b.cookies(page="b") if c["name"] == "euq_session"]
            b.screenshot("euq-database-down", page="b")
            st, j, _ = euq_http(d, "POST", "/api/session", {"token": second.split("signin=", 1)[1]})
            assert st == 503 and "database is unavailable" in j["error"], (st, j)
            # A session already open keeps listing (the spool is the record) and shows the banner.
            b.goto("https://127.0.0.1:%d/" % d.euq_port, page="a")
            b.wait("#m-" + qid, page="a")
            b.wait_text("#status", "database is unavailable", page="a")
            pg.start()
            wait_for(lambda: euq_http(d, "GET", "/health")[1]["database"] == "up", 30, "the database back")
            # The refused link was not used up: it works now, once.
            b.goto(second, page="b")
            b.wait_text("#address-shown", ALICE, page="b")
            b.wait("#m-" + qid, page="b")
            b.goto(second, page="c")
            b.wait_text("#status", "already used", page="c")
    except BaseException:
        if g:
            g.close(failed=True)
        pg.cleanup()
        raise
    g.close()
    pg.cleanup()


def test_two_nodes_share_the_link_key_and_the_used_links():
    """A link mailed by node A works once on node B: the key and the used nonces are in the database."""
    from test_control import clone_certificates, wait_db
    pg = ExternalPostgres()
    a = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-a"}, "queue": {"deliver": False}})
    b = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-b"}, "queue": {"deliver": False}})
    try:
        a.start()
        wait_db(a)
        clone_certificates(a, b)
        b.start()
        wait_db(b)
        def key(d):
            with open(os.path.join(d.dir, "euq.key")) as f:
                return f.read()
        # Whichever node stored its key first, the other adopts it.
        wait_for(lambda: key(a) == key(b), 10, "one link key for both nodes")
        wait_for(lambda: "link key shared by the nodes is adopted" in a.log_text() + b.log_text(), 10, "the log line")
        st, j, _ = euq_http(a, "POST", "/api/signin", {"address": ALICE})
        assert st == 200, (st, j)
        wait_for(lambda: a.queued(), 10, "the sign-in mail queued on node A")
        (token,) = re.findall(rb"\?signin=([A-Za-z0-9_.-]+)", a.message(a.queued()[0]))
        st, j, h = euq_http(b, "POST", "/api/session", {"token": token.decode()})
        assert st == 200 and j["address"] == ALICE, (st, j)
        assert "euq_session=" in h.get("Set-Cookie", "") and "SameSite=Strict" in h["Set-Cookie"], h
        st, j, _ = euq_http(a, "POST", "/api/session", {"token": token.decode()})
        assert st == 410 and "already used" in j["error"], (st, j)
        assert a.stop() == 0 and b.stop() == 0
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
            d.cleanup()
        pg.cleanup()


def test_euq_page_keeps_working_over_its_own_certificate_swap():
    """An open, signed-in EUQ page; the EUQ role's certificate is reassigned through the admin API
    (default_console -> default_mta); the next connection serves the new one, and the same page's
    next calls (a header preview, a release) succeed over it."""
    from test_dashboard import https, norm_fp, served_fingerprint
    g = Gate(scan={"on_virus": "quarantine"})
    d, peer = g.d, g.peer
    try:
        qid = quarantine(g, ALICE, "euq over a swap")

        def entry(name):
            st, j, _ = https(d, "GET", "/api/v1/certificates/" + name)
            return j if st == 200 and isinstance(j, dict) and "fingerprint" in j else None
        console_fp = norm_fp(wait_for(lambda: entry("default_console"), 30, "the certificate store")["fingerprint"])
        assert served_fingerprint(d.euq_port) == console_fp
        with Browser() as b:
            ask_link(b, d, ALICE, "a")
            (link,) = links(wait_mail(peer, "signin", ALICE))
            b.goto(link, page="a")
            b.wait("#m-" + qid, page="a")
            st, j, _ = https(d, "POST", "/api/v1/certificates/default_mta/assign", {"roles": ["euq"]})
            assert st == 200, (st, j)
            mta_fp = norm_fp(https(d, "GET", "/api/v1/certificates/default_mta")[1]["fingerprint"])
            assert mta_fp != console_fp
            wait_for(lambda: served_fingerprint(d.euq_port) == mta_fp, 10, "the EUQ listener serving default_mta")
            # The page goes on: Chromium's next request opens a new connection when the old one idles out
            # or is closed; both must work. A preview, then a release, from the same page.
            b.click("#preview-" + qid, page="a")
            b.wait_text("#preview-headers", "Subject: euq over a swap", page="a")
            b.click("#release-" + qid, page="a")
            b.wait_text("#status", "Released", page="a")
            wait_for(lambda: delivered_with(peer, "euq over a swap"), 20, "the released message downstream")
            b.screenshot("euq-after-certificate-swap", page="a")
            errs = [e for e in b.errors(page="a") if not e.startswith("console: Failed to load resource")]
            assert errs == [], errs
    except BaseException:
        g.close(failed=True)
        raise
    g.close()
