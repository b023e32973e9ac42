"""harness.py — runs the real posternd for end-to-end tests.

Each Daemon gets its own state directory and free loopback ports, is started from the build
tree, and is stopped by its PID. Every wait is bounded; nothing here reaches beyond 127.0.0.0/8.
"""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import hashlib
import json

BIN = os.environ.get("POSTERN_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(cond, timeout=10.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    # what may be a function: diagnostics (a peer's log, say) read when the wait has failed.
    raise AssertionError("timed out waiting for " + (what() if callable(what) else what))


def make_cert(path_prefix, cn, days=30, not_yet=False):
    """Self-signed EC certificate for tests; returns (cert, key)."""
    cert, key = path_prefix + ".crt", path_prefix + ".key"
    args = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=" + cn, "-days", str(days)]
    subprocess.run(args, check=True, capture_output=True)
    return cert, key


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Daemon:
    """posternd with its own state dir and port. sections: {"smtp": {"max_recipients": 3}, ...};
    a section's keys override the defaults below."""

    def __init__(self, sections=None, state_dir=None, port=None, deliver=True, test_clock=False):
        self.deliver = deliver
        # posternd --test-clock FILE: the daemon's time is real time + the offset in FILE.
        self.test_clock = test_clock
        self.admin_port = free_port()
        self.euq_port = free_port()
        self.dir = state_dir or tempfile.mkdtemp(prefix="postern-e2e-")
        if not state_dir:
            # mkdtemp makes it 0700; 0711 lets the postgres user (when root) keep the private
            # cluster in place. test_setup covers state directories it cannot reach.
            os.chmod(self.dir, 0o711)
        self.port = port or free_port()
        self.sections = sections or {}
        self.proc = None
        self.prefix = []  # e.g. ["prlimit", "--nofile=256"]: runs posternd under it
        self.env = None   # the environment posternd runs with (None: this process's)
        self.conf = os.path.join(self.dir, "postern.toml")
        self.write_config()

    def write_config(self, sections=None):
        if sections is not None:
            self.sections = sections
        conf = {
            "server": {"hostname": "mx.e2e.test", "state_dir": self.dir, "workers": 2,
                       "log_level": "debug", "drain_timeout": "5s"},
            "smtp": {"listen": ["127.0.0.1:%d" % self.port], "min_free_space": 0},
            "relay": {"domains": ["example.test"], "networks": ["127.0.0.2/32"]},
            # Never the machine's resolver or any address beyond loopback: every domain goes to a
            # closed loopback port unless a test routes it, and DNS to a dead local port.
            "routes": {"*": "[127.0.0.1]:9"},
            "outbound": {"dns_servers": ["127.0.0.1:9"]},
            "queue": {"deliver": self.deliver},
            "admin": {"listen": "127.0.0.1:%d" % self.admin_port},
            "euq": {"listen": "127.0.0.1:%d" % self.euq_port},
        }
        for name, keys in self.sections.items():
            conf.setdefault(name, {}).update(keys)
            for k in [k for k, v in conf[name].items() if v is None]:
                del conf[name][k]
        # Replaced atomically: a reload at any moment (a SIGHUP, the certificate watch) reads the
        # old file or the new one, never half of one.
        with open(self.conf + ".tmp", "w") as f:
            for name, keys in conf.items():
                f.write("[%s]\n" % name)
                for k, v in keys.items():
                    f.write('"%s" = %s\n' % (k, toml_value(v)))
                f.write("\n")
        os.rename(self.conf + ".tmp", self.conf)

    @property
    def clock_file(self):
        return os.path.join(self.dir, "test-clock")

    def move_clock(self, offset_seconds):
        """Sets the daemon's clock to real time + offset (test_clock=True); it notices within 100 ms."""
        assert self.test_clock, "start the Daemon with test_clock=True"
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % offset_seconds)
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.clock_file)

    @property
    def log(self):
        return os.path.join(self.dir, "log", "posternd.log")

    def start(self, expect_ok=True):
        self.out = open(os.path.join(self.dir, "stdout.txt"), "ab")
        args = self.prefix + [os.path.join(BIN, "posternd"), "--config", self.conf]
        if self.test_clock:
            args += ["--test-clock", self.clock_file]
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT, env=self.env)
        if expect_ok:
            wait_for(self._listening, 15, "posternd to listen on %d" % self.port)
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("posternd exited with %s: %s" % (self.proc.returncode, self.read_out()))
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            socket.create_connection(("127.0.0.1", self.admin_port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, text, timeout=10):
        """The log is flushed once a second: wait for a line rather than read it at once."""
        return wait_for(lambda: text in self.log_text(), timeout, "log line %r" % text)

    def read_out(self):
        with open(os.path.join(self.dir, "stdout.txt"), "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("posternd did not stop on SIGTERM")
        rc = self.proc.returncode if self.proc else 0
        self.proc = None
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pgdata = os.path.join(self.dir, "pgdata")
        stop_postmaster(pgdata)
        # A cluster out of the state directory (its pgdata is a symlink) goes with it.
        external = os.path.dirname(os.path.realpath(pgdata)) if os.path.islink(pgdata) else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        if external.startswith("/var/lib/postern-pg/"):
            shutil.rmtree(external, ignore_errors=True)

    def admin_url(self):
        return "https://127.0.0.1:%d" % self.admin_port

    def token(self):
        with open(os.path.join(self.dir, "admin.token")) as f:
            return f.read().strip()

    def api(self, method, path, token=True, timeout=10):
        """(status, parsed JSON or text) from the admin API, verifying its certificate."""
        import urllib.request
        import urllib.error
        ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "certs", "default_console.crt"))
        req = urllib.request.Request(self.admin_url() + path, method=method, data=b"" if method == "POST" else None)
        if token:
            req.add_header("Authorization", "Bearer " + (token if isinstance(token, str) else self.token()))
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
                body, status, ctype = r.read().decode(), r.status, r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            body, status, ctype = e.read().decode(), e.code, e.headers.get("Content-Type", "")
        return status, (json.loads(body) if ctype.startswith("application/json") else body)

    def ctl(self, *args):
        """posternctl against this daemon: (exit status, stdout, stderr)."""
        r = subprocess.run([os.path.join(BIN, "posternctl"), "--config", self.conf] + list(args),
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    # The spool: <qid>.msg is the message, then its envelope (JSON), then a fixed footer
    # "\nPOSTERN1 <message length> <envelope length> <crc32>\n" (hex); <qid>.env, when present,
    # is a newer envelope.
    def _active(self):
        return os.path.join(self.dir, "queue", "active")

    def queued(self):
        d = self._active()
        if not os.path.isdir(d):
            return []
        return sorted(f[:-4] for f in os.listdir(d) if f.endswith(".msg"))

    def _queue_file(self, qid):
        import zlib
        with open(os.path.join(self._active(), qid + ".msg"), "rb") as f:
            data = f.read()
        footer = data[-45:]
        assert footer.startswith(b"\nPOSTERN1 ") and footer.endswith(b"\n"), footer
        length, env_len, crc = (int(x, 16) for x in footer[10:-1].split(b" "))
        assert length + env_len + 45 == len(data)
        assert zlib.crc32(data[:length + env_len]) == crc
        return data[:length], data[length:length + env_len]

    def message(self, qid):
        return self._queue_file(qid)[0]

    def envelope(self, qid):
        import json
        newer = os.path.join(self._active(), qid + ".env")
        if os.path.exists(newer):
            with open(newer) as f:
                return json.load(f)
        return json.loads(self._queue_file(qid)[1])

    def tmp_files(self):
        """Leftovers of an interrupted commit or update (there should be none after a restart)."""
        return [f for f in os.listdir(self._active()) if f.endswith(".tmp")]

    def free_files(self):
        return [f for f in os.listdir(self._active()) if f.startswith("free-")]


class Smtp:
    """A raw SMTP client: exact bytes out, exact replies in."""

    def __init__(self, port, source="127.0.0.1", timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""
        self.banner = self.reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed; have %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def reply(self):
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def starttls(self):
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.e2e.test")
        return self.sock

    def peer_fingerprint(self):
        der = self.sock.getpeercert(binary_form=True)
        return hashlib.sha256(der).hexdigest()

    def nothing_pending(self, wait=0.5):
        """True when the server sent nothing more within `wait` seconds."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(4096)
            self.buf += data
            return False
        except (socket.timeout, ssl.SSLError, TimeoutError):
            return True
        finally:
            self.sock.settimeout(10)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def swaks(port, *args, source=None):
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--timeout", "20"]
    if source:
        cmd += ["--local-interface", source]
    cmd += list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


import contextlib


def log_tail(d, n=40):
    try:
        with open(d.log, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running(sections=None, **kw):
    """A started daemon, stopped (and its state removed) afterwards; its log printed on failure."""
    d = Daemon(sections, **kw).start()
    try:
        yield d
        if d.proc is not None:
            rc = d.stop()
            assert rc == 0, "posternd exited with %s on SIGTERM" % rc
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d)))
        raise
    finally:
        d.cleanup()


def send_message(port, rcpt="alice@example.test", sender="bob@remote.example", body="Subject: t\r\n\r\nhello\r\n",
                 tls=False, source="127.0.0.1"):
    """One complete transaction over a raw socket; returns (code, text) of the final reply."""
    c = Smtp(port, source=source)
    c.cmd("EHLO client.e2e")
    if tls:
        c.starttls()
        c.cmd("EHLO client.e2e")
    code, text = c.cmd("MAIL FROM:<%s>" % sender)
    assert code == 250, text
    code, text = c.cmd("RCPT TO:<%s>" % rcpt)
    assert code == 250, text
    code, text = c.cmd("DATA")
    assert code == 354, text
    c.send(body + ".\r\n")
    r = c.reply()
    c.cmd("QUIT")
    c.close()
    return r


# ---- test peers: stand-ins for the outside world (tests/peers) ----

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers")
# Debian's python3 has the packages scripts/install-deps installs (python3-dnslib).
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


class Peer:
    """tests/peers/smtp_peer.py on 127.0.0.x: stores what it receives, answers as told."""

    def __init__(self, host="127.0.0.1", port=None, tls=True, flags=(), control=None):
        self.dir = tempfile.mkdtemp(prefix="postern-peer-")
        self.host, self.port = host, port or free_port()
        self.control_path = os.path.join(self.dir, "control.json")
        self.set_control(control or {})
        args = [PYTHON, os.path.join(PEERS, "smtp_peer.py"), "--listen", "%s:%d" % (host, self.port),
                "--dir", os.path.join(self.dir, "mail"), "--control", self.control_path]
        if tls:
            self.cert, self.key = make_cert(os.path.join(self.dir, "peer"), "peer.test")
            args += ["--cert", self.cert, "--key", self.key]
        args += list(flags)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline()
        assert b"ready" in line, "smtp peer did not start: %r" % line

    def set_control(self, control):
        with open(self.control_path, "w") as f:
            json.dump(control, f)

    def messages(self):
        d = os.path.join(self.dir, "mail")
        out = []
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if name.endswith(".json"):
                with open(os.path.join(d, name)) as f:
                    meta = json.load(f)
                with open(os.path.join(d, name[:-5] + ".eml"), "rb") as f:
                    meta["body"] = f.read()
                out.append(meta)
        return out

    def commands(self):
        try:
            with open(os.path.join(self.dir, "mail", "commands.log")) as f:
                return [json.loads(l) for l in f if l.strip()]
        except OSError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class DnsPeer:
    """tests/peers/dns_peer.py on 127.0.0.1: answers from a zone the test writes."""

    def __init__(self, zone):
        self.dir = tempfile.mkdtemp(prefix="postern-dns-")
        self.port = free_udp_port()
        self.zone_path = os.path.join(self.dir, "zone.json")
        self.set_zone(zone)
        self.proc = subprocess.Popen([PYTHON, os.path.join(PEERS, "dns_peer.py"), "--listen",
                                      "127.0.0.1:%d" % self.port, "--zone", self.zone_path],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline()
        assert b"ready" in line, "dns peer did not start: %r" % line

    def set_zone(self, zone):
        with open(self.zone_path, "w") as f:
            json.dump(zone, f)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_postmaster(pgdata):
    """Stops a PostgreSQL left running in pgdata (after a kill -9 of its posternd)."""
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as f:
            pid = int(f.readline())
        os.kill(pid, signal.SIGQUIT)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
    except (OSError, ValueError):
        pass


def as_postgres(args):
    """Runs a PostgreSQL tool as the unprivileged postgres user when we are root."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


class ExternalPostgres:
    """A PostgreSQL cluster of the test's own (unix socket only), for database.url tests."""

    def __init__(self):
        import glob
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.dir = tempfile.mkdtemp(prefix="postern-pg-")
        os.chmod(self.dir, 0o755)
        self.data, self.sock = os.path.join(self.dir, "data"), os.path.join(self.dir, "sock")
        for d in (self.data, self.sock):
            os.mkdir(d, 0o700)
            if os.geteuid() == 0:
                shutil.chown(d, "postgres", "postgres")
        r = as_postgres([self.bin + "/initdb", "-D", self.data, "-U", "postern", "-A", "trust", "--no-sync"])
        assert r.returncode == 0, r.stdout + r.stderr
        self.start()

    @property
    def url(self):
        return "host=%s dbname=postgres user=postern connect_timeout=3" % self.sock

    def start(self):
        r = as_postgres([self.bin + "/pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.sock, "log"),
                         "-o", "-k %s -c listen_addresses=''" % self.sock, "start"])
        assert r.returncode == 0, r.stdout + r.stderr

    def stop(self):
        as_postgres([self.bin + "/pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop"])

    def cleanup(self):
        self.stop()
        stop_postmaster(self.data)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cert_fingerprint(path):
    der = subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"], capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest()
