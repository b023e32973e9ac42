"""End-to-end tests of the control plane: real PostgreSQL (private and external), the admin
HTTPS API, posternctl, events, /metrics and two nodes on one database."""
import os
import shutil
import signal
import re
import hashlib
import socket
import ssl
import stat
import subprocess
import time

from harness import (Daemon, ExternalPostgres, Peer, Smtp, cert_fingerprint, log_tail, make_cert, running,
                     send_message, wait_for)

QID = re.compile(r"queued as ([0-9A-Z]+)")


def wait_db(d, timeout=30):
    wait_for(lambda: d.api("GET", "/api/v1/health")[1].get("database") == "up", timeout, "database up")


def test_fresh_state_dir_gets_schema_console_cert_and_token():
    with running() as d:
        wait_db(d)
        tok = os.path.join(d.dir, "admin.token")
        assert stat.S_IMODE(os.stat(tok).st_mode) == 0o600
        assert len(d.token()) == 64
        assert os.path.exists(os.path.join(d.dir, "certs", "default_console.crt"))
        r = subprocess.run(["psql", "-h", os.path.join(d.dir, "pgsock"), "-U", "postern", "-d", "postgres", "-tAc",
                            "SELECT max(version) FROM schema_migrations"], capture_output=True, text=True)
        assert int(r.stdout.strip()) >= 2, r.stdout + r.stderr  # 2: the certificate store
        r = subprocess.run(["psql", "-h", os.path.join(d.dir, "pgsock"), "-U", "postern", "-d", "postgres", "-tAc",
                            "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                            "('settings','certificates','role_bindings','licenses','pattern_state','events','quarantine')"],
                           capture_output=True, text=True)
        assert r.stdout.strip() == "7", r.stdout + r.stderr
        # Token: missing or wrong -> 401 with no detail; right -> 200.
        assert d.api("GET", "/api/v1/health", token=None) == (401, {"error": "unauthorized"})
        assert d.api("GET", "/api/v1/health", token="0" * 64) == (401, {"error": "unauthorized"})
        assert d.api("GET", "/metrics", token=None)[0] == 401
        status, body = d.api("GET", "/api/v1/version")
        assert status == 200 and body["version"]
        status, roles = d.api("GET", "/api/v1/roles")
        assert {r["role"]: r["certificate"] for r in roles} == {
            "inbound_mta": "default_mta", "outbound_mta": "default_mta", "admin_console": "default_console",
            "euq_console": "default_console"}
        assert all(r["generation"] == 1 and r["last_error"] is None for r in roles), roles
        # HTTPS only: a plaintext request gets no HTTP answer.
        s = socket.create_connection(("127.0.0.1", d.admin_port), timeout=5)
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            data = b""
        assert not data.startswith(b"HTTP/"), data
        # posternctl verifies the console certificate and uses the token from the state dir.
        rc, out, err = d.ctl("role", "list")
        assert rc == 0 and "default_console" in out, err
        # A restart keeps the token and the schema.
        token = d.token()
        assert d.stop() == 0
        d.start()
        wait_db(d)
        assert d.token() == token


def test_queue_tools_act_and_leave_events():
    peer = Peer(tls=False, control={"rules": [{"at": "RCPT", "reply": "451 4.2.0 mailbox busy"}]})
    try:
        conf = {"routes": {"example.test": "[127.0.0.1]:%d" % peer.port},
                "queue": {"min_backoff": "1h", "max_backoff": "2h"}}
        with running(conf) as d:
            wait_db(d)
            code, text = send_message(d.port, body="Subject: stuck\r\n\r\nx\r\n")
            qid = QID.search(text).group(1)
            d.wait_log("queue_id=%s deferred attempts=1" % qid)
            rc, out, err = d.ctl("queue", "list")
            assert rc == 0 and qid in out, out + err
            rc, out, err = d.ctl("--json", "queue", "show", qid)
            assert rc == 0 and '"attempts": 1' in out and "451 4.2.0 mailbox busy" in out, out + err
            rcpts_before = sum(1 for c in peer.commands() if c["cmd"].startswith("RCPT"))
            rc, out, err = d.ctl("queue", "flush", qid)
            assert rc == 0, err
            wait_for(lambda: sum(1 for c in peer.commands() if c["cmd"].startswith("RCPT")) > rcpts_before, 10,
                     "a new delivery attempt after flush")
            d.wait_log("queue_id=%s deferred attempts=2" % qid)
            assert d.ctl("queue", "hold", qid)[0] == 0
            rc, out, _ = d.ctl("--json", "queue", "show", qid)
            assert '"held": true' in out
            rc, out, err = d.ctl("queue", "flush", qid)
            assert rc != 0 and "409" in err, err  # a held message is not flushed
            assert d.ctl("queue", "release", qid)[0] == 0
            d.wait_log("queue_id=%s deferred attempts=3" % qid)
            assert d.ctl("queue", "delete", qid)[0] == 0
            wait_for(lambda: d.queued() == [], 10, "queue files removed")
            rc, out, err = d.ctl("queue", "show", qid)
            assert rc != 0 and "404" in err and "no such message" in err, err
            rc, out, err = d.ctl("queue", "hold", "NOSUCHID")
            assert rc != 0 and "404" in err
            def codes():
                status, ev = d.api("GET", "/api/v1/events?limit=100")
                return {(e["code"], e["queue_id"]) for e in ev} if status == 200 else set()
            want = {("QUEUE_FLUSH", qid), ("QUEUE_HOLD", qid), ("QUEUE_RELEASE", qid), ("QUEUE_DELETE", qid)}
            wait_for(lambda: want <= codes(), 10, "an event for each queue action")
            rc, out, err = d.ctl("events")
            assert rc == 0 and "QUEUE_DELETE" in out and qid in out
    finally:
        peer.cleanup()


def test_database_down_mail_flows_and_api_says_503():
    pg = ExternalPostgres()
    peer = Peer(tls=False)
    try:
        conf = {"database": {"url": pg.url}, "routes": {"example.test": "[127.0.0.1]:%d" % peer.port}}
        with running(conf) as d:
            wait_db(d)
            assert send_message(d.port)[0] == 250
            wait_for(lambda: len(peer.messages()) == 1, 15, "delivery with the database up")
            pg.stop()
            t0 = time.time()
            status, body = d.api("GET", "/api/v1/events")
            assert status == 503 and "database unavailable" in body["error"], (status, body)
            assert time.time() - t0 < 5
            assert d.api("GET", "/api/v1/health")[1]["database"] == "down"
            assert d.ctl("alerts")[0] != 0
            for i in range(3):
                assert send_message(d.port, body="Subject: db down %d\r\n\r\nx\r\n" % i)[0] == 250
            wait_for(lambda: len(peer.messages()) == 4, 15, "delivery with the database down")
            # Events raised meanwhile wait for the database, and survive a restart.
            os.kill(d.proc.pid, signal.SIGHUP)
            d.wait_log("event code=RELOAD_APPLIED severity=info reload requested by SIGHUP")
            # A restart while the database is down: posternd starts on its cached state.
            assert d.stop() == 0
            with open(os.path.join(d.dir, "cache", "events.pending")) as f:
                assert "RELOAD_APPLIED" in f.read()
            d.start()
            assert d.api("GET", "/api/v1/health")[1]["state_source"] == "cache"
            assert send_message(d.port, body="Subject: started without db\r\n\r\nx\r\n")[0] == 250
            wait_for(lambda: len(peer.messages()) == 5, 15, "delivery after a start without the database")
            # (the first run's outage line is in the same log: wait for this run's own)
            wait_for(lambda: d.log_text().count("code=DATABASE_UNAVAILABLE") >= 2, 15, "this run's outage event")
            pg.start()
            wait_db(d, 20)
            def seen():
                status, ev = d.api("GET", "/api/v1/events")
                return status == 200 and {"DATABASE_UNAVAILABLE", "DATABASE_AVAILABLE", "RELOAD_APPLIED"} <= \
                    {e["code"] for e in ev}
            wait_for(seen, 10, "the outage (and what happened during it) recorded once the database is back")
            status, ev = d.api("GET", "/api/v1/events")
            assert len([e for e in ev if e["code"] == "DATABASE_UNAVAILABLE"]) == 2  # one per run
            wait_for(lambda: not os.path.exists(os.path.join(d.dir, "cache", "events.pending")), 10,
                     "the pending-events file gone once they are stored")
            status, alerts = d.api("GET", "/api/v1/alerts")
            assert status == 200 and not [a for a in alerts if a["code"] == "DATABASE_UNAVAILABLE"]
            d.wait_log("database: connected")
    finally:
        peer.cleanup()
        pg.cleanup()


def clone_certificates(a, b):
    """Nodes on one database share the node key (the stored keys are sealed under it) and serve the
    store's default certificates: B starts with A's, so its console does not change under the test."""
    wait_for(lambda: os.path.exists(os.path.join(a.dir, "admin-trust.pem")), 10, "node A's certificate store")
    shutil.copy2(os.path.join(a.dir, "node.key"), os.path.join(b.dir, "node.key"))
    shutil.copytree(os.path.join(a.dir, "certs"), os.path.join(b.dir, "certs"))


def test_two_nodes_share_one_database():
    pg = ExternalPostgres()
    a = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-a"}})
    b = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-b"}})
    try:
        a.start()
        wait_db(a)
        clone_certificates(a, b)
        b.start()
        wait_db(b)
        time.sleep(0.5)  # both LISTENing
        rc, out, err = a.ctl("reload")
        assert rc == 0, err
        t0 = time.time()
        def b_sees():
            status, ev = b.api("GET", "/api/v1/events?limit=20")
            return status == 200 and any(e["node"] == "node-a" and e["code"] == "RELOAD_APPLIED" for e in ev)
        wait_for(b_sees, 5, "node A's reload event seen through node B")
        assert time.time() - t0 < 1.0, "took %.2fs" % (time.time() - t0)
        b.wait_log("notify: reload requested by node node-a")
        b.wait_log("reload role=inbound_mta generation=2")
        # A ticket flush asked of one node is applied by the others too.
        rc, out, err = a.ctl("tls", "flush-tickets")
        assert rc == 0 and "flushed" in out, err
        b.wait_log("notify: session-ticket flush requested by node node-a")
        b.wait_log("tls session-ticket keys flushed")
        assert a.stop() == 0 and b.stop() == 0
    except BaseException:
        print(log_tail(a), log_tail(b))
        raise
    finally:
        a.cleanup()
        b.cleanup()
        pg.cleanup()


METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? '
                         r'[-+]?(\d+(\.\d+)?([eE][-+]?\d+)?|NaN|\+Inf|-Inf)$')


