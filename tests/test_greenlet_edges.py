"""Edge cases of the greenlet 3.x API, on the C greenlet (the oracle) and on
the emulation alike: throw() into dead greenlets, a tracer that fails or
switches while a greenlet starts, a run attribute read with side effects,
kills, the class attributes, greenlet's C API.  (tests/test_greenlet.py
holds the main API; the fixture ``gl`` is the same.)"""

from __future__ import annotations

import contextvars
import functools
import ctypes
import gc
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

from test_greenlet import C_GREENLET, IMPLS, PYPY, cpython_frames, needs_refcounting  # the same oracle set-up


@pytest.fixture(params=IMPLS)
def gl(request):
    """The greenlet module under test."""
    return request.param


def dead(gl, value="done"):
    g = gl.greenlet(lambda: value)
    assert g.switch() == value
    return g


# -- throw() into a dead greenlet ----------------------------------------------

@pytest.mark.parametrize("args", [(), ("GreenletExit",), ("GreenletExit('x')",)])
def test_greenlet_exit_into_dead_greenlet_returns_it_to_the_parent(gl, args):
    args = tuple(eval(a, {"GreenletExit": gl.GreenletExit}) for a in args)
    target = dead(gl)
    thrower = gl.greenlet(lambda: target.throw(*args))
    got = thrower.switch()          # the dead greenlet's parent (main) gets it
    assert type(got) is gl.GreenletExit
    assert str(got) == ("x" if args and str(args[0]) == "x" else "")
    if args and isinstance(args[0], gl.GreenletExit):
        assert got is args[0]
    # the thrower stays suspended in throw() and resumes from there
    assert not thrower.dead
    assert thrower.switch("again") == "again" and thrower.dead


def test_throw_into_dead_greenlet_from_main_returns_greenlet_exit(gl):
    got = dead(gl).throw()
    assert type(got) is gl.GreenletExit and str(got) == ""


def test_throw_into_dead_parent_goes_to_its_parent(gl):
    a = gl.greenlet(lambda: "a done")
    b = gl.greenlet(lambda: a.throw(), parent=a)
    assert a.switch() == "a done"
    got = b.switch()
    assert type(got) is gl.GreenletExit
    assert b.switch(5) == 5           # b resumes in throw(), dies: to a, dead: to main


def test_other_exception_into_dead_greenlet_is_raised_in_its_parent(gl):
    target = dead(gl)
    thrower = gl.greenlet(lambda: target.throw(KeyError, "k"))
    with pytest.raises(KeyError) as info:
        thrower.switch()
    assert info.value.args == ("k",)
    assert not thrower.dead


def test_throw_into_unstarted_greenlet_without_run(gl):
    g = gl.greenlet()
    with pytest.raises(AttributeError) as info:
        g.throw(KeyError)
    assert "run" in str(info.value)
    assert not g.dead and not g     # still unstarted
    g.run = lambda: "ran"
    assert g.switch() == "ran"


# -- an asynchronous exception at any point of a switch ------------------------

