"""A gevent ``pywsgi`` hello-world server under ``wrk`` on 127.0.0.1:
pure-Python gevent on the greenlet emulation against compiled gevent on the C
greenlet (and, for reference, pure-Python gevent on the C greenlet).

``python benchmarks/bench_gevent_wsgi.py [seconds]`` starts each server in its
own process, loads it with ``wrk`` for a bounded time (default 5 s, 1 thread,
32 connections), and reports requests per second and the server's CPU time
per request (user + system, from /proc).  Needs ``wrk`` (Debian: apt-get
install wrk) and gevent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = r"""
import sys
from gevent.pywsgi import WSGIServer

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello world\n"]

server = WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
import greenlet, gevent
print(server.server_port, greenlet.__name__, gevent.__file__, flush=True)
server.serve_forever()
"""

MODES = (
    ("emulation, pure-Python gevent", True, "1"),
    ("C greenlet, compiled gevent", False, None),
    ("C greenlet, pure-Python gevent", False, "1"),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_mode(emulated: bool, pure: Optional[str], seconds: int) -> tuple:
    """Returns (requests per second, server CPU seconds per request)."""
    probe_dir = os.path.join(ROOT, "build", "bench-greenlet")
    os.makedirs(probe_dir, exist_ok=True)
    server_py = os.path.join(probe_dir, "wsgi_server.py")
    with open(server_py, "w") as f:
        f.write(SERVER)
    env = dict(os.environ)
    env.pop("STACKLESS_GREENLET", None)
    env.pop("PURE_PYTHON", None)
    if pure is not None:
        env["PURE_PYTHON"] = pure
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + path)
    args = [sys.executable, server_py]
    if emulated:
        args[1:1] = ["-m", "stackless.greenlet"]
    server = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().split()
        if not line:
            raise RuntimeError("the server did not start")
        port = int(line[0])
        url = "http://127.0.0.1:%d/" % port
        # Warm up, then measure.
        subprocess.run(["wrk", "-t1", "-c32", "-d1s", url], capture_output=True, timeout=60)
        before = cpu_seconds(server.pid)
        out = subprocess.run(["wrk", "-t1", "-c32", "-d%ds" % seconds, url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
        after = cpu_seconds(server.pid)
    finally:
        server.kill()
        server.wait()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    return rate, (after - before) / max(requests, 1)


def main(seconds: int = 5) -> None:
    """Measure and print the table."""
    if shutil.which("wrk") is None:
        print("bench_gevent_wsgi: wrk not found (Debian: apt-get install wrk); skipped")
        return
    try:
        import gevent  # noqa: F401
    except ImportError:
        print("bench_gevent_wsgi: gevent not installed; skipped")
        return
    rows = []
    for name, emulated, pure in MODES:
        rate, cpu = run_mode(emulated, pure, seconds)
        rows.append((name, rate, cpu))
        time.sleep(0.5)
    reference = rows[1][2]
    print("gevent pywsgi hello world, wrk -t1 -c32 -d%ds, Python %s"
          % (seconds, sys.version.split()[0]))
    print("%-34s %12s %16s %8s" % ("server", "requests/s", "CPU/request", "ratio"))
    for name, rate, cpu in rows:
        print("%-34s %12.0f %13.1f us %7.2fx" % (name, rate, cpu * 1e6, cpu / reference))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
