"""Channels: the rendezvous of a sending and a receiving tasklet, and the
channel callback."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from stackless import _pickling
from stackless._common import (_BLOCK_TRAP, _CLOSED, _NOARG, _PYPY, _at_least_one, _at_most,
                               _callback, _index, _make_exception, _may_switch, _no_args,
                               _one_arg, _own_module, bomb)
from stackless._switching import _leave, _recover, _switch, _take_tempval
from stackless._threads import _ThreadState, _ts, _wake

if TYPE_CHECKING:
    from stackless._tasklet import tasklet

_own_module(globals())

_channel_cb: Optional[Callable] = None
# What makes a channel's queue of waiters: a deque here, and with the
# accelerator its WaitQueue (src/stackless_waitqueue.c: the same
# operations, a tenth of a deque's memory), which install() puts here.
_new_queue: Callable[[], Any] = deque


def set_channel_callback(callback: Any = _NOARG, *_more: Any) -> Optional[Callable]:
    """Install ``callback(channel, tasklet, sending, willblock)``.

    It is called on every channel action.  Returns the previous callback.
    """
    if callback is _NOARG or _more:
        raise _one_arg("set_channel_callback", callback, _more)
    global _channel_cb
    if callback is not None and not callable(callback):
        raise TypeError("channel callback must be callable")
    old, _channel_cb = _channel_cb, callback
    return old


def get_channel_callback(*_more: Any) -> Optional[Callable]:
    """Return the installed channel callback, or None."""
    if _more:
        raise _no_args("get_channel_callback", _more)
    return _channel_cb


class _ChannelFlags:
    """The slots of a channel that hold only small ints and bools: the
    accelerator has the garbage collector skip them (see _TaskletFlags)."""

    __slots__ = ("_balance", "_preference", "_schedule_all", "_closing")


class channel(_ChannelFlags):
    """A rendezvous point for tasklets: ``send`` waits for ``receive``.

    ``balance`` is the number of waiting senders (positive) or receivers
    (negative).  ``preference`` says who runs first after a rendezvous:
    -1 the receiver (default), 1 the sender, 0 nobody switches.
    """

    __slots__ = ("_queue", "__weakref__")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Stackless's channel ignores its arguments
        self._queue: Any = _new_queue()
        self._balance = 0
        self._preference = -1
        self._schedule_all = 0
        self._closing = False

    # -- waiting queue --------------------------------------------------------
    #
    # Every change of a channel's state and of the run queue is a
    # transaction: a stretch of bytecode that calls nothing (attribute and
    # subscript operations on our own objects) and drops no reference that
    # could be the last one, except for one C call at its very end.  No
    # signal handler, trace or profile function, finalizer, GC or other
    # thread can run inside it; an exception that lands after its last call
    # finds the state consistent.  See docs/design.md, "Exception safety".

    def _remove_waiter(self, t: tasklet) -> Any:
        """Take ``t`` off this channel (killed, revived or rolled back).

        Returns the value a sender was sending: the caller drops it once
        the state is consistent again (its ``__del__`` may use channels)."""
        i = _index(self._queue, t)
        if t._channel is not self:
            return None
        if i < 0:               # never queued: nothing else to undo
            t._blocked = 0
            t._channel = None
            return None
        old = t._tempval if t._blocked > 0 else None    # a sender's value
        if t._blocked > 0:
            self._balance = self._balance - 1
            t._tempval = None
        else:
            self._balance = self._balance + 1
        t._blocked = 0
        t._channel = None
        del self._queue[i]
        return old

    def _pair(self, ts: _ThreadState, cur: tasklet, sending: bool, value: Any) -> Any:
        """``cur`` meets the first waiter: a receiver gets ``value``, or a
        sender gives its value (returned).  The waiter becomes runnable and,
        as ``preference`` and ``schedule_all`` say, ``cur`` switches away."""
        q = self._queue
        target = q[0]
        tts = target._ts
        pref = self._preference
        # no switch under a switch trap, nor while this thread collects
        # garbage (_continuation would refuse it after the pairing)
        quiet = ts.trap or not _may_switch()
        run_now = tts is ts and (self._schedule_all or pref == (-1 if sending else 1)) \
            and not quiet
        first = target if tts is ts and pref == (-1 if sending else 1) \
            and not self._schedule_all and not quiet else None
        rq = tts.rq
        balance = self._balance + (1 if sending else -1)
        old = target._tempval
        # a receiver that lets the sender run first shows the value it took
        # in its tempval until it runs again (as in Stackless)
        held = cur._tempval if run_now and not sending else None
        # -- transaction
        target._tempval = value if sending else None
        if run_now and not sending:
            cur._tempval = old
        del q[0]
        self._balance = balance
        target._blocked = 0
        target._channel = None
        target._scheduled = True
        if first is None:
            rq.append(target)
        elif rq and rq[0] is cur:
            rq.insert(1, target)
        else:
            rq.appendleft(target)
        # -- end of transaction
        if tts is not ts:
            _wake(tts)
        if sending or run_now:
            # the receiver's previous tempval, or our own (the value moved
            # into it): its __del__ may use channels
            del old, held
            old = None
        if run_now:
            if rq[0] is cur:
                rq.rotate(-1)
            nxt = rq[0]
            if nxt is not cur:
                _switch(ts, cur, nxt)
            v = _take_tempval(cur)
            if not sending:
                return v
        return old

    def _wait(self, ts: _ThreadState, cur: tasklet, direction: int, value: Any) -> None:
        """Nobody to pair with: queue ``cur`` (a sender of ``value`` when
        ``direction`` is 1, a receiver when -1) and block until woken."""
        if self._closing:
            raise ValueError(_CLOSED)
        if cur._block_trap:
            raise RuntimeError(_BLOCK_TRAP)
        if ts.trap:
            raise RuntimeError("switch_trap")
        balance = self._balance + direction
        # -- transaction
        if direction > 0:
            cur._tempval = value
        cur._blocked = direction
        cur._channel = self
        self._balance = balance
        self._queue.append(cur)
        # -- end of transaction; _leave takes cur off the run queue
        _leave(ts, cur)

    # -- sending and receiving ------------------------------------------------

    def send(self, value: Any = _NOARG, *_more: Any) -> None:
        """Send ``value``; block until a receiver takes it."""
        if value is _NOARG or _more:
            raise _one_arg("send", value, _more)
        ts = _ts()
        cur = ts.current
        if _channel_cb is not None:
            # as in Stackless: the callback finds the value in the sender's
            # tempval, and its flags are ints.  If it raises, nothing was
            # sent and the value goes: left there, a bomb would go off at
            # the sender's next switch, out of some later run() (which
            # then never returned the tasklet it had interrupted).
            cur._tempval = value
            try:
                _callback(_channel_cb, self, cur, 1, int(self._balance >= 0))
            except BaseException:
                if cur._tempval is value:
                    cur._tempval = None
                raise
        if cur._tempval is not None:
            # what the sender held goes now: its __del__ may use channels
            cur._tempval = None
        try:
            if self._balance < 0:
                self._pair(ts, cur, True, value)
                return None
            self._wait(ts, cur, 1, value)
        except BaseException:
            try:
                _recover(ts, cur)
            finally:   # again if a second signal landed in it (idempotent)
                _recover(ts, cur)
            raise
        _take_tempval(cur)
        return None

    def receive(self, *_more: Any) -> Any:
        """Receive a value; block until a sender provides one."""
        if _more:
            raise _no_args("receive", _more)
        ts = _ts()
        cur = ts.current
        if _channel_cb is not None:
            _callback(_channel_cb, self, cur, 0, int(self._balance <= 0))
        if cur._tempval is not None:
            # the received value replaces it; it goes now (its __del__ may
            # use channels), as in send()
            cur._tempval = None
        try:
            if self._balance > 0:
                v = self._pair(ts, cur, False, None)
            else:
                self._wait(ts, cur, -1, None)
                v = cur._tempval
                cur._tempval = None
        except BaseException:
            try:
                _recover(ts, cur)
            finally:   # again if a second signal landed in it (idempotent)
                _recover(ts, cur)
            raise
        if type(v) is bomb:
            try:
                v.raise_()
            finally:
                v = None    # no cycle through this frame (see bomb.raise_)
        return v

    def send_exception(self, exc: Any = _NOARG, *args: Any) -> None:
        """Send an exception: the receiver raises ``exc(*args)``."""
        if exc is _NOARG:
            raise _at_least_one("send_exception")
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            raise TypeError("send_exception: exception class expected")
        e = exc(*args)
        return self.send(bomb(exc, e, None))

    def send_throw(self, exc: Any = _NOARG, val: Any = None, tb: Any = None,
                   *_more: Any) -> None:
        """Send an exception like ``throw``: type, instance or (type, value, tb)."""
        if exc is _NOARG:
            raise _at_least_one("send_throw")
        if _more:
            raise _at_most("send_throw", 3, _more)
        e = _make_exception(exc, val)
        return self.send(bomb(type(e), e, tb))

    def send_sequence(self, seq: Any = _NOARG, *_more: Any) -> int:
        """Send every item of ``seq``; return how many were sent."""
        if seq is _NOARG or _more:
            raise _one_arg("send_sequence", seq, _more)
        n = 0
        send = self.send
        for item in seq:
            send(item)
            n += 1
        return n

    def __iter__(self, *_more: Any) -> "channel":
        if _more:
            raise _no_args("__iter__", _more)
        return self

    def __next__(self, *_more: Any) -> Any:
        if _more:
            raise _no_args("__next__", _more)
        if self._closing and self._balance <= 0:
            raise StopIteration     # no sender left to receive from
        return self.receive()

    # -- attributes -----------------------------------------------------------

    @property
    def balance(self) -> int:
        """Waiting senders (positive) or receivers (negative)."""
        return self._balance

    @property
    def queue(self) -> Optional[tasklet]:
        """The first waiting tasklet (the others follow through ``.next``)."""
        q = self._queue
        return q[0] if q else None

    @property
    def closing(self) -> bool:
        """True after :meth:`close`."""
        return self._closing

    @property
    def closed(self) -> bool:
        """True when closing and nobody waits any more."""
        return self._closing and self._balance == 0

    def close(self, *_more: Any) -> None:
        """Refuse further blocking operations; waiting tasklets may finish."""
        if _more:
            raise _no_args("close", _more)
        self._closing = True

    def open(self, *_more: Any) -> None:
        """Undo :meth:`close`."""
        if _more:
            raise _no_args("open", _more)
        self._closing = False

    @property
    def preference(self) -> int:
        """Who runs first after a rendezvous: -1 the receiver, 1 the sender,
        0 nobody switches (other values count by their sign)."""
        return self._preference

    @preference.setter
    def preference(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("preference must be set to an integer")
        self._preference = 1 if value > 0 else -1 if value < 0 else 0

    @property
    def schedule_all(self) -> int:
        """1 when every channel operation lets the next tasklet run, else 0."""
        return self._schedule_all

    @schedule_all.setter
    def schedule_all(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("schedule_all must be set to a bool or integer")
        self._schedule_all = 1 if value else 0

    def __repr__(self) -> str:
        return "<%s.%s object at %#x balance=%d>" % (
            type(self).__module__, type(self).__qualname__, id(self), self._balance)

    # -- pickling (stackless/_pickling.py) ------------------------------------

    __reduce__ = _pickling.channel_reduce
    __reduce_ex__ = _pickling.reduce_ex
    __setstate__ = _pickling.channel_setstate


if _PYPY:
    # PyPy switches threads inside a transaction: make them exclusive there
    from stackless import _channel_pypy
    _channel_pypy.install(channel, globals())
