/* A small cache of CPython's frame data-stack chunks.
 *
 * When the frames of a stack outgrow its current data-stack chunk, CPython
 * allocates another chunk of 16 KiB (more for a huge frame) through the
 * object arena allocator, i.e. mmap(), and gives it back with munmap() as
 * soon as the frame that needed it returns.  A continulet's first chunk is
 * small (CPS_CHUNK_BYTES), so a greenlet or tasklet that goes a few frames
 * deeper for every request it handles would map, fault in and unmap 16 KiB
 * each time: a gevent server on the greenlet emulation spent a third of its
 * CPU there.  This keeps a few freed chunks of the standard size and hands
 * them out again, to the stacks of continulets only: other code in the
 * process (the C greenlet, say) keeps CPython's own behaviour.  All other
 * arena traffic (pymalloc's arenas) passes through.  CPython calls the
 * arena allocator with the GIL held.
 */
#include <Python.h>

#include "chunkcache.h"

/* CPython's DATA_STACK_CHUNK_SIZE (Python/pystate.c), the same in 3.11-3.15 */
#define CHUNK_SIZE (16 * 1024)
#define MAX_CACHED 16

static PyObjectArenaAllocator base;
static void *cached[MAX_CACHED];
static int ncached;

static void *cache_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size == CHUNK_SIZE && ncached > 0 && cont_in_run())
        return cached[--ncached];
    return base.alloc(base.ctx, size);
}

static void cache_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (size == CHUNK_SIZE && ncached < MAX_CACHED && cont_in_run()) {
        cached[ncached++] = ptr;
        return;
    }
    base.free(base.ctx, ptr, size);
}

void cont_chunkcache_install(void)
{
    static int installed;
    if (installed)
        return;
    installed = 1;
    PyObject_GetArenaAllocator(&base);
    PyObjectArenaAllocator mine = {NULL, cache_alloc, cache_free};
    PyObject_SetArenaAllocator(&mine);
}
