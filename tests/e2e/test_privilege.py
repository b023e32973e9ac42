"""End-to-end tests of the privilege drop (README "Running as a service"): posternd started as
root binds a port below 1024, then runs as server.user with no capability left in any thread
(checked in /proc), relays mail from that port to a peer, keeps its state directory and keys
to itself, reloads on SIGHUP, and follows a certbot-style certificate its user reads through a
group; a certificate the user cannot read, an unknown user and a state directory that is not
Postern's are refused in one line; a state directory of an earlier run as root is taken over
(its private PostgreSQL with it); conf/postern.service passes `systemd-analyze verify`.

Needs root for everything but the unit and the refusals (it says so and skips). It creates the
system user postern-e2e (group postern-e2e) and the group postern-e2e-certs (postern-e2e is a
member) when they are missing, and leaves them: other runs may be using them. Never the name
"postern" itself: that user would make every other suite's posternd switch to it.
"""
import glob
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import harness
from harness import Daemon, Peer, Smtp, cert_fingerprint, log_tail, make_cert, send_message, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0
USER, CERTS_GROUP = "postern-e2e", "postern-e2e-certs"


def skip_unless_root(what):
    if IS_ROOT:
        return False
    print("(skipped: %s needs root: posternd must be started as root to switch users and bind a port below 1024)"
          % what)
    return True


def ensure_user():
    """(uid, gid, certs gid) of the test's service user, made if missing."""
    def run(*args):
        r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, "%s: %s" % (" ".join(args), r.stderr)
    try:
        grp.getgrnam(CERTS_GROUP)
    except KeyError:
        run("groupadd", "--system", CERTS_GROUP)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        run("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin", USER)
    if USER not in grp.getgrnam(CERTS_GROUP).gr_mem:
        run("gpasswd", "-a", USER, CERTS_GROUP)
    pw = pwd.getpwnam(USER)
    return pw.pw_uid, pw.pw_gid, grp.getgrnam(CERTS_GROUP).gr_gid


def low_port():
    """A free port below 1024 on 127.0.0.1: 25 when nothing holds it."""
    for port in (25, 587, 465, 24, 26, 1023):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port below 1024 on 127.0.0.1")


class Certbot:
    """A certbot-like tree: root:CERTS_GROUP directories 0750, live/mx/*.pem -> ../../archive/mx/*N.pem,
    private keys 0640 root:CERTS_GROUP (certbot keeps the group and its read bit on renewal)."""

    def __init__(self, group_readable=True):
        self.dir = tempfile.mkdtemp(prefix="postern-le-")
        os.chmod(self.dir, 0o755)
        gid = grp.getgrnam(CERTS_GROUP).gr_gid if group_readable else 0
        self.live, self.archive = os.path.join(self.dir, "live", "mx"), os.path.join(self.dir, "archive", "mx")
        for d in (os.path.join(self.dir, "live"), os.path.join(self.dir, "archive"), self.live, self.archive):
            os.makedirs(d, exist_ok=True)
            os.chown(d, 0, gid)
            os.chmod(d, 0o750 if group_readable else 0o700)
        self.gid, self.n = gid, 0
        self.renew()

    @property
    def cert(self):
        return os.path.join(self.live, "fullchain.pem")

    @property
    def key(self):
        return os.path.join(self.live, "privkey.pem")

    def renew(self):
        """A new certificate and key in archive/, then the live links re-pointed (as certbot does)."""
        self.n += 1
        tmp = tempfile.mkdtemp(prefix="postern-le-new-")
        c, k = make_cert(os.path.join(tmp, "x"), "mx%d.e2e.test" % self.n)
        chain, key = os.path.join(self.archive, "fullchain%d.pem" % self.n), os.path.join(self.archive, "privkey%d.pem" % self.n)
        shutil.copy(c, chain)
        shutil.copy(k, key)
        shutil.rmtree(tmp)
        os.chown(chain, 0, self.gid)
        os.chmod(chain, 0o644)
        os.chown(key, 0, self.gid)
        os.chmod(key, 0o640 if self.gid else 0o600)
        for name, target in (("fullchain.pem", "fullchain%d.pem"), ("privkey.pem", "privkey%d.pem")):
            link = os.path.join(self.live, name)
            tmp_link = link + ".new"
            os.symlink("../../archive/mx/" + target % self.n, tmp_link)
            os.rename(tmp_link, link)
        return cert_fingerprint(chain)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def status(pid, tid=None):
    path = "/proc/%d/status" % pid if tid is None else "/proc/%d/task/%s/status" % (pid, tid)
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def check_dropped(pid, uid, gid, certs_gid):
    """Every thread of pid: all uids and gids the user's, its groups, no capability, NoNewPrivs."""
    tids = os.listdir("/proc/%d/task" % pid)
    assert len(tids) > 1, tids  # the workers and the committer are threads: all of them are checked
    for tid in tids:
        st = status(pid, tid)
        assert st["Uid"] == [str(uid)] * 4, (tid, st["Uid"])
        assert st["Gid"] == [str(gid)] * 4, (tid, st["Gid"])
        assert str(certs_gid) in st["Groups"] and "0" not in st["Groups"], (tid, st["Groups"])
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(st[cap][0], 16) == 0, (tid, cap, st[cap])
        assert st["NoNewPrivs"] == ["1"], (tid, st["NoNewPrivs"])


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def postmaster(d):
    with open(os.path.join(d.dir, "pgdata", "postmaster.pid")) as f:
        return int(f.readline())


