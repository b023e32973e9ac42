"""External scanners none of us wrote, against the real daemon (issue 14).

- testssl.sh (Debian testssl.sh) against STARTTLS on the SMTP port and against the admin and EUQ
  listeners, with a certificate from a test CA (SANs mx.e2e.test, localhost, 127.0.0.1) imported
  into the store and assigned to those roles, and that CA given to testssl (--add-ca): no SSLv2,
  SSLv3, TLS 1.0 or 1.1; no insecure renegotiation; no finding rated MEDIUM or worse except the
  ones about the test CA itself (no CRL or OCSP URI in a test certificate).
- nmap's smtp-open-relay (Debian nmap) from 127.0.0.1, outside relay.networks: not an open relay;
  and a positive control: the same scan against a deliberately open configuration
  (relay.networks = 127.0.0.0/8) is reported open, so the scan can fail.

These are slow (testssl about a minute per listener), so scripts/test runs this suite in the
release pass only (tests/CMakeLists.txt).
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile

from harness import Daemon, log_tail, wait_for

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
# Findings that are about the test CA, not about Postern: a test certificate has no CRL or OCSP
# URI, and testssl cannot know the test CA's revocation state.
ABOUT_THE_TEST_CA = {"cert_revocation", "cert_crlDistributionPoints", "cert_ocspURL", "OCSP_stapling"}
BAD = {"MEDIUM", "HIGH", "CRITICAL"}


def testssl(target, ca, out, smtp=False):
    # --nodns none: no DNS lookups at all (tests never reach the machine's resolver); the target
    # is an address already (testssl refuses --ip together with --nodns none).
    cmd = ["testssl", "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none", "--add-ca", ca,
           "--jsonfile", out, "-p", "-s", "-f", "-S", "-U"]
    if smtp:
        cmd += ["-t", "smtp"]
    else:
        cmd += ["-h"]
    r = subprocess.run(cmd + [target], capture_output=True, text=True, timeout=600)
    assert os.path.exists(out), "testssl wrote no findings (rc %d): %s" % (r.returncode, r.stdout[-2000:] + r.stderr)
    with open(out) as f:
        return {x["id"]: x for x in json.load(f)}, r.stdout


def check_findings(found, what):
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert proto in found and "not offered" in found[proto]["finding"], (what, proto, found.get(proto))
    assert "TLS1_2" in found and "offered" in found["TLS1_2"]["finding"], (what, found.get("TLS1_2"))
    assert "TLS1_3" in found and "offered" in found["TLS1_3"]["finding"], (what, found.get("TLS1_3"))
    reneg = found.get("secure_client_renego", {}).get("finding", "")
    assert "not vulnerable" in reneg, (what, "client-initiated renegotiation", reneg)
    assert "supported" in found.get("secure_renego", {}).get("finding", ""), (what, found.get("secure_renego"))
    bad = {k: (v["severity"], v["finding"]) for k, v in found.items()
           if v.get("severity") in BAD and k not in ABOUT_THE_TEST_CA}
    assert not bad, (what, bad)
    # The chain verifies against the test CA and the name matches: no finding about either.
    assert found.get("cert_chain_of_trust", {}).get("severity") == "OK", (what, found.get("cert_chain_of_trust"))
    assert found.get("cert_trust", {}).get("severity") in ("OK", "INFO"), (what, found.get("cert_trust"))


def test_testssl_finds_nothing_medium_or_worse_on_smtp_admin_and_euq():
    certs = tempfile.mkdtemp(prefix="postern-scan-certs-")
    subprocess.run([os.path.join(FIXTURES, "make-test-certs"), certs], check=True, capture_output=True)
    d = Daemon().start()
    try:
        wait_for(lambda: d.ctl("cert", "list")[0] == 0, 30, "the certificate store")
        # The fixtures' leaves live 30 days (testssl rates < 30 days left HIGH): one for a year,
        # from the same test intermediate, same key and SANs.
        o = lambda *a: subprocess.run(["openssl"] + list(a), cwd=certs, check=True, capture_output=True)
        o("req", "-new", "-key", "ec.key", "-subj", "/CN=mx.e2e.test/O=Postern Test", "-out", "year.csr")
        o("x509", "-req", "-in", "year.csr", "-CA", "inter.crt", "-CAkey", "inter.key", "-CAcreateserial",
          "-days", "365", "-extfile", "leaf.ext", "-out", "year.crt")
        with open(os.path.join(certs, "year-bundle.pem"), "w") as f:
            f.write(open(os.path.join(certs, "year.crt")).read() + open(os.path.join(certs, "inter.crt")).read())
        rc, out, err = d.ctl("cert", "import", "--name", "test-ca-leaf", "--cert", os.path.join(certs, "year-bundle.pem"),
                             "--key", os.path.join(certs, "ec.key"))
        assert rc == 0, out + err
        rc, out, err = d.ctl("cert", "assign", "test-ca-leaf", "--role", "inbound,admin,euq")
        assert rc == 0, out + err
        ca = os.path.join(certs, "root.crt")
        for what, target, smtp in (("smtp", "127.0.0.1:%d" % d.port, True),
                                   ("admin", "https://127.0.0.1:%d/" % d.admin_port, False),
                                   ("euq", "https://127.0.0.1:%d/" % d.euq_port, False)):
            found, text = testssl(target, ca, os.path.join(certs, what + ".json"), smtp)
            try:
                check_findings(found, what)
            except AssertionError:
                print(text[-6000:])
                raise
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d)))
        raise
    finally:
        d.cleanup()
        shutil.rmtree(certs, ignore_errors=True)


def nmap_open_relay(port):
    # -sV: the script runs on ports nmap recognises as SMTP (a test port is not 25).
    r = subprocess.run(["nmap", "-n", "-Pn", "-sV", "--version-intensity", "0", "-p", str(port),
                        "--script", "smtp-open-relay",
                        "--script-args", "smtp-open-relay.domain=mx.e2e.test,smtp-open-relay.ip=127.0.0.1",
                        "127.0.0.1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "smtp-open-relay" in r.stdout, r.stdout  # the script ran
    return r.stdout


def test_nmap_smtp_open_relay_reports_closed_and_the_positive_control_open():
    d = Daemon(deliver=False).start()
    try:
        out = nmap_open_relay(d.port)
        assert "Server doesn't seem to be an open relay" in out and "is an open relay" not in out, out
        assert d.queued() == [], "a relay test was queued: %s" % d.queued()
        # Positive control: 127.0.0.1 inside relay.networks is allowed to relay anywhere.
        d.write_config({"relay": {"domains": ["example.test"], "networks": ["127.0.0.0/8"]}})
        d.signal(signal.SIGHUP)
        d.wait_log("reload: config applied", 10)
        out = nmap_open_relay(d.port)
        assert "Server is an open relay" in out, out
        assert d.stop() == 0
    except BaseException:
        print("---- posternd log tail (%s) ----\n%s" % (d.dir, log_tail(d)))
        raise
    finally:
        d.cleanup()
