"""test_certs.py — the certificate store end to end (issue 10): import in every key format and
each refusal's reason, the CSR flow (signed by a test CA here, served with its intermediate on
STARTTLS and as the outbound client certificate), an expired certificate refused while the old one
keeps serving, backup / wipe / restore, export and re-import elsewhere, the consoles' own
certificates and seed 000's workaround A, two nodes on one database, and a start without the
database serving the cached bindings.

Certificates come from tests/fixtures/make-test-certs, run fresh for every test module.
"""
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from harness import Daemon, ExternalPostgres, Peer, Smtp, log_tail, send_message, wait_for

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
_CERTS = None


def certs():
    global _CERTS
    if _CERTS is None:
        _CERTS = tempfile.mkdtemp(prefix="postern-certs-")
        subprocess.run([os.path.join(FIXTURES, "make-test-certs"), _CERTS], check=True, capture_output=True)
        for name, text in (("keypass", "test pass\n"), ("p12pass", "p12 pass\n"), ("badpass", "wrong pass\n"),
                           ("backuppass", "backup password 1\n")):
            with open(os.path.join(_CERTS, name), "w") as f:
                f.write(text)
    return _CERTS


def c(name):
    return os.path.join(certs(), name)


def fp_of(pem_path):
    """SHA-256 of a PEM certificate, as the store prints it (AB:CD:...)."""
    out = subprocess.run(["openssl", "x509", "-in", pem_path, "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def hexfp(colon_fp):
    return colon_fp.replace(":", "").lower()


def api(d, method, path, body=None):
    """The admin API without verifying the server (the tests check what it serves separately)."""
    import urllib.request
    import urllib.error
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(d.admin_url() + path, method=method, data=data)
    req.add_header("Authorization", "Bearer " + d.token())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def ctl(d, *args):
    return d.ctl(*args)


def ok(r):
    rc, out, err = r
    assert rc == 0, "posternctl failed: %s %s" % (out, err)
    return out


def entries(d):
    return {e["name"]: e for e in json.loads(ok(ctl(d, "--json", "cert", "list")))}


def roles(d):
    return {r["role"]: r for r in json.loads(ok(ctl(d, "--json", "role", "list")))}


def wait_store(d, timeout=30):
    """The database is up and the default entries are in the store."""
    def ready():
        rc, out, _ = ctl(d, "--json", "cert", "list")
        return rc == 0 and {"default_mta", "default_console"} <= {e["name"] for e in json.loads(out)}
    wait_for(ready, timeout, "the default entries in the store")


def starttls_fp(port):
    s = Smtp(port)
    s.cmd("EHLO client.e2e")
    s.starttls()
    fp = s.peer_fingerprint()
    s.close()
    return fp


def served_fp(host, port):
    """Fingerprint (hex) of the certificate served on a TLS port (the consoles)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            import hashlib
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def psql(d, sql):
    r = subprocess.run(["psql", "-h", os.path.join(d.dir, "pgsock"), "-U", "postern", "-d", "postgres", "-tAc", sql],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def with_daemon(fn, sections=None, **kw):
    d = Daemon(sections, **kw).start()
    try:
        fn(d)
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d, 60)))
        raise
    finally:
        d.cleanup()


# ---- import -----------------------------------------------------------------------------------

def test_import_every_key_format_and_every_refusal():
    def body(d):
        wait_store(d)
        e = entries(d)
        assert e["default_mta"]["status"] == "in use" and e["default_console"]["status"] == "in use"
        assert set(e["default_mta"]["roles"]) == {"inbound_mta", "outbound_mta"}
        assert set(e["default_console"]["roles"]) == {"admin_console", "euq_console"}
        ec_fp, rsa_fp = fp_of(c("ec.crt")), fp_of(c("rsa.crt"))
        formats = [("ec.sec1.key", None, ec_fp), ("ec.pkcs8.key", None, ec_fp), ("ec.enc-pkcs8.key", "keypass", ec_fp),
                   ("ec.enc-trad.key", "keypass", ec_fp), ("rsa.pkcs1.key", None, rsa_fp),
                   ("rsa.pkcs8.key", None, rsa_fp), ("rsa.enc-pkcs8.key", "keypass", rsa_fp),
                   ("rsa.enc-trad.key", "keypass", rsa_fp)]
        for i, (key, passfile, want) in enumerate(formats):
            bundle = "ec-bundle.pem" if key.startswith("ec") else "rsa-bundle.pem"
            args = ["--json", "cert", "import", "--name", "fmt-%d" % i, "--cert", c(bundle), "--key", c(key)]
            if passfile:
                args += ["--passphrase-file", c(passfile)]
            got = json.loads(ok(ctl(d, *args)))
            assert got["fingerprint"] == want, (key, got)
            assert got["status"] == "unused" and got["chain_length"] == 1 and got["valid"], got
        got = json.loads(ok(ctl(d, "--json", "cert", "import", "--pkcs12", c("ec.p12"),
                                "--passphrase-file", c("p12pass"))))
        assert got["name"] == "ec" and got["fingerprint"] == ec_fp and got["chain_length"] == 1, got
        # A name clash renames the new entry and says so (seed 001); no name: the file's name.
        rc, out, err = ctl(d, "cert", "import", "--name", "fmt-0", "--cert", c("ec-bundle.pem"), "--key", c("ec.key"))
        assert rc == 0 and "A certificate with the same name exists. The certificate name was changed to fmt-0-2." in out, out + err
        rc, out, err = ctl(d, "cert", "import", "--cert", c("rsa-bundle.pem"), "--key", c("rsa.key"))
        assert rc == 0 and "rsa-bundle:" in out, out + err
        # Each refusal names its reason, exits non-zero, and stores nothing.
        before = set(entries(d))
        refusals = [
            (["--cert", c("notpem.txt")], "not PEM"),
            (["--cert", c("keyonly.pem")], "no certificate"),
            (["--cert", c("ec-bundle.pem"), "--key", c("wrong.key")], "does not match"),
            (["--cert", c("ec-bundle.pem"), "--key", c("ec.enc-pkcs8.key"), "--passphrase-file", c("badpass")],
             "wrong passphrase"),
            (["--cert", c("ec-bundle.pem"), "--key", c("ec.enc-trad.key")], "a passphrase is needed"),
            (["--pkcs12", c("ec.p12"), "--passphrase-file", c("badpass")], "wrong passphrase for the PKCS#12 file"),
            (["--cert", c("expired.crt"), "--key", c("expired.key")], "has expired"),
            (["--cert", c("notyet.crt"), "--key", c("notyet.key")], "not valid yet"),
            (["--cert", c("out-of-order.pem"), "--key", c("ec.key")], "chain out of order"),
            (["--cert", c("incomplete.pem"), "--key", c("ec.key")], "chain incomplete"),
            (["--cert", c("ec.crt")], "no private key"),
        ]
        for args, reason in refusals:
            rc, out, err = ctl(d, "cert", "import", "--name", "bad", *args)
            assert rc == 1 and reason in err, (args, rc, out, err)
        assert set(entries(d)) == before
        status, body_ = api(d, "POST", "/api/v1/certificates/import", {"cert_pem": open(c("notpem.txt")).read()})
        assert status == 422 and body_["reason"] == "not_pem", body_
        # Delete: refused while in use, done when unused.
        rc, out, err = ctl(d, "cert", "delete", "default_mta")
        assert rc == 1 and "in use by inbound_mta, outbound_mta" in err, err
        ok(ctl(d, "cert", "delete", "fmt-0-2"))
        assert "fmt-0-2" not in entries(d)
        show = json.loads(ok(ctl(d, "--json", "cert", "show", "fmt-4", "--pem")))
        assert show["cert_pem"].startswith("-----BEGIN CERTIFICATE-----") and "key_pem" not in show
        assert show["key_type"] == "RSA" and show["key_bits"] == 2048 and "DNS:mx.e2e.test" in show["sans"]
        # Keys are sealed in the database, never stored in the clear.
        assert psql(d, "SELECT count(*) FROM certificates WHERE key_pem LIKE '%PRIVATE KEY%'") == "0"
        assert psql(d, "SELECT count(*) FROM certificates WHERE key_pem LIKE 'pk1:%'") != "0"
        node_key = os.path.join(d.dir, "node.key")
        assert oct(os.stat(node_key).st_mode & 0o777) == "0o600"
        # A default file an admin replaces is served on SIGHUP (one reload path) and the entry takes it.
        shutil.copy(c("ec2-bundle.pem"), os.path.join(d.dir, "certs", "default_mta.crt"))
        shutil.copy(c("ec2.key"), os.path.join(d.dir, "certs", "default_mta.key"))
        d.signal(signal.SIGHUP)
        want = fp_of(c("ec2.crt"))
        wait_for(lambda: starttls_fp(d.port) == hexfp(want), 10, "the replaced default file served")
        wait_for(lambda: entries(d)["default_mta"]["fingerprint"] == want, 10, "the entry taking the file")
        assert roles(d)["outbound_mta"]["fingerprint"] == want
        with open(os.path.join(d.dir, "certs", "default_mta.crt"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        d.signal(signal.SIGHUP)
        d.wait_log("reload role=inbound_mta refused, keeping generation")
        assert starttls_fp(d.port) == hexfp(want) and entries(d)["default_mta"]["fingerprint"] == want
    with_daemon(body)


# ---- CSR flow, assign, expired refusal, consoles, workaround A ------------------------------------

def sign_csr(csr_path, out_path):
    ext = c("leaf.ext")
    subprocess.run(["openssl", "x509", "-req", "-in", csr_path, "-CA", c("inter.crt"), "-CAkey", c("inter.key"),
                    "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", out_path], check=True, capture_output=True)
    with open(out_path) as f, open(c("inter.crt")) as i, open(out_path + ".bundle", "w") as o:
        o.write(f.read() + i.read())
    return out_path + ".bundle"


def s_client_chain(port):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-starttls", "smtp", "-showcerts",
                        "-servername", "mx.e2e.test"], input="QUIT\n", capture_output=True, text=True, timeout=20)
    return r.stdout


def test_csr_flow_assign_inbound_outbound_expired_and_consoles():
    peer = Peer(tls=True, flags=("--client-cert", "--client-ca", c("root.crt")))
    conf = {"routes": {"example.test": "[127.0.0.1]:%d" % peer.port},
            "outbound": {"tls": "may", "connect_timeout": "2s", "command_timeout": "4s"},
            "queue": {"min_backoff": "1s", "max_backoff": "2s"}}

    def body(d):
        wait_store(d)
        tmp = tempfile.mkdtemp(prefix="postern-csr-", dir=certs())
        csr = os.path.join(tmp, "new.csr")
        rc, out, err = ctl(d, "cert", "csr", "--name", "New-certificate", "--key", "rsa2048", "--cn", "mx.e2e.test",
                           "--country", "JP", "--state", "Tokyo", "--locality", "Shibuya", "--org", "Postern Test",
                           "--unit", "Support Division", "--email", "postmaster@mx.e2e.test",
                           "--san", "DNS:mx.e2e.test", "--out", csr)
        assert rc == 0 and "requested" in out, out + err
        subj = subprocess.run(["openssl", "req", "-in", csr, "-noout", "-subject", "-verify"], capture_output=True,
                              text=True)
        assert "C = JP, ST = Tokyo, L = Shibuya, O = Postern Test, OU = Support Division, CN = mx.e2e.test" in subj.stdout, subj
        assert entries(d)["New-certificate"]["status"] == "requested"
        rc, out, err = ctl(d, "cert", "assign", "New-certificate", "--role", "inbound")
        assert rc == 1 and "CSR waiting for its certificate" in err, err
        bundle = sign_csr(csr, os.path.join(tmp, "new.crt"))
        rc, out, err = ctl(d, "cert", "import", "--cert", bundle)
        assert rc == 0 and "completes the request New-certificate" in out, out + err
        e = entries(d)["New-certificate"]
        assert e["status"] == "unused" and e["chain_length"] == 1 and e["valid"], e
        new_fp = fp_of(os.path.join(tmp, "new.crt"))
        old_fp = starttls_fp(d.port)
        t0 = time.time()
        ok(ctl(d, "cert", "assign", "New-certificate", "--role", "inbound"))
        assert starttls_fp(d.port) == hexfp(new_fp)  # the very next handshake
        chain = s_client_chain(d.port)
        assert "CN = mx.e2e.test" in chain and "CN = Postern Test Intermediate" in chain, chain
        assert entries(d)["New-certificate"]["status"] == "in use"
        r = roles(d)
        assert r["inbound_mta"]["certificate"] == "New-certificate" and r["inbound_mta"]["fingerprint"] == new_fp
        assert time.time() - t0 < 10
        # Outbound: the peer asks for a client certificate and sees this one.
        ok(ctl(d, "cert", "assign", "New-certificate", "--role", "outbound"))
        assert send_message(d.port)[0] == 250
        wait_for(lambda: len(peer.messages()) == 1, 20, "delivery to the peer")
        m = peer.messages()[0]
        assert m["tls"] is True and m["client_cert"] == hexfp(new_fp), m
        # Expired: stored only with --force, assign refused with the reason, the old one still served.
        ok(ctl(d, "cert", "import", "--name", "old", "--cert", c("expired.crt"), "--key", c("expired.key"), "--force"))
        assert entries(d)["old"]["valid"] is False
        rc, out, err = ctl(d, "cert", "assign", "old", "--role", "inbound,admin")
        assert rc == 1 and "has expired" in err, err
        assert starttls_fp(d.port) == hexfp(new_fp)
        assert roles(d)["admin_console"]["certificate"] == "default_console"
        ev = json.loads(ok(ctl(d, "--json", "events")))
        assert any(x["code"] == "CERT_ASSIGN_REFUSED" and "has expired" in x["text"] for x in ev)
        assert any(x["code"] == "CERT_ASSIGNED" for x in ev)
        # The consoles serve their own certificates, distinct from SMTP's.
        admin_fp = served_fp("127.0.0.1", d.admin_port)
        assert admin_fp == hexfp(entries(d)["default_console"]["fingerprint"]) and admin_fp != hexfp(new_fp)
        # An admin-console assign: posternctl keeps verifying (it pins the new trust file).
        ok(ctl(d, "cert", "import", "--name", "console-ca", "--cert", c("ec2-bundle.pem"), "--key", c("ec2.key")))
        ok(ctl(d, "cert", "assign", "console-ca", "--role", "admin"))
        assert served_fp("127.0.0.1", d.admin_port) == hexfp(fp_of(c("ec2.crt")))
        assert fp_of(os.path.join(d.dir, "admin-trust.pem")) == fp_of(c("ec2.crt"))
        ok(ctl(d, "status"))
        # Seed 000's workaround A: both consoles to default_mta, one command; default_console unused.
        ok(ctl(d, "cert", "assign", "default_mta", "--role", "admin,euq"))
        mta_fp = entries(d)["default_mta"]["fingerprint"]
        assert served_fp("127.0.0.1", d.admin_port) == hexfp(mta_fp)
        ok(ctl(d, "status"))
        r = roles(d)
        assert r["admin_console"]["certificate"] == "default_mta" and r["euq_console"]["certificate"] == "default_mta"
        assert entries(d)["default_console"]["status"] == "unused"
        out = ok(ctl(d, "role", "list"))
        for name in ("inbound_mta", "outbound_mta", "admin_console", "euq_console"):
            assert name in out
        # SIGHUP keeps the store's bindings (one reload path).
        ok(ctl(d, "reload"))
        assert starttls_fp(d.port) == hexfp(new_fp)
        assert served_fp("127.0.0.1", d.admin_port) == hexfp(mta_fp)
        # regenerate-defaults (seed 002 -c): default_mta gets a new key, served at once where bound.
        out = json.loads(ok(ctl(d, "--json", "cert", "regenerate-defaults", "--which", "mta")))
        regen = out["regenerated"][0]["fingerprint"]
        assert regen != mta_fp
        wait_for(lambda: served_fp("127.0.0.1", d.admin_port) == hexfp(regen), 5, "the regenerated console cert")
        ok(ctl(d, "status"))
    try:
        with_daemon(body, conf)
    finally:
        peer.cleanup()


# ---- backup / restore, export / re-import --------------------------------------------------------

def test_backup_wipe_restore_and_export_reimport_elsewhere():
    tmp = tempfile.mkdtemp(prefix="postern-bk-", dir=certs())
    state = {}

    def first(d):
        wait_store(d)
        ok(ctl(d, "cert", "import", "--name", "mx", "--cert", c("rsa-bundle.pem"), "--key", c("rsa.key")))
        ok(ctl(d, "cert", "import", "--name", "mx-ec", "--cert", c("ec-bundle.pem"), "--key", c("ec.key")))
        ok(ctl(d, "cert", "assign", "mx", "--role", "inbound"))
        ok(ctl(d, "cert", "assign", "mx-ec", "--role", "inbound", "--add"))  # RSA and ECDSA side by side
        ok(ctl(d, "cert", "csr", "--name", "pending", "--key", "ec-p256", "--cn", "pending.e2e.test",
               "--out", os.path.join(tmp, "p.csr")))
        before = entries(d)
        bindings = psql(d, "SELECT role, key_type, cert_name FROM role_bindings ORDER BY 1, 2")
        assert "inbound_mta|EC|mx-ec" in bindings and "inbound_mta|RSA|mx" in bindings, bindings
        bk = os.path.join(tmp, "store.bak")
        rc, out, err = ctl(d, "cert", "backup", "--out", bk, "--password-file", c("backuppass"))
        assert rc == 0, err
        assert oct(os.stat(bk).st_mode & 0o777) == "0o600"
        with open(bk, "rb") as f:
            raw = f.read()
        assert raw.startswith(b"PSTNCRTB") and b"PRIVATE KEY" not in raw and b"mx-ec" not in raw
        # Wipe the store, then restore: the same entries, keys and bindings.
        psql(d, "DELETE FROM role_bindings; DELETE FROM certificates")
        assert entries(d) == {}
        rc, out, err = ctl(d, "cert", "restore", "--in", bk, "--password-file", c("badpass"))
        assert rc == 1 and "wrong password" in err, err
        ok(ctl(d, "cert", "restore", "--in", bk, "--password-file", c("backuppass")))
        after = entries(d)
        assert set(after) == set(before)
        for n in before:
            for k in ("fingerprint", "status", "kind", "roles", "key_type", "not_after"):
                assert after[n].get(k) == before[n].get(k), (n, k, before[n].get(k), after[n].get(k))
        assert psql(d, "SELECT role, key_type, cert_name FROM role_bindings ORDER BY 1, 2") == bindings
        # The keys came back: the restored entries still export and assign.
        p12 = os.path.join(tmp, "mx.p12")
        ok(ctl(d, "cert", "export", "mx", "--with-key", "--password-file", c("p12pass"), "--out", p12))
        pem = ok(ctl(d, "cert", "export", "mx"))
        assert pem.count("-----BEGIN CERTIFICATE-----") == 2 and "PRIVATE KEY" not in pem
        ok(ctl(d, "cert", "assign", "mx", "--role", "outbound"))
        state["p12"], state["fp"] = p12, before["mx"]["fingerprint"]

    def second(d):
        wait_store(d)
        got = json.loads(ok(ctl(d, "--json", "cert", "import", "--pkcs12", state["p12"],
                                "--passphrase-file", c("p12pass"))))
        assert got["fingerprint"] == state["fp"] and got["chain_length"] == 1 and got["key_matches"], got
        ok(ctl(d, "cert", "assign", got["name"], "--role", "inbound"))
        assert starttls_fp(d.port) == hexfp(state["fp"])
    with_daemon(first)
    with_daemon(second)


# ---- two nodes on one database; a start without the database --------------------------------------

def test_two_nodes_assign_on_a_served_by_b_within_a_second_and_cache_without_database():
    pg = ExternalPostgres()
    a = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-a"}})
    b = Daemon({"database": {"url": pg.url}, "server": {"node_name": "node-b"}})
    try:
        a.start()
        wait_store(a)
        # Nodes sharing a database share the node key (README): B gets A's before its first start.
        shutil.copy2(os.path.join(a.dir, "node.key"), os.path.join(b.dir, "node.key"))
        assert oct(os.stat(os.path.join(b.dir, "node.key")).st_mode & 0o777) == "0o600"
        b.start()
        wait_store(b)
        wait_for(lambda: starttls_fp(b.port) == starttls_fp(a.port), 10, "B serving the shared default_mta")
        ok(ctl(a, "cert", "import", "--name", "shared", "--cert", c("ec-bundle.pem"), "--key", c("ec.key")))
        want = hexfp(fp_of(c("ec.crt")))
        ok(ctl(a, "cert", "assign", "shared", "--role", "inbound"))
        t0 = time.time()
        assert starttls_fp(a.port) == want
        wait_for(lambda: starttls_fp(b.port) == want, 1.0, "node B serving the new certificate within 1 s")
        assert time.time() - t0 < 1.5
        # B restarts while the database is down: it serves the cached binding.
        assert b.stop() == 0
        pg.stop()
        b.start()
        assert starttls_fp(b.port) == want
        # Without the database the store is read-only: an assign is refused, nothing changes.
        rc, out, err = ctl(b, "cert", "assign", "default_mta", "--role", "inbound")
        assert rc == 1 and "database unavailable" in err, (rc, out, err)
        assert starttls_fp(b.port) == want
        assert b.stop() == 0
        pg.start()
        assert a.stop() == 0
    except BaseException:
        for d in (a, b):
            print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d, 60)))
        raise
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
            d.cleanup()
        pg.cleanup()


# ---- per-name (SNI) bindings ------------------------------------------------------------------

def sni_fp(port, name):
    """The leaf's fingerprint (AB:CD:...) that `openssl s_client -starttls smtp` gets for `name`."""
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-starttls", "smtp"]
    if name:
        args += ["-servername", name]
    r = subprocess.run(args, input="QUIT\n", capture_output=True, text=True, timeout=20)
    pem = r.stdout[r.stdout.index("-----BEGIN CERTIFICATE-----"):r.stdout.index("-----END CERTIFICATE-----") + 25]
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem,
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def test_sni_binding_serves_its_name_and_the_default_serves_the_rest():
    def body(d):
        wait_store(d)
        ok(ctl(d, "cert", "import", "--name", "mail-ec", "--cert", c("ec-bundle.pem"), "--key", c("ec.key")))
        ok(ctl(d, "cert", "import", "--name", "other-ec", "--cert", c("ec2-bundle.pem"), "--key", c("ec2.key")))
        ok(ctl(d, "cert", "assign", "mail-ec", "--role", "inbound"))
        ok(ctl(d, "cert", "assign", "other-ec", "--role", "inbound", "--sni", "Other.E2E.test."))
        default, other = fp_of(c("ec.crt")), fp_of(c("ec2.crt"))
        assert sni_fp(d.port, "other.e2e.test") == other
        assert sni_fp(d.port, "OTHER.e2e.test") == other  # names compare without case
        assert sni_fp(d.port, "mx.e2e.test") == default
        assert sni_fp(d.port, "") == default             # no name: the default
        # Only the inbound role takes names; a refusal changes nothing.
        rc, _, err = ctl(d, "cert", "assign", "other-ec", "--role", "admin", "--sni", "x.e2e.test")
        assert rc != 0 and "inbound role only" in err, err
        rc, _, err = ctl(d, "cert", "assign", "other-ec", "--role", "inbound", "--sni", "bad name")
        assert rc != 0 and "bad SNI name" in err, err
        # Rebinding the default keeps the name's binding.
        ok(ctl(d, "cert", "assign", "default_mta", "--role", "inbound"))
        assert sni_fp(d.port, "other.e2e.test") == other
        assert sni_fp(d.port, "mx.e2e.test") != default
        rc, _, err = ctl(d, "cert", "delete", "other-ec")
        assert rc != 0 and "in use" in err, err
    with_daemon(body)


def test_a_file_named_in_the_config_is_a_file_backed_entry_in_the_store():
    """The seeds' store lists every certificate in use: one the config names by path (certbot's
    live/ files, say) is an entry of kind `file`, `in use` by its roles, still served from its
    file (no key copied); it cannot be assigned or deleted while named; once the config stops
    naming it, it stays listed as `unused` and can be deleted."""
    files = tempfile.mkdtemp(prefix="postern-file-entry-")
    for n in ("ec-bundle.pem", "ec.key"):
        shutil.copy(c(n), os.path.join(files, n))
    os.chmod(os.path.join(files, "ec.key"), 0o600)
    cert, key = os.path.join(files, "ec-bundle.pem"), os.path.join(files, "ec.key")

    def body(d):
        wait_store(d)

        def entry():
            e = [x for x in entries(d).values() if x["kind"] == "file"]
            return e[0] if len(e) == 1 and e[0]["status"] == "in use" else None
        e = wait_for(entry, 15, lambda: "a file-backed entry in use\n" + json.dumps(entries(d), indent=1))
        assert e["name"] == "ec-bundle" and e["file_path"] == cert, e
        # The outbound role's client certificate is the inbound one unless [outbound] names its own.
        assert sorted(e["roles"]) == ["euq_console", "inbound_mta", "outbound_mta"], e
        assert e["fingerprint"] == fp_of(c("ec.crt")) and e["has_key"] is False, e  # no key copied
        assert e["valid"] is True and e["key_matches"] is True, e
        assert psql(d, "SELECT key_pem IS NULL FROM certificates WHERE name = 'ec-bundle'") == "t"
        assert starttls_fp(d.port) == hexfp(fp_of(c("ec.crt")))                # the file serves
        assert served_fp("127.0.0.1", d.euq_port) == hexfp(fp_of(c("ec.crt")))
        rc, _, err = ctl(d, "cert", "assign", "ec-bundle", "--role", "admin")
        assert rc != 0 and "file-backed" in err, err
        rc, _, err = ctl(d, "cert", "delete", "ec-bundle")
        assert rc != 0 and "in use" in err, err
        # The config names the default again for the EUQ console: one role left.
        d.write_config({"smtp": {"tls_cert_file": cert, "tls_key_file": key}})
        d.signal(signal.SIGHUP)
        wait_for(lambda: sorted(entries(d)["ec-bundle"]["roles"]) == ["inbound_mta", "outbound_mta"], 15,
                 "the EUQ role gone from the entry")
        # Neither role names it: listed, unused, deletable; the inbound role serves the store's default.
        d.write_config({})
        d.signal(signal.SIGHUP)
        wait_for(lambda: entries(d)["ec-bundle"]["status"] == "unused", 15, "the entry unused")
        assert starttls_fp(d.port) != hexfp(fp_of(c("ec.crt")))
        ok(ctl(d, "cert", "delete", "ec-bundle"))
        assert "ec-bundle" not in entries(d)
    try:
        with_daemon(body, {"smtp": {"tls_cert_file": cert, "tls_key_file": key},
                           "euq": {"tls_cert_file": cert, "tls_key_file": key}})
    finally:
        shutil.rmtree(files, ignore_errors=True)