def db_up(d):
    try:
        return d.api("GET", "/api/v1/health", timeout=5)[1].get("database") == "up"
    except OSError:
        return False


def starttls_fingerprint(port):
    c = Smtp(port)
    c.cmd("EHLO client.e2e")
    c.starttls()
    fp = c.peer_fingerprint()
    c.cmd("QUIT")
    c.close()
    return fp


def test_drop_to_user_low_port_relay_reload_and_cert_watch():
    if skip_unless_root("the drop"):
        return
    uid, gid, certs_gid = ensure_user()
    le, peer = Certbot(), Peer()
    port = low_port()
    d = Daemon({"server": {"user": USER},
                "smtp": {"tls_cert_file": le.cert, "tls_key_file": le.key},
                "routes": {"example.test": "[127.0.0.1]:%d" % peer.port}}, port=port)
    os.chown(d.dir, uid, gid)  # as an admin prepares /var/lib/postern (install -d -o postern)
    try:
        d.start()
        pid = d.proc.pid
        wait_for(lambda: db_up(d), 60, "the private PostgreSQL to be up")
        check_dropped(pid, uid, gid, certs_gid)
        assert int(status(pid)["CapBnd"][0], 16) == 1 << 10  # CAP_NET_BIND_SERVICE at most, ever
        d.wait_log("privileges: running as %s" % USER)
        # The private PostgreSQL runs as the user too (posternd can restart and stop it).
        pg = status(postmaster(d))
        assert pg["Uid"] == [str(uid)] * 4, pg["Uid"]
        assert int(pg["CapEff"][0], 16) == 0 and pg["NoNewPrivs"] == ["1"], pg

        # posternd, no longer root, still restarts its PostgreSQL when it dies (as the user).
        old_pg = postmaster(d)
        os.kill(old_pg, signal.SIGKILL)
        wait_for(lambda: not os.path.exists("/proc/%d" % old_pg) or status(old_pg)["State"][0] == "Z", 10, "the kill")
        d.wait_log("database: private PostgreSQL exited")
        wait_for(lambda: db_up(d) and postmaster(d) != old_pg, 60, "the private PostgreSQL restarted by posternd")
        assert status(postmaster(d))["Uid"] == [str(uid)] * 4

        # SMTP on the low port, STARTTLS with the group-readable certificate, relayed to the peer.
        assert starttls_fingerprint(port) == cert_fingerprint(le.cert)
        code, text = send_message(port, rcpt="alice@example.test", tls=True)
        assert code == 250, text
        wait_for(lambda: len(peer.messages()) == 1, 30, "delivery to the peer")
        m = peer.messages()[0]
        assert m["rcpts"] == ["TO:<alice@example.test>"] and m["tls"] is True, m

        # The state directory and the secrets are the user's alone.
        assert os.stat(d.dir).st_uid == uid and mode(d.dir) == 0o700, oct(mode(d.dir))
        secrets = [os.path.join(d.dir, "admin.token")] + glob.glob(os.path.join(d.dir, "certs", "*.key"))
        if os.path.exists(os.path.join(d.dir, "node.key")):
            secrets.append(os.path.join(d.dir, "node.key"))
        assert len(secrets) >= 3, secrets
        for f in secrets:
            assert os.stat(f).st_uid == uid and mode(f) == 0o600, (f, oct(mode(f)))
        for sub in ("queue", "certs", "log", "pgdata"):
            p = os.path.join(d.dir, sub)
            assert os.lstat(p).st_uid == uid and not mode(p) & 0o077, (sub, os.lstat(p).st_uid, oct(mode(p)))
        for root, dirs, files in os.walk(d.dir):
            for name in dirs + files:
                p = os.path.join(root, name)
                if os.path.basename(p) in ("postern.toml", "stdout.txt"):
                    continue  # the harness's, made by root before the start
                assert os.lstat(p).st_uid == uid, p

        # SIGHUP still reloads (the config and the certificate files are read as the user);
        # a new port below 1024 is said to need a restart.
        other = low_port_other(port)
        d.write_config(dict(d.sections, smtp=dict(d.sections["smtp"], listen=["127.0.0.1:%d" % port,
                                                                             "127.0.0.1:%d" % other])))
        d.signal(signal.SIGHUP)
        d.wait_log("reload requested by SIGHUP")
        d.wait_log("cannot bind ports below 1024 itself")
        d.wait_log("reload: config applied")
        assert "reload: config refused" not in d.log_text()
        code, _ = d.api("POST", "/api/v1/reload")
        assert code == 200

        # certbot renews: the link is re-pointed to files the user reads through the group; the
        # watch (running as the user) serves the new certificate without a signal.
        new_fp = le.renew()
        wait_for(lambda: starttls_fingerprint(port) == new_fp, 20, "the renewed certificate to be served")
        d.wait_log("reload requested by file change")

        assert d.proc.poll() is None
        pg_pid = postmaster(d)
        assert d.stop() == 0
        assert not os.path.exists("/proc/%d" % pg_pid) or status(pg_pid).get("State", ["Z"])[0] == "Z"
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s\n%s" % (d.dir, log_tail(d, 60), d.read_out()))
        raise
    finally:
        d.cleanup()
        peer.cleanup()
        le.cleanup()


