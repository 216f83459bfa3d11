"""The optional C accelerators (_stackless_accel for stackless,
_greenlet_accel for stackless.greenlet) and the pure-Python reference they
stand in for: the same tests pass on both."""
import os
import subprocess
import sys

import pytest

import stackless
import stackless.greenlet

HERE = os.path.dirname(os.path.abspath(__file__))
cpython_only = pytest.mark.skipif(sys.implementation.name != "cpython",
                                  reason="the accelerator is built for CPython only")
# These check the accelerated set-up of this process; STACKLESS_ACCEL=0 turns
# it off on purpose (the subprocess tests below cover both modes either way).
accelerated_here = pytest.mark.skipif(os.environ.get("STACKLESS_ACCEL") == "0",
                                      reason="this process runs with STACKLESS_ACCEL=0")


def _python(code: str, accel: str) -> str:
    env = dict(os.environ, STACKLESS_ACCEL=accel)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@cpython_only
@accelerated_here
def test_accelerator_is_used_by_default():
    import _stackless_accel
    assert stackless._accelerated
    assert type(stackless.channel.__dict__["send"]).__name__ == "method_descriptor"
    assert stackless.schedule is _stackless_accel.schedule
    # channel operations hold no lock (docs/design.md, "Exception safety")
    assert not hasattr(stackless, "_lock") and not hasattr(_stackless_accel, "Lock")


@cpython_only
def test_accelerator_can_be_turned_off():
    code = "import stackless; print(stackless._accelerated, stackless.schedule.__module__)"
    assert _python(code, "0") == "False stackless"
    assert _python(code, "1") == "True _stackless_accel"


@cpython_only
@accelerated_here
def test_greenlet_accelerator_is_used_by_default():
    import _greenlet_accel
    assert stackless.greenlet._accelerated
    assert type(stackless.greenlet.greenlet.__dict__["switch"]).__name__ == "method_descriptor"
    assert stackless.greenlet.getcurrent is _greenlet_accel.getcurrent


@cpython_only
def test_greenlet_accelerator_can_be_turned_off():
    code = ("import stackless.greenlet as g; "
            "print(g._accelerated, type(g.greenlet.__dict__['switch']).__name__)")
    assert _python(code, "0") == "False function"
    assert _python(code, "1") == "True method_descriptor"


@cpython_only
def test_pure_python_reference_passes_the_same_tests():
    env = dict(os.environ, STACKLESS_ACCEL="0")
    files = [os.path.join(HERE, f) for f in ("test_stackless.py", "test_stackless_faults.py", "test_coexist.py",
                                              "test_greenlet.py", "test_greenlet_activation.py",
                                              "test_gevent_emulation.py")]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout


@cpython_only
def test_subclassed_channel_and_tasklet_take_the_fast_path_correctly():
    class Chan(stackless.channel):
        pass

    class Task(stackless.tasklet):
        pass

    ch = Chan()
    got = []
    Task(lambda: got.append(ch.receive()))()
    Task(lambda: ch.send("hello"))()
    stackless.run()
    assert got == ["hello"] and ch.balance == 0


def test_calling_the_tasklet_class_runs_its_and_its_subclasses_new_and_init():
    """As Stackless 3.7 (its tasklet is a C type): a subclass's own
    __new__ and __init__ run, with the arguments; the class's own
    construction binds, with arguments makes alive, and rejects what bind()
    rejects.  (The accelerator calls its C __new__ and __init__ straight
    while they are the class's, src/stackless_tasklet.c.)"""
    log = []

    class T(stackless.tasklet):
        def __new__(cls, *a, **k):
            log.append(("new", cls.__name__, a, k))
            return stackless.tasklet.__new__(cls, *a, **k)

        def __init__(self, *a, **k):
            log.append(("init", a, k))
            super().__init__(*a, **k)

    def f(x=None, y=None):
        log.append(("ran", x, y))
    t = T(f)(1)
    u = T(f, (2,), {"y": 3})
    u.insert()
    stackless.run()
    assert log == [("new", "T", (f,), {}), ("init", (f,), {}),
                   ("new", "T", (f, (2,), {"y": 3}), {}), ("init", (f, (2,), {"y": 3}), {}),
                   ("ran", 1, None), ("ran", 2, 3)]
    assert type(t) is T and not t.alive
    t = stackless.tasklet(func=f)
    assert type(t) is stackless.tasklet and not t.alive and t.tempval is f
    t = stackless.tasklet(f, args=(1,), kwargs={"y": 2})
    assert t.alive and not t.scheduled
    t.kill()
    with pytest.raises(TypeError, match="^tasklet function must be a callable or None$"):
        stackless.tasklet(5)
    with pytest.raises(TypeError, match=r"^bind\(\) takes at most 3 arguments \(4 given\)$"):
        stackless.tasklet(f, (1,), {}, 4)


