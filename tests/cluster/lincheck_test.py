#!/usr/bin/env python3
"""synod-lincheck accepts linearizable histories and refuses known non-linearizable ones."""
import os
import subprocess
import sys
import tempfile

LINCHECK = sys.argv[1]

CASES = {
    # name: (expected exit status, history)
    "sequential write then read": (0, "a 1 2 w 7\na 3 4 r 7\n"),
    "concurrent read may see old or new": (0, "a 1 5 w 7\na 2 3 r 0\na 4 6 r 7\n"),
    "unknown write may have happened": (0, "a 1 - w 7\na 10 11 r 7\n"),
    "unknown write may not have happened": (0, "a 1 - w 7\na 10 11 r 0\n"),
    "stale read after acknowledged write": (1, "a 1 2 w 7\na 3 4 r 0\n"),
    "read goes back in time": (1, "a 1 2 w 7\na 3 4 w 8\na 5 6 r 8\na 7 8 r 7\n"),
    "read of a value never written": (1, "a 1 2 w 7\na 3 4 r 9\n"),
    "keys are independent": (0, "a 1 2 w 7\nb 3 4 r 0\n"),
    "new then old across readers": (1, "a 1 10 w 7\na 2 3 r 7\na 4 5 r 0\n"),
    "garbage": (2, "a one 2 w 7\n"),
}

failed = 0
for name, (want, history) in CASES.items():
    with tempfile.NamedTemporaryFile("w", suffix=".hist", delete=False) as f:
        f.write(history)
    p = subprocess.run([LINCHECK, f.name], capture_output=True, text=True)
    os.unlink(f.name)
    ok = p.returncode == want
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {p.returncode} (want {want}) "
          f"{p.stdout.strip()} {p.stderr.strip()}")
sys.exit(1 if failed else 0)
