/* A clock's time in nanoseconds: what src/preempt.c (CPU time and its
 * ticker's deadlines) and src/firstchunk.c (the age of cached slabs)
 * read. */
#ifndef CONTINULET_CLOCKNS_H
#define CONTINULET_CLOCKNS_H

#include <stdint.h>
#include <time.h>

/* -1 if the clock cannot be read. */
static inline int64_t cont_clock_ns(clockid_t clk)
{
    struct timespec t;
    if (clock_gettime(clk, &t) != 0)
        return -1;
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

#endif