def test_metrics_parse_as_prometheus_text():
    with running() as d:
        wait_db(d)
        assert send_message(d.port)[0] == 250
        status, text = d.api("GET", "/metrics")
        assert status == 200
        types = {}
        samples = {}
        for line in text.splitlines():
            if line.startswith("# HELP "):
                continue
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ")
                assert typ in ("counter", "gauge", "histogram", "summary", "untyped")
                assert name not in types, "TYPE twice for " + name
                types[name] = typ
                continue
            assert METRIC_LINE.match(line), "not Prometheus text: %r" % line
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            name = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name  # histograms
            assert name in types, "sample before its TYPE: " + name
            samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
        assert samples["postern_messages_accepted_total"] >= 1
        assert samples['postern_tls_reloads_total{role="inbound_mta"}'] >= 1
        assert samples["postern_database_up"] == 1
        assert "postern_queue_messages" in samples
        assert samples["postern_spool_commits_total"] >= 1
        assert samples["postern_spool_commit_batches_total"] >= 1
        assert "postern_spool_free_files" in samples and "postern_queue_destinations" in samples
        assert samples["postern_tls_ticket_key_flushes_total"] == 0
        assert 'postern_tls_tickets_total{result="issued"}' in samples
        assert 'postern_tls_reloads_total{role="euq_console"}' in samples


