/* The first data-stack chunks of continulet runs (CPS_CHUNK_BYTES each,
 * src/pystate.h), carved from slabs of 32.
 *
 * Why slabs: a chunk is above pymalloc's 512-byte limit, so each came from
 * glibc's malloc and went back to its free: ~480 instructions per tasklet
 * where thousands of tasklets start and end (hackysack), in bins that
 * glibc sorts and coalesces.  Taking a chunk from a slab is a pop from a
 * free list.  Each chunk has its slab's address in the 16 bytes before it
 * (the glibc header that it replaces was as big).  A slab that empties is
 * freed, except one kept for the next take, so that a program that starts
 * and ends one tasklet at a time never calls malloc; the slabs that have
 * free chunks are listed, the one given to last first, so that a new run
 * gets the chunk that the last one left, still in the cache.  Like
 * pymalloc's pools, a slab stays while any of its chunks is in use.  The
 * GIL serialises every call. */
#include <Python.h>
#include "pystate.h"
#include "firstchunk.h"

#define SLAB_CHUNKS 32
#define LINK 16                                 /* the slab's address, 16-aligned */
#define STRIDE (LINK + ((CPS_CHUNK_BYTES + 15) & ~(size_t)15))

typedef struct slab {
    struct slab *prev, *next;                   /* the list of slabs with free chunks */
    void *free;                                 /* free chunks, linked through their first word */
    int nfree;
} slab;

#define HEAD ((sizeof(slab) + 15) & ~(size_t)15)

static slab *partial;                           /* slabs with free chunks, the last given to first */
static slab *spare;                             /* one empty slab kept */

static slab *slab_of(void *c)
{
    return *(slab **)((char *)c - LINK);
}

static void unlink_slab(slab *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        partial = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static void push_slab(slab *s)
{
    s->prev = NULL;
    s->next = partial;
    if (partial != NULL)
        partial->prev = s;
    partial = s;
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

void *cont_first_chunk_take(void)
{
    slab *s = partial;
    if (s == NULL) {
        s = spare != NULL ? spare : new_slab();
        if (s == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        spare = NULL;
        push_slab(s);
    }
    void *c = s->free;
    s->free = *(void **)c;
    if (--s->nfree == 0)
        unlink_slab(s);
    return c;
}

void cont_first_chunk_give(void *c)
{
    slab *s = slab_of(c);
    *(void **)c = s->free;
    s->free = c;
    if (++s->nfree == SLAB_CHUNKS) {            /* empty: kept as the spare, or freed */
        unlink_slab(s);
        if (spare == NULL)
            spare = s;
        else
            PyMem_RawFree(s);
    }
    else if (s->nfree == 1)
        push_slab(s);                           /* was full */
    else if (s != partial) {
        unlink_slab(s);                         /* the last given to goes first */
        push_slab(s);
    }
}
