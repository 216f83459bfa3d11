/* The first data-stack chunks of continulet runs (see firstchunk.c). */
#ifndef CONT_FIRSTCHUNK_H
#define CONT_FIRSTCHUNK_H

#include <Python.h>

/* A chunk of CPS_CHUNK_BYTES, or NULL with MemoryError set (GIL). */
void *cont_first_chunk_take(void);

/* Give back a chunk that cont_first_chunk_take() gave (GIL). */
void cont_first_chunk_give(void *chunk);

/* _first_chunk_cache() (see firstchunk.c) */
extern PyMethodDef cont_first_chunk_methods[];

#endif
