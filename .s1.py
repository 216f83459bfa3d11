import gc, weakref, sys
from _continuation import continulet
done = []
def body(c, how):
    try:
        if how == "for over a list": 
            for x in [c]: c.switch()
        elif how == "f(*args)": a = (None,); c.switch(*a)
        elif how == "generator running":
            def g():
                c.switch(); yield
            for _ in g(): pass
        elif how == "plain": c.switch()
    finally:
        done.append(how)
for how in ("plain", "for over a list", "f(*args)", "generator running"):
    c = continulet(body, how); c.switch(); r = weakref.ref(c); del c
    gc.collect(); gc.collect()
    print(f"{how:20}", "collected" if r() is None else "NOT collected")
import greenlet
def gbody(how):
    try:
        main = greenlet.getcurrent().parent
        if how == "for over a list":
            for x in [greenlet.getcurrent()]: main.switch()
        elif how == "plain": main.switch()
    finally:
        done.append("g " + how)
for how in ("plain", "for over a list"):
    g = greenlet.greenlet(gbody); g.switch(how); r = weakref.ref(g); del g
    gc.collect(); gc.collect()
    print(f"C greenlet {how:20}", "collected" if r() is None else "NOT collected")
