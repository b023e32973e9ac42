"""End-to-end tests of the control plane: real PostgreSQL (private and external), the admin
HTTPS API, posternctl, events, /metrics and two nodes on one database."""
import os
import signal
import re
import socket
import ssl
import stat
import subprocess
import time

from harness import (Daemon, ExternalPostgres, Peer, log_tail, running, send_message, wait_for)

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
        assert r.stdout.strip() == "1", r.stdout + r.stderr
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
            "inbound_mta": "default_mta", "outbound_mta": "default_mta", "admin_console": "default_console"}
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


def test_two_nodes_share_one_database():
    pg = ExternalPostgres()
    a = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-a"}})
    b = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-b"}})
    try:
        a.start()
        b.start()
        wait_db(a)
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
            assert name in types, "sample before its TYPE: " + name
            samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
        assert samples["postern_messages_accepted_total"] >= 1
        assert samples['postern_tls_reloads_total{role="inbound_mta"}'] >= 1
        assert samples["postern_database_up"] == 1
        assert "postern_queue_messages" in samples
        assert samples["postern_spool_commits_total"] >= 1
        assert samples["postern_spool_commit_batches_total"] >= 1
        assert "postern_spool_free_files" in samples and "postern_queue_destinations" in samples


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