def low_port_other(used):
    for port in (587, 465, 24, 26, 1023, 25):
        if port == used:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    return 1022


def wait_exit(d, timeout=60):
    try:
        d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("posternd did not exit: " + d.read_out())
    rc = d.proc.returncode
    d.proc = None
    return rc


def test_refuses_certificate_the_user_cannot_read():
    if skip_unless_root("the drop"):
        return
    uid, gid, _ = ensure_user()
    le = Certbot(group_readable=False)  # certbot's default: root only
    d = Daemon({"server": {"user": USER}, "smtp": {"tls_cert_file": le.cert, "tls_key_file": le.key}})
    os.chown(d.dir, uid, gid)
    try:
        d.start(expect_ok=False)
        rc = wait_exit(d)
        out = d.read_out()
        assert rc == 1, (rc, out)
        assert "posternd runs as %s, which cannot" % USER in out and "postern-certs" in out, out
        assert le.dir in out, out
    finally:
        d.cleanup()
        le.cleanup()


def test_refuses_unknown_user_and_foreign_state_dir():
    # As root: no such user. Not as root: cannot switch. Either way one line and exit 1.
    d = Daemon({"server": {"user": "no-such-user-e2e"}})
    try:
        d.start(expect_ok=False)
        rc = wait_exit(d)
        out = d.read_out()
        assert rc == 1, (rc, out)
        assert ("there is no such user" if IS_ROOT else "cannot switch users") in out, out
    finally:
        d.cleanup()
    if skip_unless_root("a state directory given to the user"):
        return
    ensure_user()
    # A directory that holds someone's files and no posternd.pid is never chowned.
    d = Daemon({"server": {"user": USER}})
    victim = os.path.join(d.dir, "someones-file")
    with open(victim, "w") as f:
        f.write("x")
    try:
        d.start(expect_ok=False)
        rc = wait_exit(d)
        out = d.read_out()
        assert rc == 1 and "is not a Postern state directory" in out, (rc, out)
        assert os.stat(victim).st_uid == 0 and os.stat(d.dir).st_uid == 0
    finally:
        d.cleanup()


