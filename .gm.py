import gc, weakref, sys
import greenlet as C
import stackless.greenlet as E
for G in (C, E):
    done = []
    main = G.getcurrent()
    def fa():
        try: gb.switch()
        finally: done.append("a")
    def fb():
        try: ga.switch()
        finally: done.append("b")
    ga = G.greenlet(fa, main); gb = G.greenlet(fb, main)
    ga.switch()          # a -> b -> a? b switches to a which is suspended in gb.switch: returns there
    # now a resumed from gb.switch() and finished? no: fb switches to ga, which resumes fa after gb.switch() -> fa finishes -> main
    print(G.__name__, ga.dead, gb.dead)
    ra, rb = weakref.ref(ga), weakref.ref(gb); del ga, gb
    gc.collect(); gc.collect()
    print(G.__name__, "a", ra() is None, "b", rb() is None, done)
