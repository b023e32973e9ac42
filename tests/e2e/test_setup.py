"""End-to-end tests of setting up and starting: the private PostgreSQL wherever the state
directory is (below a 0700 directory, as a root user's clone in /root is), what stands in the
way said in one line, scripts/run's "listening on" and its reasons, a stale postmaster.pid that
names an unrelated process, and signals during start-up."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import harness
from harness import Daemon, Peer, log_tail, send_message, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0


def cluster_uid():
    return pwd.getpwnam("postgres").pw_uid if IS_ROOT else os.geteuid()


def db_up(d):
    try:
        return d.api("GET", "/api/v1/health", timeout=5)[1].get("database") == "up"
    except OSError:
        return False


def postmaster_pid(d):
    with open(os.path.join(d.dir, "pgdata", "postmaster.pid")) as f:
        return int(f.readline())


def alive(pid):
    """True while pid is a live process (not a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])  # effective
    return -1


def children(pid):
    """(pid, command name) of the processes whose parent is pid."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                st = f.read()
        except OSError:
            continue
        comm, rest = st[st.index("(") + 1:st.rindex(")")], st[st.rindex(")") + 2:].split()
        if int(rest[1]) == pid:
            out.append((int(e), comm))
    return out


def private_parent():
    """A 0700 directory, as /root is; the state directory goes below it."""
    parent = tempfile.mkdtemp(prefix="postern-setup-")
    assert os.stat(parent).st_mode & 0o777 == 0o700
    state = os.path.join(parent, "var")
    os.mkdir(state)
    return parent, state


class ScriptsRun:
    """scripts/run with the built binaries (POSTERN_BIN: no install, no build), output to a file."""

    def __init__(self, d):
        self.d = d
        self.out_path = os.path.join(tempfile.mkdtemp(prefix="postern-run-"), "out.txt")
        env = dict(os.environ, POSTERN_BIN=harness.BIN, POSTERN_RUN_TIMEOUT="60")
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen([os.path.join(ROOT, "scripts", "run"), "--config", d.conf],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)

    def text(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("scripts/run did not finish:\n" + self.text())

    def posternd_pid(self):
        try:
            with open(os.path.join(self.d.dir, "posternd.pid")) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def cleanup(self):
        """Stops scripts/run (which stops posternd); by PID if it will not."""
        pid = self.posternd_pid()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if pid and alive(pid) and pid in [p for p, _ in children(self.proc.pid)] + [pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(os.path.dirname(self.out_path), ignore_errors=True)


def test_state_dir_below_a_0700_directory_gets_a_working_private_cluster():
    parent, state = private_parent()
    peer = Peer(tls=False)
    d = Daemon({"routes": {"example.test": "[127.0.0.1]:%d" % peer.port}}, state_dir=state)
    other = Daemon(state_dir=tempfile.mkdtemp(prefix="postern-e2e-"))
    moved, m = os.path.join(parent, "moved"), None
    try:
        d.start()
        wait_for(lambda: db_up(d), 30, "the database up")
        assert send_message(d.port)[0] == 250
        wait_for(lambda: len(peer.messages()) == 1, 15, "the message delivered")
        pgdata = os.path.join(state, "pgdata")
        pm = postmaster_pid(d)
        assert proc_uid(pm) == cluster_uid()
        if IS_ROOT:
            # postgres cannot enter the parent: the cluster lives where it can, recorded by a link.
            assert os.path.islink(pgdata), os.listdir(state)
            target = os.path.realpath(pgdata)
            assert target.startswith("/var/lib/postern-pg/"), target
            assert os.stat(target).st_uid == cluster_uid() and os.stat(target).st_mode & 0o777 == 0o700
            assert "cannot enter %s (mode 0700, owner root)" % parent in d.log_text()
            # A second posternd whose record points at the same cluster must neither share nor
            # stop it.
            os.symlink(target, os.path.join(other.dir, "pgdata"))
            other.start(expect_ok=False)
            assert other.proc.wait(30) == 1
            assert "is in use by another posternd (pid %d)" % d.proc.pid in other.read_out()
            os.unlink(os.path.join(other.dir, "pgdata"))
            assert alive(pm) and db_up(d)
        assert d.stop() == 0
        wait_for(lambda: not alive(pm), 10, "the cluster stopped with posternd")
        # The data is durable and the same cluster is used again.
        d.start()
        wait_for(lambda: db_up(d), 30, "the database up again")
        status, events = d.api("GET", "/api/v1/events?limit=100")
        assert status == 200 and [e["code"] for e in events].count("NODE_STARTED") == 2, events
        assert d.stop() == 0
        # The state directory moves: its cluster goes with it (the record is a symlink).
        os.rename(state, moved)
        m = Daemon(state_dir=moved)
        m.start()
        wait_for(lambda: db_up(m), 30, "the database up after the move")
        status, events = m.api("GET", "/api/v1/events?limit=100")
        assert status == 200 and [e["code"] for e in events].count("NODE_STARTED") == 3, events
        if IS_ROOT:
            with open(os.path.join(os.path.dirname(target), "state_dir")) as f:
                assert f.read().strip() == moved
        assert m.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(m or d))
        raise
    finally:
        if m:
            m.cleanup()
        other.cleanup()
        d.cleanup()
        peer.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_stale_postmaster_pid_naming_an_unrelated_process_leaves_it_alone():
    d = Daemon()
    sleeps = []
    try:
        d.start()
        wait_for(lambda: db_up(d), 30, "the database up")
        # postmaster.pid and the socket's lock file, as a postmaster writes them.
        files = {os.path.join(d.dir, "pgdata", "postmaster.pid"): None,
                 os.path.join(d.dir, "pgsock", ".s.PGSQL.5432.lock"): None}
        for path in files:
            with open(path) as f:
                files[path] = f.read().split("\n")
        assert d.stop() == 0
        # One sleep as the cluster's user (PostgreSQL itself would refuse to start while the file
        # names it), and one as root when we are root (the case).
        users = [{"user": "postgres", "group": "postgres", "extra_groups": []}] if IS_ROOT else [{}]
        users += [{}] if IS_ROOT else []
        for kw in users:
            sleep = subprocess.Popen(["sleep", "300"], **kw)
            sleeps.append(sleep)
            for path, lines in files.items():
                with open(path, "w") as f:
                    f.write("\n".join([str(sleep.pid)] + lines[1:]))
            mark = len(d.log_text())
            d.start()
            wait_for(lambda: db_up(d), 30, "the database up")
            assert sleep.poll() is None and alive(sleep.pid), "posternd signalled the sleep"
            assert postmaster_pid(d) != sleep.pid
            assert d.log_text()[mark:].count("names pid %d, which is not this cluster's postmaster" % sleep.pid) == 2
            assert d.stop() == 0
            assert sleep.poll() is None
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d))
        raise
    finally:
        for s in sleeps:
            s.kill()
            s.wait()
        d.cleanup()


def test_a_leftover_postmaster_of_this_cluster_is_stopped_and_replaced():
    d = Daemon()
    try:
        d.start()
        wait_for(lambda: db_up(d), 30, "the database up")
        pm = postmaster_pid(d)
        d.kill9()  # posternd dies, its cluster stays
        assert alive(pm)
        d.start()
        wait_for(lambda: db_up(d), 30, "the database up")
        assert not alive(pm) and postmaster_pid(d) != pm
        assert "stopping a leftover private PostgreSQL (pid %d)" % pm in d.log_text()
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d))
        raise
    finally:
        d.cleanup()


def test_sighup_while_initdb_runs_does_not_kill_the_daemon():
    d = Daemon()
    try:
        d.start(expect_ok=False)

        def initdb():
            if d.proc.poll() is not None:
                raise AssertionError("posternd exited with %s: %s" % (d.proc.returncode, d.read_out()))
            return [p for p, comm in children(d.proc.pid) if comm == "initdb"]
        wait_for(initdb, 30, "initdb to run")
        sent = 0
        while initdb() and sent < 3:
            d.signal(signal.SIGHUP)
            sent += 1
            time.sleep(0.05)
        assert sent >= 1
        wait_for(d._listening, 60, "posternd to listen after the SIGHUP")
        wait_for(lambda: db_up(d), 30, "the database up")
        d.wait_log("reload requested by SIGHUP")
        assert d.proc.poll() is None
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d))
        raise
    finally:
        d.cleanup()


def test_a_second_posternd_on_the_same_state_dir_is_refused():
    d = Daemon()
    try:
        d.start()
        wait_for(lambda: db_up(d), 30, "the database up")
        pm = postmaster_pid(d)
        out = open(os.path.join(d.dir, "second.txt"), "wb")
        second = subprocess.run([os.path.join(harness.BIN, "posternd"), "--config", d.conf], stdout=out,
                                stderr=subprocess.STDOUT, timeout=30)
        with open(os.path.join(d.dir, "second.txt")) as f:
            text = f.read()
        assert second.returncode == 1, text
        assert "another posternd (pid %d) is running with the state directory %s" % (d.proc.pid, d.dir) in text
        assert alive(pm) and db_up(d) and send_message(d.port)[0] == 250
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d))
        raise
    finally:
        d.cleanup()


def test_scripts_run_prints_listening_once_it_listens_and_stops_on_sigterm():
    d = Daemon()
    run = ScriptsRun(d)
    try:
        wait_for(lambda: "listening on" in run.text() or run.proc.poll() is not None, 60, "listening on")
        text = run.text()
        assert "scripts/run: listening on SMTP 127.0.0.1:%d and https://127.0.0.1:%d/api/v1/" % (
            d.port, d.admin_port) in text, text
        # Printed once, and only when both really accept connections.
        assert text.count("listening on") == 1
        assert send_message(d.port)[0] == 250
        wait_for(lambda: db_up(d), 30, "the database up")
        posternd, pm = run.posternd_pid(), postmaster_pid(d)
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0, run.text()
        assert not alive(posternd) and not alive(pm)
        assert "SIGTERM: draining" in d.log_text()
    finally:
        run.cleanup()
        d.cleanup()


def test_scripts_run_says_why_posternd_did_not_come_up():
    d = Daemon()
    taken = socket.socket()
    taken.bind(("127.0.0.1", d.admin_port))
    taken.listen(1)
    run = ScriptsRun(d)
    try:
        rc = run.wait(60)
        text = run.text()
        assert rc != 0 and "listening on" not in text, text
        last = text.strip().splitlines()[-1]
        assert last.startswith("scripts/run: posternd exited (status 1) before listening: posternd: "), text
        assert "cannot listen on 127.0.0.1:%d" % d.admin_port in last, text
        # The private cluster it had started is stopped again.
        pidfile = os.path.join(d.dir, "pgdata", "postmaster.pid")
        assert not os.path.exists(pidfile) or not alive(postmaster_pid(d))
    finally:
        taken.close()
        run.cleanup()
        d.cleanup()


def test_a_cluster_the_postgres_user_cannot_reach_is_reported_with_the_fix():
    if not IS_ROOT:
        print("(skipped: only root runs the cluster as another user)")
        return
    parent = tempfile.mkdtemp(prefix="postern-setup-")
    os.chmod(parent, 0o711)
    state = os.path.join(parent, "var")
    os.mkdir(state)
    d = Daemon(state_dir=state)
    run = None
    try:
        # A cluster made in place while the parent was open, then the parent closed (a clone
        # moved under /root, a home directory made private).
        d.start()
        wait_for(lambda: db_up(d), 30, "the database up")
        assert not os.path.islink(os.path.join(state, "pgdata"))
        assert d.stop() == 0
        os.chmod(parent, 0o700)
        run = ScriptsRun(d)
        assert run.wait(60) != 0
        text = run.text()
        why = ("posternd: private PostgreSQL: the postgres user, which runs the private cluster, cannot reach "
               "%s/pgdata: it may not enter %s (mode 0700, owner root); fix: chmod o+x %s" % (state, parent, parent))
        assert why in text.strip().splitlines()[-1], text
        assert why[len("posternd: "):] in d.log_text()
        # The fix it names works.
        subprocess.run(["chmod", "o+x", parent], check=True)
        run.cleanup()
        run = ScriptsRun(d)
        wait_for(lambda: "listening on" in run.text() or run.proc.poll() is not None, 60, "listening on")
        assert "listening on" in run.text(), run.text()
        wait_for(lambda: db_up(d), 30, "the database up")
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0, run.text()
    except BaseException:
        print("---- posternd log tail ----\n" + log_tail(d))
        raise
    finally:
        if run:
            run.cleanup()
        d.cleanup()
        shutil.rmtree(parent, ignore_errors=True)
