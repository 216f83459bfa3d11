import gc, weakref, sys
from _continuation import continulet
done = []
def call_ex(fn, *a): return fn(*a)
def call_plain(fn): return fn()
def call_kw(fn, **k): return fn(**k)
def body(c, how):
    try:
        if how == "f(*a) bound": call_ex(c.switch, None)
        elif how == "f() bound": call_plain(c.switch)
        elif how == "f(**k) bound": call_kw(c.switch, value=None)
        elif how == "f(*a) unbound": call_ex(type(c).switch, c)
        elif how == "c.switch(*a)": a = (None,); c.switch(*a)
    finally:
        done.append(how)
for how in ("f(*a) bound", "f() bound", "f(**k) bound", "f(*a) unbound", "c.switch(*a)"):
    c = continulet(body, how); c.switch(); r = weakref.ref(c); del c
    gc.collect(); gc.collect()
    print(f"{how:15}", "collected" if r() is None else "NOT collected")