@cpython_only
def test_a_replaced_tasklet_init_or_new_is_the_one_called():
    """The tasklet class is a Python class here (Stackless 3.7's is a C
    type whose attributes cannot be set): what is set on it counts, and
    the original comes back when it is put back."""
    cls, log = stackless.tasklet, []
    init, new = cls.__dict__["__init__"], cls.__dict__["__new__"]
    cls(len)            # (the usual way once, before they change)

    def my_init(self, *a):
        log.append("init")
        init(self, *a)

    def my_new(c, *a):
        log.append("new")
        return new(c, *a)
    try:
        cls.__init__ = my_init
        cls(len)
        cls.__new__ = my_new
        cls(len)
        cls.__init__ = init
        cls(len)
    finally:
        cls.__init__, cls.__new__ = init, new
    cls(len)
    assert log == ["init", "new", "init", "new"]


def test_a_replaced_tasklet_setup_is_the_one_called():
    """The same for setup(), which calling a tasklet runs: after tasklets
    were set up the usual way, and again once it is put back."""
    cls, log = stackless.tasklet, []
    setup = cls.__dict__["setup"]

    def my_setup(self, *a, **k):
        log.append(("mine", a, k))
        return setup(self, *a, **k)

    def f(*a, **k):
        log.append(("ran", a, k))
    cls(f)(0)
    stackless.run()
    try:
        cls.setup = my_setup
        cls(f)(1, k=2)
        cls(f).setup(3)
        stackless.run()
    finally:
        cls.setup = setup
    cls(f)(4)
    stackless.run()
    assert log == [("ran", (0,), {}), ("mine", (1,), {"k": 2}), ("mine", (3,), {}),
                   ("ran", (1,), {"k": 2}), ("ran", (3,), {}), ("ran", (4,), {})]


@cpython_only
@accelerated_here
def test_wrong_arguments_raise_like_the_reference():
    ch = stackless.channel()
    with pytest.raises(TypeError):
        ch.send()
    with pytest.raises(TypeError):
        ch.receive(1)
    with pytest.raises(TypeError):
        stackless.schedule(1, 2)
    with pytest.raises(TypeError):
        stackless.channel.send(object(), 1)


@cpython_only
@accelerated_here
def test_greenlet_switch_falls_back_for_what_it_does_not_handle():
    gl = stackless.greenlet
    main = gl.getcurrent()
    seen = []

    def run(*args, **kwargs):
        seen.append((args, kwargs))
        seen.append(main.switch(1, 2))          # a tuple
        seen.append(main.switch(a=1))           # keywords: the Python code
        return "end"
    g = gl.greenlet(run)
    assert g.switch(7, k=8) == (1, 2)           # unstarted: the Python code
    assert g.switch("x", "y") == {"a": 1}
    assert g.switch() == "end"
    assert seen == [((7,), {"k": 8}), ("x", "y"), ()]
    assert g.dead
    with pytest.raises(TypeError):
        gl.greenlet.switch(object())


def _collected_in_one_pass(make):
    """make() returns weak references to objects that only a reference
    cycle keeps alive; True when one gc.collect() frees them all."""
    import gc
    import weakref
    refs = [weakref.ref(o) for o in make()]
    gc.collect()
    return [r() is None for r in refs]


def test_cycles_through_a_tasklet_or_channel_are_collected():
    # The collector skips the tasklet's and the channel's flag slots
    # (accelerator); what can hold a reference must still be walked: the
    # function (here a closure over the tasklet), the instance dict, and
    # the class of a subclass instance, which goes in the same collection
    # as its last instance.
    def bound_to_itself():
        box = []
        t = stackless.tasklet(lambda: box)
        box.append(t)
        return [t]

    def in_its_dict():
        class Task(stackless.tasklet):
            pass
        t = Task(lambda: None)
        t.me = t
        return [t, Task]

    def channel_in_its_dict():
        class Chan(stackless.channel):
            pass
        c = Chan()
        c.me = c
        return [c, Chan]

    assert _collected_in_one_pass(bound_to_itself) == [True]
    assert _collected_in_one_pass(in_its_dict) == [True, True]
    assert _collected_in_one_pass(channel_in_its_dict) == [True, True]


