"""End-to-end tests of the one transport (TlsStream) under every listener: what a client that never
reads, a flooding or slow downstream, a slow admin client, a slowloris and descriptor exhaustion
do to posternd. Each was a defect before the transport: see issue 8."""
import os
import socket
import ssl
import subprocess
import threading
import time

from harness import Daemon, Smtp, free_port, wait_for, log_tail


def under_sanitizers():
    import harness
    return "asan" in harness.BIN  # ASan keeps freed memory in quarantine: RSS says little there


def metric(d, name):
    status, text = d.api("GET", "/metrics")
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric " + name)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def greeted_within(port, seconds, source="127.0.0.1"):
    t0 = time.time()
    try:
        s = Smtp(port, source=source, timeout=seconds)
    except (OSError, ConnectionError):
        return False
    took = time.time() - t0
    code = s.banner[0]
    s.close()
    return code == 220 and took <= seconds


# --- SMTP side --------------------------------------------------------------------------------

def test_client_that_never_reads_is_cut_and_frees_its_slot():
    d = Daemon({"smtp": {"max_sessions_per_ip": 3, "write_timeout": "2s", "close_timeout": "1s",
                         "max_commands_before_mail": 100000}}).start()
    socks = []
    try:
        wait_for(lambda: metric(d, "postern_sessions_active") == 0, 10, "the probe session to end")
        for _ in range(3):  # fill the address's slots with clients that pipeline and never read
            s = socket.create_connection(("127.0.0.1", d.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(5)
            s.recv(4096)  # the greeting
            s.sendall(b"EHLO never-reads.test\r\n")  # HELP may be pipelined after EHLO's reply
            s.recv(4096)
            s.setblocking(False)
            sent = 0
            deadline = time.time() + 5
            while sent < 600000 and time.time() < deadline:  # ~8 MB of replies
                try:
                    sent += s.send(b"HELP\r\n" * 4096)
                except BlockingIOError:
                    time.sleep(0.01)
                except OSError:
                    break
            socks.append(s)
        # posternd stops reading them, then the write deadline ends them: the slots come back.
        wait_for(lambda: metric(d, "postern_sessions_write_stalled_total") >= 3, 15, "stalled sessions to be cut")
        wait_for(lambda: metric(d, "postern_sessions_active") == 0, 10, "sessions to end")
        assert greeted_within(d.port, 2), "a fresh client from the same address is served"
        assert under_sanitizers() or rss_kb(d.proc.pid) < 200 * 1024
    finally:
        for s in socks:
            s.close()
        d.stop()
        d.cleanup()


def test_slowloris_command_line_has_its_own_deadline():
    d = Daemon({"smtp": {"idle_timeout": "2s"}}).start()
    try:
        s = Smtp(d.port)
        assert s.cmd("EHLO slow.test")[0] == 250
        t0 = time.time()
        closed_at = None
        for ch in "NOOP NOOP NOOP NOOP":  # a byte a second: each would have re-armed the idle timer
            try:
                s.send(ch)
            except OSError:
                closed_at = time.time()
                break
            s.sock.settimeout(1.0)
            try:
                data = s.sock.recv(4096)
                if data.startswith(b"421") or not data:
                    closed_at = time.time()
                    break
            except socket.timeout:
                pass
        assert closed_at is not None, "the half-written command line kept the session open"
        assert closed_at - t0 < 4.0, "cut after %.1fs" % (closed_at - t0)
        s.close()
    finally:
        d.stop()
        d.cleanup()


def test_per_ip_slot_is_free_when_the_session_ends():
    d = Daemon({"smtp": {"max_sessions_per_ip": 1}}).start()
    refused = 0
    try:
        # the harness's own probe connection must be gone first
        wait_for(lambda: metric(d, "postern_sessions_active") == 0, 10, "the probe session to end")
        for _ in range(150):
            s = Smtp(d.port)
            if s.banner[0] != 220:
                refused += 1
                s.close()
                continue
            s.cmd("QUIT")
            s.close()
        assert refused == 0, "%d of 150 sequential sessions refused by a limit of 1" % refused
    finally:
        d.stop()
        d.cleanup()


# --- outbound -------------------------------------------------------------------------------------

class Downstream(threading.Thread):
    """A raw downstream SMTP server on 127.0.0.1 that misbehaves in one way: `mode` is
    "flood" (floods bytes once DATA is accepted), "slow" (reads the body slowly) or
    "late" (waits before its reply to the final dot)."""

    def __init__(self, mode, delay=3.0):
        super().__init__(daemon=True)
        self.mode, self.delay = mode, delay
        self.port = free_port()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if mode == "slow":
            self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.srv.bind(("127.0.0.1", self.port))
        self.srv.listen(8)
        self.srv.settimeout(1)
        self.stop_at = time.time() + 60
        self.delivered = 0
        self.flooded = 0

    def run(self):
        while time.time() < self.stop_at:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(30)
        f = b""
        try:
            c.sendall(b"220 downstream.test ESMTP\r\n")
            while time.time() < self.stop_at:
                while b"\r\n" not in f:
                    chunk = c.recv(4096)
                    if not chunk:
                        return
                    f += chunk
                line, f = f.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    c.sendall(b"250-downstream.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    c.sendall(b"354 go ahead\r\n")
                    if self.mode == "flood":  # reads what Postern sends, slowly, and floods back
                        def drain():
                            try:
                                while c.recv(16384):
                                    time.sleep(0.02)
                            except OSError:
                                pass
                        threading.Thread(target=drain, daemon=True).start()
                        junk = b"X" * 65536
                        end = time.time() + 20
                        try:
                            while time.time() < end and self.flooded < 400 << 20:
                                c.sendall(junk)
                                self.flooded += len(junk)
                        except OSError:
                            return
                        return
                    while b"\r\n.\r\n" not in f:
                        chunk = c.recv(2048)
                        if not chunk:
                            return
                        f += chunk
                        if self.mode == "slow":
                            time.sleep(0.01)
                    f = f.split(b"\r\n.\r\n", 1)[1]
                    if self.mode == "late":
                        time.sleep(self.delay)
                    self.delivered += 1
                    c.sendall(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"250 ok\r\n")
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self.stop_at = 0
        self.srv.close()


def send_message(port, size, rcpt="user@example.test"):
    body = ("Subject: big\r\n\r\n" + ("y" * 76 + "\r\n") * (size // 78)).encode()
    s = Smtp(port)
    s.cmd("EHLO client.test")
    assert s.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert s.cmd("RCPT TO:<%s>" % rcpt)[0] == 250
    assert s.cmd("DATA")[0] == 354
    s.send(body + b".\r\n")
    code, text = s.reply()
    assert code == 250, text
    s.close()


def test_flooding_downstream_is_bounded():
    ds = Downstream("flood")
    ds.start()
    d = Daemon({"routes": {"example.test": "[127.0.0.1]:%d" % ds.port},
                "outbound": {"dns_servers": ["127.0.0.1:9"], "tls": "none"}}).start()
    try:
        before = rss_kb(d.proc.pid)
        send_message(d.port, 4 << 20)
        # Whether the flood meets the body ("more than 16384 bytes while the message was being
        # sent") or the final reply ("oversized reply"), the client session's bound ends it.
        d.wait_log("status=deferred", 30)
        assert "oversized reply" in d.log_text() or "while the message was being sent" in d.log_text()
        grown = rss_kb(d.proc.pid) - before
        assert under_sanitizers() or grown < 64 * 1024, "RSS grew by %d KiB while the downstream flooded %d MiB" % (grown, ds.flooded >> 20)
        assert d.queued(), "the message stays queued (deferred)"
    finally:
        ds.close()
        d.stop()
        d.cleanup()


def test_slow_body_and_late_final_reply_are_delivered():
    for mode in ("slow", "late"):
        ds = Downstream(mode, delay=3.0)
        ds.start()
        # command_timeout far below the time the body or the final reply take: only the
        # per-block data deadline and the final-reply deadline apply to them.
        d = Daemon({"routes": {"example.test": "[127.0.0.1]:%d" % ds.port},
                    "outbound": {"dns_servers": ["127.0.0.1:9"], "tls": "none", "command_timeout": "1s"}}).start()
        try:
            send_message(d.port, 2 << 20 if mode == "slow" else 2000)
            wait_for(lambda: ds.delivered == 1 and not d.queued(), 60, mode + " delivery")
            assert "timeout talking to" not in d.log_text(), log_tail(d)
        finally:
            ds.close()
            d.stop()
            d.cleanup()


# --- admin listener -------------------------------------------------------------------------------

def tls_connect(port, timeout=10):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_peer(s, wait):
    s.settimeout(wait)
    try:
        return s.recv(4096) == b""
    except (socket.timeout, TimeoutError):
        return False
    except (OSError, ssl.SSLError):
        return True


def test_admin_slow_client_wrong_token_and_connection_cap():
    d = Daemon({"admin": {"request_timeout": "2s", "idle_timeout": "3s", "max_connections": 4}}).start()
    try:
        # A header trickled a byte every 0.4 s: bytes no longer extend the deadline.
        s = tls_connect(d.admin_port)
        t0 = time.time()
        cut = None
        for ch in b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n":
            try:
                s.send(bytes([ch]))
            except (OSError, ssl.SSLError):
                cut = time.time()
                break
            if closed_by_peer(s, 0.4):
                cut = time.time()
                break
        assert cut is not None and cut - t0 < 4.0, "slow admin client not cut by the request deadline"
        s.close()
        # A wrong token gets 401 as soon as the headers are complete: the 1 MiB body is never awaited.
        s = tls_connect(d.admin_port)
        s.send(b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
               b"Content-Length: 1000000\r\n\r\n")
        s.settimeout(2)
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 401"), head
        s.close()
        # A body over max_body_size is refused from its Content-Length (with the right token).
        s = tls_connect(d.admin_port)
        s.send(("POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Length: 5000000\r\n\r\n" % d.token()).encode())
        s.settimeout(2)
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
        s.close()
        # Past max_connections a new connection is closed at once; the API serves again after.
        held = [socket.create_connection(("127.0.0.1", d.admin_port)) for _ in range(4)]
        time.sleep(1)
        extra = socket.create_connection(("127.0.0.1", d.admin_port))
        extra.settimeout(5)
        try:
            assert extra.recv(10) == b""
        except ConnectionResetError:
            pass
        extra.close()
        for h in held:
            h.close()
        def healthy():
            try:  # the server frees the held slots once it has read their close: until then, a reset
                return d.api("GET", "/api/v1/health")[0] == 200
            except (OSError, ssl.SSLError):
                return False
        wait_for(healthy, 10, "the API after the cap")
        assert metric(d, "postern_sessions_active") == 0
    finally:
        d.stop()
        d.cleanup()


# --- descriptors ------------------------------------------------------------------------------------

def test_descriptor_exhaustion_recovers():
    d = Daemon({"smtp": {"max_sessions_per_ip": 10}})
    d.prefix = ["prlimit", "--nofile=256:256"]
    d.start()
    socks = []
    try:
        d.wait_log("descriptor limit", 10)  # it says at start that 256 cannot hold 2000 sessions
        pid = d.proc.pid
        # 300 sessions from 60 loopback addresses plus 80 admin connections: above the limit.
        for i in range(300):
            try:
                s = socket.create_connection(("127.0.0.1", d.port), timeout=2,
                                             source_address=("127.0.1.%d" % (1 + i % 60), 0))
                socks.append(s)
            except OSError:
                pass
        for _ in range(80):
            try:
                socks.append(socket.create_connection(("127.0.0.1", d.admin_port), timeout=2))
            except OSError:
                pass
        time.sleep(1)
        c0 = cpu_seconds(pid)
        time.sleep(2)
        busy = cpu_seconds(pid) - c0
        assert busy < 1.0, "posternd spun at %.0f%% CPU with its descriptors full" % (busy * 50)
        assert fd_count(pid) <= 256
        for s in socks:
            s.close()
        socks = []
        # Once the clients leave it serves again: a fresh client is greeted within 2 s.
        wait_for(lambda: greeted_within(d.port, 2, source="127.0.2.1"), 20, "a greeting after the clients left")

        def api_up():
            try:
                return d.api("GET", "/api/v1/health")[0] == 200
            except OSError:
                return False
        wait_for(api_up, 20, "the admin API after the clients left")
        lines = d.log_text().count("accept paused")
        assert lines < 50, "%d 'accept paused' lines" % lines
        t0 = time.time()
        assert d.stop(timeout=15) == 0
        assert time.time() - t0 < 15
    finally:
        for s in socks:
            s.close()
        d.cleanup()


# --- next hops ------------------------------------------------------------------------------------

def test_next_hop_that_is_this_node_bounces_as_a_loop():
    d = Daemon()
    d.write_config({"routes": {"example.test": "[127.0.0.1]:%d" % d.port}})
    d.start()
    try:
        send_message(d.port, 500)
        d.wait_log("loops back to myself", 15)
        d.wait_log("dsn=5.4.6", 15)
        hops = d.log_text().count("accepted client=")
        assert hops == 1, "the message went round %d times" % hops
    finally:
        d.stop()
        d.cleanup()


def ip_cert(prefix):
    cert, key = prefix + ".crt", prefix + ".key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1", "-days", "30",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_tls_sessions_resume_and_never_cross_policies():
    from harness import Peer
    import tempfile
    tmp = tempfile.mkdtemp(prefix="postern-ipcert-")
    cert, key = ip_cert(os.path.join(tmp, "peer"))
    peer = Peer(tls=False, flags=["--cert", cert, "--key", key])
    d = Daemon()
    route = {"example.test": "[127.0.0.1]:%d" % peer.port}
    conf = {"routes": route, "outbound": {"dns_servers": ["127.0.0.1:9"], "tls": "verify", "ca_file": cert,
                                           "connection_cache_time": ""}}
    d.write_config(conf)
    d.start()
    try:
        for i in range(2):  # a new connection each time (no connection cache): the second resumes
            send_message(d.port, 300)
            wait_for(lambda: len(peer.messages()) == i + 1, 20, "delivery %d" % (i + 1))
        d.wait_log("policy=verify verified=yes resumed=yes", 10)
        assert d.log_text().count("verified=yes resumed=no") == 1, log_tail(d)
        # Under "may" the verify sessions are not offered (another key): a full handshake.
        conf["outbound"]["tls"] = "may"
        d.write_config(conf)
        d.signal(__import__("signal").SIGHUP)
        d.wait_log("reload: config applied", 10)
        send_message(d.port, 300)
        wait_for(lambda: len(peer.messages()) == 3, 20, "delivery 3")
        d.wait_log("policy=may verified=yes resumed=no", 10)
        # Back to verify with a CA that does not sign the peer: the handshake must fail even
        # though resumable sessions exist for this address (they were made under other keys or
        # are refused by verification).
        other, _ = ip_cert(os.path.join(tmp, "other"))
        conf["outbound"].update({"tls": "verify", "ca_file": other})
        d.write_config(conf)
        d.signal(__import__("signal").SIGHUP)
        time.sleep(0.5)
        d.wait_log("reload: config applied", 10)
        send_message(d.port, 300)
        d.wait_log("status=deferred", 20)
        assert len(peer.messages()) == 3
    finally:
        d.stop()
        d.cleanup()
        peer.stop() if hasattr(peer, "stop") else peer.proc.kill()


def test_greet_pause():
    d = Daemon({"smtp": {"greet_pause": "1s"}}).start()
    try:
        # A client that talks before the 220 is refused and closed (postscreen's pregreet test).
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        s.sendall(b"EHLO eager.test\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"554 5.5.1"), data
        s.close()
        # One that waits gets its greeting after the pause.
        t0 = time.time()
        c = Smtp(d.port)
        assert c.banner[0] == 220 and time.time() - t0 >= 0.9, (c.banner, time.time() - t0)
        assert c.cmd("EHLO patient.test")[0] == 250
        c.close()
        # relay.networks are never delayed.
        t0 = time.time()
        c = Smtp(d.port, source="127.0.0.2")
        assert c.banner[0] == 220 and time.time() - t0 < 0.5
        c.close()
        wait_for(lambda: metric(d, "postern_smtp_pregreet_total") == 1, 10, "the pregreet counter")
    finally:
        d.stop()
        d.cleanup()