def test_private_postgres_is_restarted_when_it_dies():
    import signal
    with running() as d:
        wait_db(d)
        pidfile = os.path.join(d.dir, "pgdata", "postmaster.pid")
        with open(pidfile) as f:
            first = int(f.readline())
        os.kill(first, signal.SIGKILL)
        d.wait_log("private PostgreSQL exited")
        assert send_message(d.port)[0] == 250  # mail does not wait for the database

        def back():
            try:
                with open(pidfile) as f:
                    pid = int(f.readline())
            except (OSError, ValueError):
                return False
            return pid != first and d.api("GET", "/api/v1/health")[1].get("database") == "up"
        wait_for(back, 40, "the private cluster restarted and reconnected")
        status, _ = d.api("GET", "/api/v1/events")
        assert status == 200


# --- reloads that are refused, bad input to posternctl ----------------------------------------------

def test_refused_reload_answers_409_with_the_reason():
    """Issue 9: a refused reload answered 409 naming the roles, with the reason only in the log."""
    with running() as d:
        cert, key = make_cert(os.path.join(d.dir, "mx"), "mx.e2e.test")
        _, other_key = make_cert(os.path.join(d.dir, "other"), "other.e2e.test")
        d.write_config({"smtp": {"tls_cert_file": cert, "tls_key_file": key}})
        rc, out, err = d.ctl("reload")
        assert rc == 0 and "reloaded" in out, err
        wait_db(d)
        with open(other_key) as src, open(key, "w") as dst:
            dst.write(src.read())  # the key of another certificate
        status, body = d.api("POST", "/api/v1/reload")
        assert status == 409, (status, body)
        want = "inbound_mta certificate refused: the private key does not match certificate " + cert
        assert want in body["error"], body
        assert "outbound_mta certificate refused: the private key does not match" in body["error"], body
        rc, out, err = d.ctl("reload")
        assert rc == 1 and "409" in err and want in err, (rc, err)
        # The role keeps serving its last good set, and says why the new one was refused.
        status, roles = d.api("GET", "/api/v1/roles")
        inbound = [r for r in roles if r["role"] == "inbound_mta"][0]
        assert inbound["generation"] == 2 and "does not match" in inbound["last_error"], inbound
        rc, out, err = d.ctl("role", "list")
        assert rc == 0 and "last reload refused: the private key does not match" in out, out
        c = Smtp(d.port)
        c.cmd("EHLO client.e2e.test")
        c.starttls()
        assert c.peer_fingerprint() == cert_fingerprint(cert)
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        c.close()
        # A refused configuration says which key and why, too.
        d.write_config({"smtp": {"tls_cert_file": cert, "tls_key_file": key, "max_recipients": "many"}})
        status, body = d.api("POST", "/api/v1/reload")
        assert status == 409 and "config key 'smtp.max_recipients': must be an integer" in body["error"], body
        d.write_config({})
        assert d.ctl("reload")[0] == 0


