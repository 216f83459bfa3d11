"""gevent (pure-Python mode) running on the greenlet emulation.

Each test runs a small gevent program through ``python -m stackless.greenlet``
in a fresh interpreter and checks its output.  gevent's own test suite runs
under the emulation in ``.ci/gevent-subset``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if sys.implementation.name == "pypy":
    # documented in docs/greenlet.md: gevent on PyPy is built for PyPy's
    # own greenlet module and does not run on the emulation
    pytest.skip("gevent on PyPy needs PyPy's own greenlet", allow_module_level=True)

try:
    import gevent  # noqa: F401  (only checks that it is installed)
except ImportError:  # pragma: no cover
    pytest.skip("gevent is not installed", allow_module_level=True)


def run_emulated(program: str, tmp_path) -> list:
    """Run ``program`` with gevent on the emulation; returns its output lines."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import greenlet, stackless.greenlet
        assert greenlet is stackless.greenlet
    """) + textwrap.dedent(program))
    env = dict(os.environ)
    env.pop("PURE_PYTHON", None)
    env.pop("STACKLESS_GREENLET", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-m", "stackless.greenlet", str(script)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_gevent_is_pure_python_on_the_emulation(tmp_path):
    out = run_emulated("""
        import os, gevent, gevent.greenlet, gevent.hub
        print(os.environ["PURE_PYTHON"])
        print(gevent.greenlet.Greenlet.__mro__[1] is stackless.greenlet.greenlet)
        print(isinstance(gevent.get_hub(), stackless.greenlet.greenlet))
    """, tmp_path)
    assert out == ["1", "True", "True"]


def test_spawn_join_values_and_errors(tmp_path):
    out = run_emulated("""
        import gevent
        def add(a, b):
            gevent.sleep(0.001)
            return a + b
        def fail():
            raise ValueError("nope")
        gs = [gevent.spawn(add, i, i) for i in range(50)]
        bad = gevent.spawn(fail)
        gevent.joinall(gs + [bad])
        print(sum(g.value for g in gs))
        print(bad.successful(), type(bad.exception).__name__, bad.exception)
    """, tmp_path)
    assert out[:2] == ["2450", "False ValueError nope"]


def test_kill_timeout_and_ordering(tmp_path):
    out = run_emulated("""
        import gevent
        from gevent import Timeout, GreenletExit
        log = []
        def sleeper():
            try:
                gevent.sleep(10)
            except GreenletExit:
                log.append("killed")
                raise
        g = gevent.spawn(sleeper)
        gevent.sleep(0)
        g.kill()
        print(log, g.dead, type(g.value).__name__)
        try:
            with Timeout(0.01):
                gevent.sleep(1)
        except Timeout:
            print("timeout")
        order = []
        for i in range(3):
            gevent.spawn(order.append, i)
        gevent.sleep(0)
        print(order)
    """, tmp_path)
    assert out == ["['killed'] True GreenletExit", "timeout", "[0, 1, 2]"]


def test_queue_event_and_pool(tmp_path):
    out = run_emulated("""
        import gevent
        from gevent.queue import Queue
        from gevent.event import Event, AsyncResult
        from gevent.pool import Pool
        q = Queue()
        def producer():
            for i in range(10):
                q.put(i)
            q.put(None)
        def consumer():
            total = 0
            for item in iter(q.get, None):
                total += item
            return total
        p, c = gevent.spawn(producer), gevent.spawn(consumer)
        print(c.get())
        ev, result = Event(), AsyncResult()
        waiters = [gevent.spawn(lambda: ev.wait() and result.get()) for _ in range(20)]
        gevent.sleep(0)
        ev.set()
        result.set(7)
        gevent.joinall(waiters)
        print(sum(w.value for w in waiters))
        print(sorted(Pool(4).imap_unordered(lambda x: x * x, range(10))))
    """, tmp_path)
    assert out == ["45", "140", "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"]


def test_monkey_patched_sockets_and_pywsgi(tmp_path):
    out = run_emulated("""
        from gevent import monkey
        monkey.patch_all()
        import socket, threading, urllib.request
        import gevent
        from gevent.pywsgi import WSGIServer
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello " + environ["PATH_INFO"].encode()]
        server = WSGIServer(("127.0.0.1", 0), app, log=None)
        server.start()
        port = server.server_port
        def fetch(i):
            with urllib.request.urlopen("http://127.0.0.1:%d/%d" % (port, i), timeout=10) as r:
                return r.read().decode()
        jobs = [gevent.spawn(fetch, i) for i in range(20)]
        gevent.joinall(jobs, raise_error=True)
        print(sorted(j.value for j in jobs)[:2])
        server.stop()
        print(threading.current_thread().name, socket.socket.__module__)
    """, tmp_path)
    assert out == ["['hello /0', 'hello /1']", "MainThread gevent._socket3"]


def test_threadpool_and_hubs_in_threads(tmp_path):
    out = run_emulated("""
        import gevent, threading
        from gevent.threadpool import ThreadPool
        pool = ThreadPool(3)
        def work(n):
            # each worker thread has its own hub and main greenlet
            import greenlet
            gevent.sleep(0.001)
            return n * 2, greenlet.getcurrent().parent is None
        results = [pool.spawn(work, i) for i in range(6)]
        gevent.joinall(results)
        print([r.get()[0] for r in results])
        pool.kill()
    """, tmp_path)
    assert out == ["[0, 2, 4, 6, 8, 10]"]