def test_state_dir_the_user_cannot_reach_is_refused_untouched():
    """Below a 0700 directory of root's (a clone in /root): refused before anything is chowned."""
    if skip_unless_root("the drop"):
        return
    ensure_user()
    locked = tempfile.mkdtemp(prefix="postern-e2e-locked-")  # 0700, root's
    state = os.path.join(locked, "state")
    os.mkdir(state, 0o755)
    open(os.path.join(state, "posternd.pid"), "w").close()  # a state directory of an earlier run
    d = Daemon({"server": {"user": USER}}, state_dir=state)
    try:
        d.start(expect_ok=False)
        rc = wait_exit(d)
        out = d.read_out()
        assert rc == 1, (rc, out)
        assert "cannot reach the state directory %s: it may not enter %s" % (state, locked) in out, out
        assert all(os.lstat(os.path.join(state, f)).st_uid == 0 for f in os.listdir(state))
        assert os.stat(state).st_uid == 0
    finally:
        d.cleanup()
        shutil.rmtree(locked, ignore_errors=True)


def test_takes_over_state_dir_of_a_root_run():
    """A state directory made by posternd running as root (its cluster run by postgres) is given
    to the user at the next start as root with server.user set: queue, keys, cluster."""
    if skip_unless_root("the drop"):
        return
    uid, gid, certs_gid = ensure_user()
    d = Daemon({"server": {"user": "root"}}, deliver=False)
    try:
        d.start()
        wait_for(lambda: db_up(d), 60, "the private PostgreSQL to be up")
        assert status(d.proc.pid)["Uid"][1] == "0"
        assert os.stat(os.path.join(d.dir, "pgdata")).st_uid == pwd.getpwnam("postgres").pw_uid
        code, text = send_message(d.port, rcpt="alice@example.test")
        assert code == 250, text
        qid = d.queued()[0]
        assert d.stop() == 0

        # What is never followed or given away: a symlink to a file elsewhere, a hard link to one.
        outside = tempfile.mkdtemp(prefix="postern-e2e-outside-")
        victims = [os.path.join(outside, "by-symlink"), os.path.join(outside, "by-hardlink")]
        for v in victims:
            with open(v, "w") as f:
                f.write("root's\n")
        os.symlink(victims[0], os.path.join(d.dir, "queue", "planted-symlink"))
        os.link(victims[1], os.path.join(d.dir, "queue", "planted-hardlink"))

        d.write_config({"server": {"user": USER}})
        d.start()
        wait_for(lambda: db_up(d), 60, "the private PostgreSQL to be up as " + USER)
        check_dropped(d.proc.pid, uid, gid, certs_gid)
        assert status(postmaster(d))["Uid"] == [str(uid)] * 4
        assert d.queued() == [qid]
        assert mode(d.dir) == 0o700
        d.wait_log("entries given to %s:" % USER)
        d.wait_log("files with other hard links, not given to %s: 1" % USER)
        assert [os.stat(v).st_uid for v in victims] == [0, 0]
        assert os.lstat(os.path.join(d.dir, "queue", "planted-symlink")).st_uid == uid  # the link itself
        shutil.rmtree(outside)
        code, body = d.api("GET", "/api/v1/queue")
        assert code == 200 and [m["queue_id"] for m in body["messages"]] == [qid], body
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d, 60)))
        raise
    finally:
        d.cleanup()