def test_posternctl_refuses_bad_input_cleanly():
    """Issue 9: 'posternctl queue show ""' aborted (uncaught type_error, exit 134): the empty ID
    became the list endpoint. IDs are checked on both sides; no input ends in an abort."""
    with running() as d:
        wait_db(d)
        rc, out, err = d.ctl()
        assert rc == 2 and "a command is required: queue, role, events, alerts, reload, status, tls" in err, (rc, err)
        rc, out, err = d.ctl("queue")
        assert rc == 2 and "'queue' needs one of: list, show, flush, delete, hold, release" in err, (rc, err)
        rc, out, err = d.ctl("tls")
        assert rc == 2 and "'tls' needs one of: flush-tickets" in err, (rc, err)
        rc, out, err = d.ctl("nonsense")
        assert rc == 2 and "a command is required" in err, (rc, err)
        for verb in ("show", "hold", "release", "delete", "flush"):
            for bad in ("", "/", "?", "..", "a/b", "%2F", "x y"):
                rc, out, err = d.ctl("queue", verb, bad)
                assert rc == 2 and "queue ID" in err and out == "", (verb, bad, rc, out, err)
                assert "terminate" not in err and "type_error" not in err
        rc, out, err = d.ctl("events", "--limit", "lots")
        assert rc == 2 and "limit" in err, (rc, err)
        # The server refuses such IDs by itself, for other clients.
        for method, path in (("GET", "/api/v1/queue/%3F"), ("POST", "/api/v1/queue/a.b/hold"),
                             ("DELETE", "/api/v1/queue/x%2Fy"), ("POST", "/api/v1/queue/..%2F..%2Fx/flush")):
            status, body = d.api(method, path)
            assert status == 400 and "bad queue ID" in body["error"], (method, path, status, body)
        rc, out, err = d.ctl("queue", "show", "NOSUCHID")
        assert rc == 1 and "404" in err and "no such message" in err, (rc, err)
        rc, out, err = d.ctl("--url", "https://127.0.0.1:1", "status")
        assert rc == 1 and "cannot reach" in err, (rc, err)