class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt that a signal handler raises."""


def _raw_setprofile(gl):
    # the emulation hides its own frames from profilers (_hide.py): the raw
    # one sees them, so that the exception lands inside its switch
    hide = getattr(gl, "_hide", None)
    return hide._orig_setprofile if hide is not None else sys.setprofile


def _skip_c_greenlet_on_a_debug_build(gl):
    if gl is C_GREENLET and hasattr(sys, "gettotalrefcount") and sys.version_info >= (3, 12):
        pytest.skip("the C greenlet 3.5.6 aborts a debug build of CPython 3.12+ here (its "
                    "instrumentation sanity check, when a profiler raises at run's return)")


def _launch(gl, out):
    g = gl.greenlet(lambda *a: out.append(a[0]) or "done")
    return g, lambda: g.switch(1)


def _resume(gl, out):
    def run():
        out.append(gl.getcurrent().parent.switch("waiting"))
        return "done"
    g = gl.greenlet(run)
    assert g.switch() == "waiting"
    return g, lambda: g.switch(1)


def _throw(gl, out):
    def run():
        try:
            gl.getcurrent().parent.switch("waiting")
        except KeyError as e:
            out.append(e.args[0])
        return "done"
    g = gl.greenlet(run)
    assert g.switch() == "waiting"
    return g, lambda: g.throw(KeyError, 1)


@pytest.mark.skipif(PYPY, reason="PyPy runs no profiler in the C-level calls of the emulation")
@pytest.mark.parametrize("how", [_launch, _resume, _throw])
def test_asynchronous_exception_at_any_point_of_a_switch(gl, how):
    # An exception raised at each point where a signal handler could run
    # (every call, return and return from C that a profiler sees) during a
    # switch: the C greenlet's switch is C code, so the exception lands
    # before it (the greenlet is as it was and the switch can be made
    # again) or in the target greenlet's code (its run ends with it, and
    # it goes to the parent).  The emulation must be in one of these
    # states too, never half-way (seed 50055 of tests/stress greenlet: a
    # greenlet left without its run, every later switch raising
    # AttributeError('run')).
    _skip_c_greenlet_on_a_debug_build(gl)
    setprofile = _raw_setprofile(gl)
    points = 0
    for k in range(1, 400):
        out = []
        g, op = how(gl, out)
        n = [0]

        def prof(frame, event, arg):
            if event in ("call", "return", "c_return"):
                n[0] += 1
                if n[0] == k:
                    raise Interrupt
        setprofile(prof)
        try:
            got = op()
        except Interrupt:
            got = "interrupted"
        finally:
            setprofile(None)
        assert gl.getcurrent().parent is None, k        # main runs, and knows it
        if got == "done":
            assert g.dead and out == [1], k
        elif not g.dead:
            assert got == "interrupted" and out == [], k
            assert op() == "done", k                    # as it was: the switch works
        else:
            assert got == "interrupted" and out in ([], [1]), k
        assert gl.greenlet(lambda: 5).switch() == 5
        if n[0] < k:
            points = k
            break
    assert points > 2


def _raw_settrace(gl):
    hide = getattr(gl, "_hide", None)
    return hide._orig_settrace if hide is not None else sys.settrace


@pytest.mark.skipif(PYPY, reason="PyPy runs no profiler in the C-level calls of the emulation")
@pytest.mark.parametrize("how", [_launch, _resume, _throw])
def test_two_asynchronous_exceptions_in_one_switch(gl, how):
    # Two signals whose handlers raise, the second landing a few Python
    # calls or returns after the first: anywhere in the emulation's own
    # handling of the first (its recovery included), or in the target's
    # code.  The first is raised by a profiler, as above, the second by a
    # trace function at 'call' and 'return' events, the points (with the
    # returns from C that the first covers) where a signal handler runs.
    # Whatever the outcome, main runs and knows it, and the greenlet is
    # either as it was (and the switch works) or has run.
    _skip_c_greenlet_on_a_debug_build(gl)
    setprofile, settrace = _raw_setprofile(gl), _raw_settrace(gl)
    # a signal may also land in a finalizer or a gc callback (the
    # emulation's own), which reports it as unraisable
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(u.exc_type)
    try:
        points, seconds = _two_exceptions(gl, how, setprofile, settrace)
    finally:
        sys.unraisablehook = old_hook
    assert points > 2 and seconds >= 3
    assert set(unraisable) <= {Interrupt}


def _two_exceptions(gl, how, setprofile, settrace):
    points = seconds = 0
    for k in range(1, 400):
        n = [0]
        for d in range(6):
            out = []
            g, op = how(gl, out)
            n[0] = 0
            second = [None]

            def prof(frame, event, arg):
                if event in ("call", "return", "c_return"):
                    n[0] += 1
                    if n[0] == k:
                        second[0] = d       # the second signal: d events later
                        raise Interrupt

            def trace(frame, event, arg):
                if isinstance(second[0], int) and event in ("call", "return"):
                    if second[0] == 0:
                        second[0] = "raised"
                        raise Interrupt
                    second[0] -= 1
                return trace
            got = []
            try:
                try:
                    settrace(trace)
                    setprofile(prof)
                    try:
                        got.append(op())
                    finally:
                        setprofile(None)
                        settrace(None)
                except Interrupt:
                    got.append("interrupted")
            except Interrupt:       # the second, in the handler of the first
                got.append("interrupted")
            seconds += second[0] == "raised"
            where = (k, d, got, out)
            assert gl.getcurrent().parent is None, where         # main runs, and knows it
            if "done" in got:
                assert g.dead and out == [1], where
            elif not g.dead:
                assert out == [], where
                assert op() == "done" and out == [1], where      # as it was: the switch works
            else:
                assert out in ([], [1]), where
            assert gl.greenlet(lambda: 5).switch() == 5, where
        if n[0] < k:
            points = k
            break
    return points, seconds


# -- _stack_saved -----------------------------------------------------------------

@pytest.mark.skipif(PYPY, reason="PyPy's _continuation does not tell (0 there, docs/greenlet.md)")
def test_stack_saved(gl):
    main = gl.getcurrent()
    seen = {}

    def run():
        seen["current"] = gl.getcurrent()._stack_saved
        seen["main"] = main._stack_saved
        main.switch()
    g = gl.greenlet(run)
    assert main._stack_saved == 0 and g._stack_saved == 0   # running; unstarted
    g.switch()
    assert seen["current"] == 0
    # The main greenlet, suspended while g runs: the C greenlet has copied a
    # few hundred bytes of it to the heap to start g; the emulation starts g
    # below it and copies nothing (docs/greenlet.md)
    assert seen["main"] > 0 if gl is C_GREENLET else seen["main"] == 0
    assert g._stack_saved > 0                               # suspended
    g.switch()
    assert g.dead and g._stack_saved == 0
    for op in (lambda: setattr(g, "_stack_saved", 1), lambda: delattr(g, "_stack_saved")):
        with pytest.raises(AttributeError) as info:
            op()
        assert str(info.value) == \
            "attribute '_stack_saved' of 'greenlet.greenlet' objects is not writable"


# -- a greenlet tracer at the start of a greenlet -------------------------------

def test_tracer_raising_at_launch_kills_the_greenlet_before_run(gl):
    ran, events = [], []

    def tracer(event, args):
        events.append(event)
        raise KeyError("tracer")
    g = gl.greenlet(lambda *a: ran.append(a))
    old = gl.settrace(tracer)
    try:
        with pytest.raises(KeyError) as info:
            g.switch()
        assert info.value.args == ("tracer",)
        assert gl.gettrace() is None
    finally:
        gl.settrace(old)
    assert events == ["switch"] and ran == []
    assert g.dead and not g
    assert g.switch(1) == 1 and g.switch(2) == 2   # to its parent, as any dead one


def test_tracer_raising_at_launch_raises_in_the_parent(gl):
    main = gl.getcurrent()
    parent_got = []

    def parent_run():
        try:
            main.switch("parent waiting")
        except KeyError as e:
            parent_got.append(e.args)
        return "parent done"
    parent = gl.greenlet(parent_run)
    assert parent.switch() == "parent waiting"
    child = gl.greenlet(lambda: "never", parent=parent)

    def tracer(event, args):
        if args[1] is child:
            raise KeyError("at launch")
    gl.settrace(tracer)
    try:
        assert child.switch() == "parent done"
    finally:
        gl.settrace(None)
    assert parent_got == [("at launch",)] and child.dead


def test_tracer_runs_in_the_new_greenlet_and_may_switch_away(gl):
    main = gl.getcurrent()
    log = []

    def tracer(event, args):
        origin, target = args
        log.append((event, origin is main, target is g1, gl.getcurrent() is target))
        if target is g1 and not log[1:]:
            log.append(main.switch("from the tracer"))
    g1 = gl.greenlet(lambda x: ("g1 ran with", x))
    gl.settrace(tracer)
    try:
        assert g1.switch("arg") == "from the tracer"   # run has not started yet
        assert g1.switch("back") == ("g1 ran with", "arg")
    finally:
        gl.settrace(None)
    assert log == [("switch", True, True, True), ("switch", False, False, True),
                   ("switch", True, True, True), "back", ("switch", False, False, True)]


# -- start-up: run is read first, and may do anything ----------------------------

def test_run_read_starts_the_greenlet_itself(gl):
    class Convoluted(gl.greenlet):
        reads = 0

        def __getattribute__(self, name):
            if name == "run" and type(self).reads == 0:
                type(self).reads = 1
                assert self.switch(43) == 43
            return gl.greenlet.__getattribute__(self, name)

        def run(self, value):
            while True:
                self.parent.switch(value)
    g = Convoluted()
    # the inner switch started it with 43; the outer one then switches to
    # the started greenlet, which sends 43 again
    assert g.switch(42) == 43
    g.throw()


def test_unstarted_parent_that_cannot_start_passes_its_error_on(gl):
    class Perverse(gl.greenlet):
        def __getattribute__(self, name):
            if name == "run":
                raise LookupError("no run here")
            return gl.greenlet.__getattribute__(self, name)
    seen = []
    child = gl.greenlet(lambda: seen.append(1), Perverse())
    for _ in range(2):
        with pytest.raises(LookupError):
            child.switch()
    assert seen == [1]


def test_unstarted_parent_without_run(gl):
    child = gl.greenlet(lambda: None, parent=gl.greenlet())
    with pytest.raises(AttributeError):
        child.switch()
    assert child.dead and not child.parent
    assert gl.getcurrent().switch(7) == 7     # nothing was left half-done
    assert gl.greenlet(lambda: "fine").switch() == "fine"


def test_run_none_is_a_value_and_subclass_run_still_wins(gl):
    assert gl.greenlet(run=None).run is None
    with pytest.raises(AttributeError):
        gl.greenlet().run

    class Sub(gl.greenlet):
        def run(self):
            return "method"
    assert Sub(None, gl.getcurrent()).switch() == "method"


@needs_refcounting
def test_unused_run_callable_is_released_in_the_new_greenlet(gl):
    main = gl.getcurrent()
    log = []

    class RunCallable:
        def __del__(self):
            log.append(("del", gl.getcurrent() is g))
            main.switch("from __del__")

    class G(gl.greenlet):
        def __getattribute__(self, name):
            if name == "run":
                return lambda: log.append("run")
            return gl.greenlet.__getattribute__(self, name)
    g = G(RunCallable())
    assert g.switch() == "from __del__"     # before run, from inside g
    assert log == [("del", True)]
    assert g.switch() is None and log == [("del", True), "run"] and g.dead


@cpython_frames
def test_switch_method_as_run(gl):
    main = gl.getcurrent()
    g = gl.greenlet(main.switch)
    assert g.switch("hop") == "hop"       # run is main.switch itself
    assert g and g.gr_frame is None       # no frame of its own below switch
    assert g.switch("back") == "back" and g.dead   # run returns it


# -- kills ---------------------------------------------------------------------------

@needs_refcounting
def test_parent_is_restored_after_a_kill(gl):
    hub = gl.greenlet(lambda: None)
    main = gl.getcurrent()
    seen = []

    def worker():
        try:
            main.switch()
        except gl.GreenletExit:
            seen.append(gl.getcurrent().parent)
            seen.append(gl.getcurrent())
            hub.switch()
    g = gl.greenlet(worker, parent=hub)
    g.switch()
    del g
    assert seen[0] is main and seen[1].parent is hub
    del seen[:]


@needs_refcounting
def test_a_kill_leaves_no_cycle_through_the_killing_frame(gl):
    class Marker:
        pass

    def killer():
        marker = Marker()
        g = gl.greenlet(lambda: gl.getcurrent().parent.switch())
        g.switch()
        del g                       # killed here: GreenletExit comes back
        return weakref.ref(marker)
    gc.disable()
    try:
        assert killer()() is None   # freed by reference counting alone
    finally:
        gc.enable()


@needs_refcounting
def test_greenlet_dropped_by_the_end_of_a_thread_function_is_killed(gl):
    exits = []

    def f():
        try:
            gl.getcurrent().parent.switch()
        except gl.GreenletExit:
            exits.append(1)
            raise

    def body():
        gs = tuple(gl.greenlet(f) for _ in range(3))
        for g in gs:
            g.switch()
        gs = ()     # kills two; the last one goes when the frame does
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert exits == [1, 1, 1]


@needs_refcounting
def test_failed_kill_goes_to_unraisablehook(gl):
    def run():
        try:
            gl.getcurrent().parent.switch()
        except gl.GreenletExit:
            raise KeyError("from the kill") from None
    g = gl.greenlet(run)
    g.switch()
    events = []
    old, sys.unraisablehook = sys.unraisablehook, events.append
    try:
        del g
    finally:
        sys.unraisablehook = old
    assert len(events) == 1
    assert type(events[0].exc_value) is KeyError and events[0].err_msg is None
    assert isinstance(events[0].object, gl.greenlet) and events[0].object.dead


@needs_refcounting
@pytest.mark.parametrize("from_main", [True, False])
def test_greenlet_dropped_as_another_run_ends_is_killed(gl, from_main, capfd):
    """The run callable of a greenlet is its last reference to a suspended
    greenlet, so that greenlet is dropped as the run ends.  The C greenlet
    kills it before switch() returns.  Stress greenlet seed 638749468 found
    the emulation's kill switching from the finished run's continulet
    ("continulet already finished" reported, the greenlet kept alive, its
    finally never run) when the drop came before the finished greenlet's
    bookkeeping (session 9)."""
    log, reports = [], []

    def suspended():
        def run():
            try:
                gl.getcurrent().parent.switch()
            finally:
                log.append("killed")
        x = gl.greenlet(run)
        x.switch()
        return [x]

    def ends(holder):
        log.append("ends")
        return "value"

    def launch():
        return gl.greenlet(functools.partial(ends, suspended())).switch()

    old, sys.unraisablehook = sys.unraisablehook, reports.append
    try:
        got = launch() if from_main else gl.greenlet(launch).switch()
    finally:
        sys.unraisablehook = old
    assert got == "value"
    assert log == ["ends", "killed"]
    assert [repr(r.exc_value) for r in reports] == []
    assert "did not kill" not in capfd.readouterr().err


# -- attributes ----------------------------------------------------------------------

def test_class_attributes_of_the_greenlet_type(gl):
    g = gl.greenlet(lambda: None)
    for obj in (gl.greenlet, g):
        assert obj.getcurrent() is gl.getcurrent()
        assert obj.gettrace() is gl.gettrace()
        assert obj.GreenletExit is gl.GreenletExit and obj.error is gl.error
    old = gl.greenlet.settrace(print)
    assert gl.gettrace() is print
    gl.settrace(old)


def test_instance_dict_rules(gl):
    g = gl.greenlet(lambda: None)
    g.x = 1
    g.__dict__ = {"y": 2}
    assert g.y == 2 and not hasattr(g, "x")
    with pytest.raises(TypeError) as info:
        del g.__dict__
    assert str(info.value) == "__dict__ may not be deleted"
    with pytest.raises(TypeError) as info:
        g.__dict__ = 42
    assert str(info.value) == "__dict__ must be a dictionary"


def test_dead_greenlet_keeps_the_context_it_ended_in(gl):
    var = contextvars.ContextVar("v")

    def run():
        var.set(1)
    g = gl.greenlet(run)
    g.switch()
    assert g.dead and g.gr_context is not None and g.gr_context[var] == 1
    with pytest.raises(AttributeError) as info:
        del g.gr_context
    assert str(info.value) == "can't delete context attribute"
    ctx = contextvars.copy_context()
    g2 = gl.greenlet(lambda: ctx.run(var.set, 2))
    g2.switch()
    assert g2.gr_context is None      # its own context was never used
    assert ctx[var] == 2


@pytest.mark.skipif(PYPY, reason="PyPy does not run the finalizers of cycles at interpreter exit")
def test_getcurrent_refuses_while_the_interpreter_finalizes(gl):
    code = textwrap.dedent("""
        import gc, os, importlib
        gl = importlib.import_module(%r)
        gc.disable()
        class Late:
            def __del__(self):
                try:
                    gl.getcurrent()
                except RuntimeError as e:
                    os.write(1, b"refused: " + str(e).encode() + b"\\n")
                else:
                    os.write(1, b"returned\\n")
        a = Late(); a.cycle = a; del a
    """) % gl.__name__
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: ")


# -- greenlet's C API (the greenlet._C_API capsule) ---------------------------------

@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's C API")
def test_c_api_capsule(gl):
    api = _c_api(gl)
    assert ctypes.cast(api[0], ctypes.py_object).value is gl.greenlet
    assert ctypes.cast(api[1], ctypes.py_object).value is gl.error
    assert ctypes.cast(api[2], ctypes.py_object).value is gl.GreenletExit
    obj, ptr, num = ctypes.py_object, ctypes.c_void_p, ctypes.c_int
    new = ctypes.PYFUNCTYPE(obj, obj, ptr)(api[3])
    current = ctypes.PYFUNCTYPE(obj)(api[4])
    throw = ctypes.PYFUNCTYPE(obj, obj, obj, obj, ptr)(api[5])
    switch = ctypes.PYFUNCTYPE(obj, obj, obj, ptr)(api[6])
    set_parent = ctypes.PYFUNCTYPE(num, obj, obj)(api[7])
    is_main, started, active = (ctypes.PYFUNCTYPE(num, obj)(api[i]) for i in (8, 9, 10))
    get_parent = ctypes.PYFUNCTYPE(ptr, obj)(api[11])
    main = current()
    assert main is gl.getcurrent() and is_main(main) and started(main) and active(main)
    assert get_parent(main) is None            # NULL for a main greenlet

    def run(*args):
        return ("ran", args, gl.getcurrent().parent is main)
    g = new(run, None)
    assert g.parent is main and not started(g) and not is_main(g)
    assert switch(g, (1, 2), None) == ("ran", (1, 2), True)
    assert started(g) and not active(g) and g.dead
    def run2():
        try:
            gl.getcurrent().parent.switch("waiting")
        except KeyError as e:
            return ("caught", e.args)
    g2 = gl.greenlet(run2)
    assert switch(g2, (), None) == "waiting" and active(g2)
    assert throw(g2, KeyError, "v", None) == ("caught", ("v",)) and g2.dead
    g3 = gl.greenlet(lambda: None)
    other = gl.greenlet(lambda: None)
    assert set_parent(g3, other) == 0 and g3.parent is other
    with pytest.raises(TypeError):
        set_parent(g3, 42)


def _c_api(gl):
    """The 12 pointers of a greenlet module's C API."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule = gl._C_API
    return (ctypes.c_void_p * 12).from_address(get(capsule, b"greenlet._C_API"))


@needs_refcounting
def test_a_finished_greenlet_whose_run_is_its_own_method_is_freed_at_once(gl):
    # the C greenlet drops its run when it starts: a greenlet subclass whose
    # run is a method of its own (gevent's Greenlet) leaves no cycle behind,
    # and is freed when its last reference goes (gevent's run-info tests
    # see every greenlet the GC has not freed yet)
    class Worker(gl.greenlet):
        def run(self, x):
            return x * 2

    events = []
    gc.disable()
    # with a tracer too, as gevent has one (the launch then differs)
    old = gl.settrace(lambda event, args: events.append(event))
    try:
        for traced in (True, False):
            if not traced:
                gl.settrace(old)
            g = Worker()
            assert g.switch(21) == 42 and g.dead
            ref = weakref.ref(g)
            del g
            assert ref() is None, "traced" if traced else "not traced"
    finally:
        gl.settrace(old)
        gc.enable()
    assert events == ["switch", "switch"]
