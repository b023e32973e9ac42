"""browser.py — a real headless Chromium for end-to-end tests of the consoles.

Starts tests/browser/driver.mjs (playwright-core, installed by scripts/install-deps into
tests/browser/node_modules, driving Debian's /usr/bin/chromium) and talks to it one JSON line
at a time. Every call is bounded in time; the driver is stopped by its PID.

    with Browser() as b:
        b.goto("https://127.0.0.1:%d/" % port)
        b.fill("#password", "secret"); b.click("#login")
        b.wait_text("#alerts", "expired")
        b.screenshot("dashboard-alert")          # -> $POSTERN_SCREENSHOTS/dashboard-alert.png

`page=` names a browser context of its own (its own cookies): two recipients, two pages.
Screenshots go to $POSTERN_SCREENSHOTS, default build/test-screenshots/ beside the binaries.
"""
import json
import os
import select
import subprocess
import time

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER_DIR = os.path.normpath(os.path.join(HERE, "../browser"))


def screenshot_dir():
    d = os.environ.get("POSTERN_SCREENSHOTS") or os.path.normpath(os.path.join(harness.BIN, "..", "test-screenshots"))
    os.makedirs(d, exist_ok=True)
    return d


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, timeout=20.0):
        if not os.path.isdir(os.path.join(DRIVER_DIR, "node_modules", "playwright-core")):
            raise BrowserError("playwright-core is not installed in %s (scripts/install-deps installs it)" % DRIVER_DIR)
        self.timeout = timeout
        self.proc = subprocess.Popen(["node", os.path.join(DRIVER_DIR, "driver.mjs")], cwd=DRIVER_DIR,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, POSTERN_BROWSER_TIMEOUT_MS=str(int(timeout * 1000) - 2000)))
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, op, timeout=None, **args):
        """Runs one command; returns its value or raises BrowserError with the driver's message."""
        if self.proc.poll() is not None:
            raise BrowserError("the browser driver has exited: " + self.proc.stderr.read().decode(errors="replace")[-2000:])
        args["op"] = op
        self.proc.stdin.write((json.dumps(args) + "\n").encode())
        self.proc.stdin.flush()
        end = time.time() + (timeout or self.timeout) + 5
        while b"\n" not in self._buf:
            left = end - time.time()
            if left <= 0:
                raise BrowserError("the browser driver did not answer %s in time" % op)
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise BrowserError("the browser driver has exited: " +
                                       self.proc.stderr.read().decode(errors="replace")[-2000:])
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        ans = json.loads(line)
        if not ans.get("ok"):
            raise BrowserError("browser %s %s: %s" % (op, {k: v for k, v in args.items() if k != "op"}, ans.get("error")))
        return ans.get("value")

    # The commands (tests/browser/driver.mjs says what each does).
    def goto(self, url, page="main"):
        return self.call("goto", url=url, page=page)

    def click(self, selector, page="main"):
        return self.call("click", selector=selector, page=page)

    def fill(self, selector, value, page="main"):
        return self.call("fill", selector=selector, value=value, page=page)

    def select(self, selector, value, page="main"):
        return self.call("select", selector=selector, value=value, page=page)

    def check(self, selector, page="main"):
        return self.call("check", selector=selector, page=page)

    def upload(self, selector, path, page="main"):
        return self.call("upload", selector=selector, path=path, page=page)

    def press(self, selector, key, page="main"):
        return self.call("press", selector=selector, key=key, page=page)

    def text(self, selector, page="main"):
        return self.call("text", selector=selector, page=page)

    def texts(self, selector, page="main"):
        return self.call("texts", selector=selector, page=page)

    def count(self, selector, page="main"):
        return self.call("count", selector=selector, page=page)

    def wait(self, selector, state="visible", timeout=None, page="main"):
        t = timeout or self.timeout - 3
        return self.call("wait", selector=selector, state=state, timeout=int(t * 1000), page=page, **{})

    def wait_text(self, selector, text, timeout=None, page="main"):
        t = timeout or self.timeout - 3
        return self.call("wait_text", selector=selector, text=text, timeout=int(t * 1000), page=page)

    def eval(self, expr, page="main"):
        return self.call("eval", expr=expr, page=page)

    def url(self, page="main"):
        return self.call("url", page=page)

    def cookies(self, page="main"):
        return self.call("cookies", page=page)

    def errors(self, page="main"):
        return self.call("errors", page=page)

    def screenshot(self, name, page="main"):
        path = os.path.join(screenshot_dir(), name + ".png")
        self.call("screenshot", path=path, page=page)
        return path

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op":"close"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