# --- session tickets ---------------------------------------------------------------------------------

def client_ctx(tls12=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def smtp_tls(port, ctx, session=None):
    """EHLO, STARTTLS (offering `session`), EHLO, QUIT, a clean TLS close.
    Returns (resumed, the session to offer next time, SHA-256 of the server's certificate)."""
    c = Smtp(port)
    c.cmd("EHLO client.e2e.test")
    code, text = c.cmd("STARTTLS")
    assert code == 220, text
    s = ctx.wrap_socket(c.sock, server_hostname="mx.e2e.test", session=session)
    c.sock = s
    assert c.cmd("EHLO client.e2e.test")[0] == 250  # the TLS 1.3 tickets arrive before this reply
    assert c.cmd("QUIT")[0] == 221
    reused, sess = s.session_reused, s.session
    fp = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
    try:
        s.unwrap()  # close_notify: OpenSSL forgets a session closed without one
    except (OSError, ssl.SSLError):
        pass
    s.close()
    return reused, sess, fp


def fresh_session(port, ctx):
    reused, sess, _ = smtp_tls(port, ctx)
    assert not reused
    return sess


def test_tickets_survive_a_reload_and_not_a_flush():
    with running() as d:
        wait_db(d)
        ctx = client_ctx()
        s1, s2, s3 = (fresh_session(d.port, ctx) for _ in range(3))
        assert smtp_tls(d.port, ctx, s1)[0], "a ticket is accepted"
        rc, out, err = d.ctl("reload")
        assert rc == 0, err
        d.wait_log("reload role=inbound_mta generation=2")
        assert smtp_tls(d.port, ctx, s2)[0], "resumption survives a reload of the same certificate"
        rc, out, err = d.ctl("tls", "flush-tickets")
        assert rc == 0 and "session-ticket keys flushed" in out, (rc, out, err)
        reused, s4, _ = smtp_tls(d.port, ctx, s3)
        assert not reused, "a ticket from before the flush was accepted"
        assert smtp_tls(d.port, ctx, s4)[0], "tickets issued after the flush work"
        d.wait_log("tls session-ticket keys flushed")
        def flushed_event():
            status, ev = d.api("GET", "/api/v1/events?limit=50")
            return status == 200 and any(e["code"] == "TLS_TICKETS_FLUSHED" for e in ev)
        wait_for(flushed_event, 10, "the TLS_TICKETS_FLUSHED event")
        status, text = d.api("GET", "/metrics")
        assert "postern_tls_ticket_key_flushes_total 1" in text
        assert 'postern_tls_tickets_total{result="unknown_key"} 1' in text, text


def rsa_cert(prefix, cn):
    cert, key = prefix + ".crt", prefix + ".key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-subj", "/CN=" + cn, "-days", "30"], check=True, capture_output=True)
    return cert, key


