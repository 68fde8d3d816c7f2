#include "heap.h"

#include <stdlib.h>     /* defines __GLIBC__ on glibc */
#if defined(__GLIBC__)
#include <malloc.h>
#endif

int mnnlite_heap_fix_mmap_threshold(long bytes) {
#if defined(__GLIBC__)
    if (bytes <= 0 || bytes > 32L * 1024 * 1024)    /* glibc refuses more than its DEFAULT_MMAP_THRESHOLD_MAX */
        return 0;
    return mallopt(M_MMAP_THRESHOLD, (int)bytes) == 1;
#else
    (void)bytes;
    return 0;
#endif
}
