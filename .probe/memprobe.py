import stackless, tracemalloc, collections, sys, gc
N = 10000
ch = stackless.channel()
def waiter():
    ch.receive()
def make(n):
    for _ in range(n):
        stackless.tasklet(waiter)()
    stackless.run()
make(200)  # warm
gc.collect()
tracemalloc.start()
s1 = tracemalloc.take_snapshot()
make(N)
s2 = tracemalloc.take_snapshot()
tracemalloc.stop()
def blocks(s):
    return collections.Counter((t.size) for t in s.traces)
b1, b2 = blocks(s1), blocks(s2)
tot = 0
for size in sorted(set(b2) | set(b1)):
    d = b2[size] - b1[size]
    if abs(d) >= N // 20:
        print("%6d B x %.2f per tasklet = %.0f B" % (size, d / N, size * d / N))
    tot += size * d
print("total traced per tasklet %.0f B" % (tot / N))
