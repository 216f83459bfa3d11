/* The first data-stack chunks of continulet runs (CPS_CHUNK_BYTES each,
 * src/pystate.h), carved from slabs of 32.
 *
 * Why slabs: a chunk is above pymalloc's 512-byte limit, so each came from
 * glibc's malloc and went back to its free: ~480 instructions per tasklet
 * where thousands of tasklets start and end (hackysack), in bins that
 * glibc sorts and coalesces.  Taking a chunk from a slab is a pop from a
 * free list.  Each chunk has its slab's address in the 16 bytes before it
 * (the glibc header that it replaces was as big).  The slabs that have
 * free chunks are listed, the one given to last first, so that a new run
 * gets the chunk that the last one left, still in the cache.  Like
 * pymalloc's pools, a slab stays while any of its chunks is in use.
 *
 * Why empty slabs wait before they are freed: a program that ends a wave
 * of tasklets and starts the next (a server's bursts; hackysack's games)
 * would give the wave's slabs back to glibc, which returns the memory to
 * the system at once (it trims its heap's top beyond 128 KiB), and the
 * next wave would fault every page in again: ~3 us per 4 KiB page on the
 * VM of docs/performance.md, ~0.8 us per tasklet's chunk, as much as
 * the rest of its start.  So an empty slab is cached, and freed once it
 * has stayed unused for `decay_ns` (a second; _first_chunk_cache() sets
 * it), at the next take or give that notices, as jemalloc and mimalloc
 * delay their purges.  A program that goes idle after a wave keeps the
 * wave's slabs until it next starts or ends a tasklet after that time.
 * The GIL serialises every call. */
#include <Python.h>
#include "clockns.h"
#include "pystate.h"
#include "firstchunk.h"

#define SLAB_CHUNKS 32
#define LINK 16                                 /* the slab's address, 16-aligned */
#define STRIDE (LINK + ((CPS_CHUNK_BYTES + 15) & ~(size_t)15))

typedef struct slab {
    struct slab *prev, *next;                   /* its list: partial, or cached */
    void *free;                                 /* free chunks, linked through their first word */
    int nfree;
    int64_t emptied;                            /* cached: when it became empty (ns) */
} slab;

#define HEAD ((sizeof(slab) + 15) & ~(size_t)15)

/* A list of slabs, the first at its front; `last` is its other end. */
typedef struct {
    slab *first, *last;
    Py_ssize_t n;
} slab_list;

static slab_list partial;                       /* slabs with free chunks, the last given to first */
/* Empty slabs, the newest first (and taken first: the most likely still
 * in the CPU's cache), the oldest last. */
static slab_list cached;
static int64_t decay_ns = 1000000000;           /* see the top of the file */
static unsigned int takes;                      /* counts takes between two looks at the clock */

static slab *slab_of(void *c)
{
    return *(slab **)((char *)c - LINK);
}

static void unlink_slab(slab_list *l, slab *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        l->first = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    else
        l->last = s->prev;
    s->prev = s->next = NULL;
    l->n--;
}

static void push_slab(slab_list *l, slab *s)
{
    s->prev = NULL;
    s->next = l->first;
    if (l->first != NULL)
        l->first->prev = s;
    else
        l->last = s;
    l->first = s;
    l->n++;
}

static slab *new_slab(void)
{
    slab *s = PyMem_RawMalloc(HEAD + SLAB_CHUNKS * STRIDE);
    if (s == NULL)
        return NULL;
    s->free = NULL;
    for (int i = SLAB_CHUNKS - 1; i >= 0; i--) {
        char *c = (char *)s + HEAD + (size_t)i * STRIDE + LINK;
        *(slab **)(c - LINK) = s;
        *(void **)c = s->free;
        s->free = c;
    }
    s->nfree = SLAB_CHUNKS;
    return s;
}

static int64_t now_ns(void)
{
#ifdef CLOCK_MONOTONIC_COARSE
    /* (a few ns through the vDSO; milliseconds of precision are plenty) */
    return cont_clock_ns(CLOCK_MONOTONIC_COARSE);
#else
    return cont_clock_ns(CLOCK_MONOTONIC);
#endif
}

/* Free the cached slabs that have stayed unused for decay_ns. */
static void trim(int64_t now)
{
    slab *s;
    while ((s = cached.last) != NULL && now - s->emptied >= decay_ns) {
        unlink_slab(&cached, s);
        PyMem_RawFree(s);
    }
}

void *cont_first_chunk_take(void)
{
    slab *s = partial.first;
    if (s == NULL) {
        if ((s = cached.first) != NULL)
            unlink_slab(&cached, s);
        else if ((s = new_slab()) == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        push_slab(&partial, s);
    }
    /* (a program whose slabs never empty again still frees its cache) */
    if (cached.last != NULL && (++takes & 255) == 0)
        trim(now_ns());
    void *c = s->free;
    s->free = *(void **)c;
    if (--s->nfree == 0)
        unlink_slab(&partial, s);
    return c;
}

void cont_first_chunk_give(void *c)
{
    slab *s = slab_of(c);
    *(void **)c = s->free;
    s->free = c;
    if (++s->nfree == SLAB_CHUNKS && partial.n > 1) {   /* empty: cached until it decays */
        /* (the only slab with free chunks stays where it is, for the next
           take: a program that starts and ends one run at a time neither
           looks at the clock nor moves it) */
        unlink_slab(&partial, s);
        s->emptied = now_ns();
        push_slab(&cached, s);
        trim(s->emptied);
    }
    else if (s->nfree == 1)
        push_slab(&partial, s);                 /* was full */
    else if (s != partial.first) {
        unlink_slab(&partial, s);               /* the last given to goes first */
        push_slab(&partial, s);
    }
}

/* _first_chunk_cache([decay_seconds]): how many empty slabs are cached and
 * the decay in seconds; given one, the decay becomes it and the slabs that
 * have waited that long are freed now.  For tests and for programs that
 * want their memory back at once (decay 0). */
static PyObject *first_chunk_cache(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_first_chunk_cache([decay_seconds])");
        return NULL;
    }
    if (nargs == 1) {
        double d = PyFloat_AsDouble(args[0]);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(d >= 0.0 && d <= 3600.0)) {
            PyErr_SetString(PyExc_ValueError, "the decay is between 0 and 3600 seconds");
            return NULL;
        }
        decay_ns = (int64_t)(d * 1e9);
        trim(now_ns());
    }
    return Py_BuildValue("(nd)", cached.n, (double)decay_ns / 1e9);
}

PyMethodDef cont_first_chunk_methods[] = {
    {"_first_chunk_cache", (PyCFunction)(void (*)(void))first_chunk_cache, METH_FASTCALL,
     "_first_chunk_cache([decay_seconds]) -> (cached slabs, decay)\n\n"
     "Internal: the empty slabs of first frame chunks kept for reuse."},
    {NULL, NULL, 0, NULL}
};