def test_unit_style_start_as_the_user_with_the_ambient_capability():
    """What conf/postern.service does, without systemd: posternd started as the user with
    CAP_NET_BIND_SERVICE ambient and no_new_privs (setpriv), state directory the user's. It binds
    the low port, relays, and its private PostgreSQL runs without the capability."""
    if skip_unless_root("starting as the user with a capability"):
        return
    setpriv = shutil.which("setpriv")
    if not setpriv:
        print("(skipped: no setpriv (util-linux))")
        return
    uid, gid, certs_gid = ensure_user()
    peer = Peer()
    port = low_port()
    d = Daemon({"routes": {"example.test": "[127.0.0.1]:%d" % peer.port}}, port=port)
    os.chown(d.dir, uid, gid)  # StateDirectory=postern
    d.prefix = [setpriv, "--reuid", str(uid), "--regid", str(gid), "--init-groups", "--inh-caps", "+net_bind_service",
                "--ambient-caps", "+net_bind_service", "--no-new-privs", "--"]
    try:
        d.start()
        wait_for(lambda: db_up(d), 60, "the private PostgreSQL to be up")
        st = status(d.proc.pid)
        assert st["Uid"] == [str(uid)] * 4 and str(certs_gid) in st["Groups"], st
        assert int(st["CapEff"][0], 16) == 1 << 10 and st["NoNewPrivs"] == ["1"], st  # CAP_NET_BIND_SERVICE
        assert int(st["CapAmb"][0], 16) == 0, st  # cleared at start: not handed to children
        pg = status(postmaster(d))
        assert pg["Uid"] == [str(uid)] * 4, pg
        for cap in ("CapPrm", "CapEff", "CapAmb"):
            assert int(pg[cap][0], 16) == 0, (cap, pg)
        assert mode(d.dir) == 0o700
        code, text = send_message(port, rcpt="alice@example.test")
        assert code == 250, text
        wait_for(lambda: len(peer.messages()) == 1, 30, "delivery to the peer")
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s\n%s" % (d.dir, log_tail(d, 60), d.read_out()))
        raise
    finally:
        d.cleanup()
        peer.cleanup()


def test_systemd_unit_verifies():
    exe = shutil.which("systemd-analyze")
    if not exe:
        print("(skipped: no systemd-analyze; install the systemd package)")
        return
    unit = os.path.join(ROOT, "conf", "postern.service")
    with open(unit) as f:
        text = f.read()
    for key in ("User=postern", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/postern", "ProtectHome=yes",
                "PrivateTmp=yes", "PrivateDevices=yes", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
                "LimitNOFILE="):
        assert re.search("^" + re.escape(key), text, re.M), key
    # verify wants ExecStart's binary to exist: the copy runs this build's posternd.
    tmp = tempfile.mkdtemp(prefix="postern-unit-")
    try:
        copy = os.path.join(tmp, "postern.service")
        with open(copy, "w") as f:
            f.write(re.sub(r"^ExecStart=\S+", "ExecStart=" + os.path.abspath(os.path.join(harness.BIN, "posternd")),
                           text, flags=re.M))
        r = subprocess.run([exe, "verify", copy], capture_output=True, text=True, timeout=120, cwd=tmp)
        # verify exits 0 on unknown keys and bad values too: any output is a finding.
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
        r = subprocess.run([exe, "security", "--offline=true", copy], capture_output=True, text=True, timeout=120,
                           cwd=tmp)
        m = re.search(r"Overall exposure level for postern.service: ([0-9.]+)", r.stdout + r.stderr)
        if m:
            print("systemd-analyze security: exposure %s" % m.group(1))
            assert float(m.group(1)) <= 2.0, r.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
