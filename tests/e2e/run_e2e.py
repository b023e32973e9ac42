#!/usr/bin/env python3
"""Runs end-to-end test modules: every function named test_* in the modules given.

usage: run_e2e.py [--bin DIR] MODULE [MODULE ...] [-k SUBSTRING]
Prints one line per test and closes with 'N passed, N failed'. Exit status 1 on any failure.
"""
import argparse
import importlib
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("-k", default="")
    ap.add_argument("modules", nargs="+")
    a = ap.parse_args()
    if a.bin:
        os.environ["POSTERN_BIN"] = os.path.abspath(a.bin)
    import harness
    harness.BIN = os.environ.get("POSTERN_BIN", harness.BIN)
    passed = failed = 0
    for name in a.modules:
        mod = importlib.import_module(name)
        for fn_name in sorted(n for n in dir(mod) if n.startswith("test_")):
            if a.k not in fn_name:
                continue
            t0 = time.time()
            try:
                getattr(mod, fn_name)()
                passed += 1
                print("PASS %s.%s (%.1fs)" % (name, fn_name, time.time() - t0), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s.%s (%.1fs)" % (name, fn_name, time.time() - t0), flush=True)
                traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
