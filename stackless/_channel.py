"""Channels: the rendezvous of a sending and a receiving tasklet, and the
channel callback."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from stackless import _pickling
from stackless._common import _BLOCK_TRAP, _CLOSED, _make_exception, _own_module, bomb
from stackless._switching import _leave, _switch, _take_tempval
from stackless._threads import _ThreadState, _lock, _ts

if TYPE_CHECKING:
    from stackless._tasklet import tasklet

_own_module(globals())

_channel_cb: Optional[Callable] = None


def set_channel_callback(callback: Optional[Callable]) -> Optional[Callable]:
    """Install ``callback(channel, tasklet, sending, willblock)``.

    It is called on every channel action.  Returns the previous callback.
    """
    global _channel_cb
    if callback is not None and not callable(callback):
        raise TypeError("channel callback must be callable")
    old, _channel_cb = _channel_cb, callback
    return old


def get_channel_callback() -> Optional[Callable]:
    """Return the installed channel callback, or None."""
    return _channel_cb


class channel:
    """A rendezvous point for tasklets: ``send`` waits for ``receive``.

    ``balance`` is the number of waiting senders (positive) or receivers
    (negative).  ``preference`` says who runs first after a rendezvous:
    -1 the receiver (default), 1 the sender, 0 nobody switches.
    """

    __slots__ = ("_queue", "_balance", "preference", "schedule_all",
                 "_closing", "__weakref__", "__dict__")

    def __init__(self) -> None:
        self._queue: deque = deque()
        self._balance = 0
        self.preference = -1
        self.schedule_all = False
        self._closing = False

    # -- waiting queue --------------------------------------------------------

    def _remove_waiter(self, t: tasklet) -> None:
        """Take ``t`` off this channel (killed or revived), fixing balance."""
        try:
            self._queue.remove(t)
        except ValueError:
            return
        if t._blocked > 0:
            self._balance -= 1
            t._tempval = None
        else:
            self._balance += 1
        t._blocked = 0
        t._channel = None

    # -- sending and receiving ------------------------------------------------

    def send(self, value: Any) -> None:
        """Send ``value``; block until a receiver takes it."""
        ts = _ts()
        cur = ts.current
        if _channel_cb is not None:
            _channel_cb(self, cur, True, self._balance >= 0)
        _lock.acquire()
        if self._balance < 0:
            target = self._queue.popleft()
            self._balance += 1
            target._blocked = 0
            target._channel = None
            target._tempval = value
            _lock.release()
            if (target._ts is ts and self.preference == -1 and not ts.trap
                    and not self.schedule_all):
                # the usual case, inlined: the receiver runs now, we go last
                rq = ts.rq
                rq.insert(1, target)
                rq.rotate(-1)
                target._scheduled = True
                _switch(ts, cur, target)
                v = cur._tempval
                if type(v) is bomb:
                    cur._tempval = None
                    v.raise_()
            else:
                self._wake(ts, cur, target, -1)
            return None
        if self._closing:
            _lock.release()
            raise ValueError(_CLOSED)
        if cur._block_trap:
            _lock.release()
            raise RuntimeError(_BLOCK_TRAP)
        self._queue.append(cur)
        self._balance += 1
        cur._blocked = 1
        cur._channel = self
        cur._tempval = value
        _lock.release()
        rq = ts.rq
        if len(rq) > 1 and not ts.trap:
            rq.popleft()                    # the usual case, inlined
            cur._scheduled = False
            _switch(ts, cur, rq[0])
        else:
            self._block(ts, cur)
        v = cur._tempval
        if type(v) is bomb:
            cur._tempval = None
            v.raise_()
        return None

    def receive(self) -> Any:
        """Receive a value; block until a sender provides one."""
        ts = _ts()
        cur = ts.current
        if _channel_cb is not None:
            _channel_cb(self, cur, False, self._balance <= 0)
        _lock.acquire()
        if self._balance > 0:
            target = self._queue.popleft()
            self._balance -= 1
            target._blocked = 0
            target._channel = None
            v = target._tempval
            target._tempval = None
            _lock.release()
            if target._ts is ts and self.preference != 1 and not self.schedule_all:
                ts.rq.append(target)        # the usual case, inlined
                target._scheduled = True
            else:
                self._wake(ts, cur, target, 1)
            if type(v) is bomb:
                v.raise_()
            return v
        if self._closing:
            _lock.release()
            raise ValueError(_CLOSED)
        if cur._block_trap:
            _lock.release()
            raise RuntimeError(_BLOCK_TRAP)
        self._queue.append(cur)
        self._balance -= 1
        cur._blocked = -1
        cur._channel = self
        _lock.release()
        rq = ts.rq
        if len(rq) > 1 and not ts.trap:
            rq.popleft()                    # the usual case, inlined
            cur._scheduled = False
            _switch(ts, cur, rq[0])
        else:
            self._block(ts, cur)
        v = cur._tempval
        cur._tempval = None
        if type(v) is bomb:
            v.raise_()
        return v

    def _block(self, ts: _ThreadState, cur: tasklet) -> None:
        """Block ``cur`` (already queued here) until another tasklet wakes it."""
        if ts.trap:
            with _lock:
                self._remove_waiter(cur)
            raise RuntimeError("switch_trap")
        try:
            _leave(ts, cur)
        except RuntimeError:
            with _lock:
                self._remove_waiter(cur)
            raise

    def _wake(self, ts: _ThreadState, cur: tasklet, target: tasklet,
              pref: int) -> None:
        """``target`` was unblocked by ``cur``: make it runnable, maybe run it."""
        tts = target._ts
        if tts is not ts:
            with tts.cond:
                tts.rq.append(target)
                target._scheduled = True
                tts.cond.notify()
            return
        rq = ts.rq
        if self.schedule_all:
            rq.append(target)
            target._scheduled = True
            if ts.trap:
                return
            if rq[0] is cur:
                rq.rotate(-1)
            _switch(ts, cur, rq[0])
            _take_tempval(cur)
        elif self.preference == pref and not ts.trap:
            if rq and rq[0] is cur:
                rq.insert(1, target)
                rq.rotate(-1)
            else:
                rq.appendleft(target)
            target._scheduled = True
            _switch(ts, cur, target)
            _take_tempval(cur)
        else:
            rq.append(target)
            target._scheduled = True

    def send_exception(self, exc: Any, *args: Any) -> None:
        """Send an exception: the receiver raises ``exc(*args)``."""
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            raise TypeError("send_exception: exception class expected")
        e = exc(*args)
        return self.send(bomb(exc, e, None))

    def send_throw(self, exc: Any, val: Any = None, tb: Any = None) -> None:
        """Send an exception like ``throw``: type, instance or (type, value, tb)."""
        e = _make_exception(exc, val)
        return self.send(bomb(type(e), e, tb))

    def send_sequence(self, seq: Any) -> int:
        """Send every item of ``seq``; return how many were sent."""
        n = 0
        send = self.send
        for item in seq:
            send(item)
            n += 1
        return n

    def __iter__(self) -> "channel":
        return self

    def __next__(self) -> Any:
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

    def close(self) -> None:
        """Refuse further blocking operations; waiting tasklets may finish."""
        self._closing = True

    def open(self) -> None:
        """Undo :meth:`close`."""
        self._closing = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "preference":
            value = int(value)
            if value not in (-1, 0, 1):
                value = 1 if value > 0 else -1
        elif name == "schedule_all":
            value = bool(value)
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return "<%s.%s object at %#x balance=%d>" % (
            type(self).__module__, type(self).__qualname__, id(self), self._balance)

    # -- pickling (stackless/_pickling.py) ------------------------------------

    __reduce__ = _pickling.channel_reduce
    __reduce_ex__ = _pickling.reduce_ex
    __setstate__ = _pickling.channel_setstate