def test_no_resumption_across_a_certificate_swap():
    """Issue 9: a TLS 1.2 session made with the ECDSA certificate was resumed after a swap to RSA."""
    with running() as d:
        ec_cert, ec_key = make_cert(os.path.join(d.dir, "mx"), "mx.e2e.test")
        d.write_config({"smtp": {"tls_cert_file": ec_cert, "tls_key_file": ec_key}})
        assert d.ctl("reload")[0] == 0
        ctx = client_ctx(tls12=True)
        reused, s1, fp = smtp_tls(d.port, ctx)
        assert not reused and fp == cert_fingerprint(ec_cert)
        assert smtp_tls(d.port, ctx, s1)[0]
        reused, s2, _ = smtp_tls(d.port, ctx)
        rsa_crt, rsa_key = rsa_cert(os.path.join(d.dir, "mx-rsa"), "mx.e2e.test")
        os.replace(rsa_key, ec_key)
        os.replace(rsa_crt, ec_cert)
        rc, out, err = d.ctl("reload")
        assert rc == 0, err
        reused, s3, fp = smtp_tls(d.port, ctx, s2)
        assert not reused, "a session from the ECDSA certificate was resumed after the swap to RSA"
        assert fp == cert_fingerprint(ec_cert)  # the new (RSA) certificate, in a full handshake
        assert smtp_tls(d.port, ctx, s3)[0], "sessions under the new certificate resume"


def test_outbound_never_resumes_an_unverified_session_under_verify():
    """Resumption skips the certificate check: a TLS session made under policy "may" (server not
    checked) was offered again, per next-hop address, to a destination under "verify" and the
    message went to a server nobody had verified."""
    peer = Peer()  # its self-signed certificate is in no trust store
    try:
        hop = "[127.0.0.1]:%d" % peer.port
        conf = {"server": {"workers": 1},  # TLS sessions are cached per worker
                "relay": {"domains": ["example.test", "strict.test"]},
                "routes": {"example.test": hop, "strict.test": hop},
                "outbound": {"tls": "may", "connection_cache_time": "", "connect_timeout": "2s",
                             "command_timeout": "4s"},
                "outbound.tls_policy": {"strict.test": "verify"},
                "queue": {"min_backoff": "1h", "max_backoff": "2h"}}
        with running(conf) as d:
            assert send_message(d.port, rcpt="alice@example.test")[0] == 250
            wait_for(lambda: len(peer.messages()) == 1, 15, "delivery under may")
            assert peer.messages()[0]["tls"] is True and not peer.messages()[0]["tls_resumed"]
            assert send_message(d.port, rcpt="carol@example.test")[0] == 250
            wait_for(lambda: len(peer.messages()) == 2, 15, "the second delivery under may")
            assert peer.messages()[1]["tls_resumed"], "the TLS session to the same next hop was not resumed"
            code, text = send_message(d.port, rcpt="bob@strict.test", body="Subject: strict\r\n\r\nx\r\n")
            qid = QID.search(text).group(1)
            def settled():
                lines = [l for l in d.log_text().splitlines() if "queue_id=%s to=<bob@strict.test>" % qid in l]
                return len(peer.messages()) > 2 or any("deferred" in l for l in lines)
            wait_for(settled, 15, "the strict message delivered or deferred")
            assert len(peer.messages()) == 2, "delivered to an unverified server under policy verify"
            assert "certificate verify failed" in d.log_text(), log_tail(d)
    finally:
        peer.cleanup()
