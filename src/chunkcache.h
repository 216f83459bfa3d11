/* Reuse of CPython's frame data-stack chunks (see chunkcache.c). */
#ifndef CONT_CHUNKCACHE_H
#define CONT_CHUNKCACHE_H

/* Whether the running stack of this thread is a continulet's run
 * (module.c). */
int cont_in_run(void);

/* Put the caching arena allocator in place; once per process. */
void cont_chunkcache_install(void);

#endif
