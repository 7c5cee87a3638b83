"""Peak memory of a piece of work, measured the way that matters for
conversion: anonymous resident memory (``RssAnon``: heap, tensors, numpy
buffers), sampled every millisecond in a child process. Memory-mapped
checkpoint pages are file-backed (``RssFile``) and the kernel can drop them at
will, so they are reported separately and not counted against the bound.
Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_CHILD = r"""
import json, sys, threading, time

def rss():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out

__SETUP__

base = rss()
peak = dict(base)
stop = threading.Event()

def sample():
    while not stop.is_set():
        now = rss()
        for k, v in now.items():
            peak[k] = max(peak[k], v)
        time.sleep(0.001)

t = threading.Thread(target=sample, daemon=True)
t.start()
t0 = time.perf_counter()
__WORK__
seconds = time.perf_counter() - t0
stop.set()
t.join()
for k, v in rss().items():
    peak[k] = max(peak[k], v)
print("MEMWATCH" + json.dumps({"baseline_anon": base["RssAnon"], "peak_anon": peak["RssAnon"],
                               "peak_file": peak["RssFile"], "seconds": seconds}))
"""


def measure(setup: str, work: str, timeout: float = 900) -> dict:
    """Run ``setup`` (imports: not measured) then ``work`` in a fresh Python;
    returns ``baseline_anon``, ``peak_anon``, ``growth_anon``, ``peak_file``
    (bytes) and ``seconds``."""
    code = _CHILD.replace("__SETUP__", textwrap.dedent(setup)).replace("__WORK__", textwrap.dedent(work))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMWATCH"):
            res = json.loads(line[len("MEMWATCH"):])
            res["growth_anon"] = res["peak_anon"] - res["baseline_anon"]
            return res
    raise RuntimeError(f"measured work failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