@cpython_only      # (freed when its last reference goes: reference counting)
def test_a_freed_tasklet_releases_everything_it_held_once_with_any_class():
    """A tasklet's end frees what its slots held and calls its weak
    references' callbacks, for the class itself and for a subclass with
    slots and a __del__ of its own (the accelerator deallocates the class's
    slots itself, src/stackless_gcslots.c); __del__ runs once, and a
    tasklet that it revives stays whole."""
    import gc
    import weakref

    class Held:
        pass
    revived, log = [], []

    class Sub(stackless.tasklet):
        __slots__ = ("extra",)

        def __del__(self):
            log.append(("del", self.extra is not None, self.tempval is not None))
            if not revived:
                revived.append(self)

    for cls in (stackless.tasklet, Sub):
        held = [Held(), Held()]
        refs = [weakref.ref(h) for h in held]
        t = cls(lambda: None)()
        stackless.run()
        t.tempval = held[0]
        if cls is Sub:
            t.extra = held[1]
        called = []
        wr = weakref.ref(t, called.append)
        del held
        if cls is Sub:
            del t
            # revived by its __del__, whole
            assert [r() is not None for r in refs] == [True, True]
            assert log == [("del", True, True)] and called == []
            t = revived.pop()
            assert wr() is t and t.extra is refs[1]() and t.tempval is refs[0]()
        del t
        gc.collect()
        assert [r() for r in refs] == [None, None]
        assert wr() is None and called == [wr]
    assert log == [("del", True, True)]


def test_a_channels_waiters_keep_their_order_through_growth_and_removal():
    # The accelerator's queue of waiters (src/stackless_waitqueue.c) keeps
    # two inline and grows into a ring: waiters added after the first one
    # left wrap around it; two leave from the middle.  The values are
    # Stackless 3.7's (slp37).
    ch = stackless.channel()
    got = []

    def r(i):
        got.append((i, ch.receive()))
    ts = [stackless.tasklet(r)(i) for i in range(4)]
    stackless.run()
    assert ch.balance == -4
    ch.send("a")
    ts += [stackless.tasklet(r)(i) for i in range(4, 9)]
    stackless.run()
    ts[2].kill()
    ts[6].kill()
    order = []
    t = ch.queue
    while t is not None:
        order.append(ts.index(t))
        t = t.next
    assert order == [1, 3, 4, 5, 7, 8] and ch.balance == -6
    assert ts[4].prev is ts[3] and ts[1].prev is None and ts[8].next is None
    for x in "bcdefg":
        ch.send(x)
    stackless.run()
    assert got == [(0, "a"), (1, "b"), (3, "c"), (4, "d"), (5, "e"), (7, "f"), (8, "g")]
    assert ch.balance == 0 and ch.queue is None


def test_a_channels_queue_refuses_iteration_across_a_change_and_shows_its_waiters():
    # stackless._common._index looks again when another thread changed the
    # queue while it looked (RuntimeError, as a deque's iterator raises);
    # the collector sees the waiters.
    import gc
    ch = stackless.channel()
    ts = [stackless.tasklet(ch.receive)() for _ in range(3)]
    stackless.run()
    q = ch._queue
    assert list(q) == ts and len(q) == 3 and q[-1] is ts[2]
    assert all(t in gc.get_referents(q) for t in ts)
    it = iter(q)
    assert next(it) is ts[0]
    ch.send(1)
    with pytest.raises(RuntimeError):
        next(it)
    for t in ts[1:]:
        t.kill()
    assert len(q) == 0 and ch.balance == 0


@cpython_only
@accelerated_here
def test_a_channel_is_small():
    # 850 B with a deque for its queue (the pure-Python reference's), which
    # programs with a channel per tasklet paid per tasklet; Stackless 3.7's
    # channel is 80 B
    import tracemalloc
    tracemalloc.start()
    try:
        keep = [None] * 1000
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            keep[i] = stackless.channel()
        per = (tracemalloc.get_traced_memory()[0] - before) / 1000
    finally:
        tracemalloc.stop()
    assert per <= 192, per
