/* The C library allocator's policy for large blocks.  glibc serves blocks above M_MMAP_THRESHOLD
 * with their own mmap and returns them to the system on free, but raises that threshold to the size
 * of each mmap'ed block freed (up to 32 MiB on 64-bit, "dynamic mmap threshold", mallopt(3)).  A
 * calibration pass allocates and frees activations of a few MiB per op, so after the first free they
 * come from the heap, whose free holes are rarely trimmed: the process keeps 20+ MiB it no longer uses
 * (MTCNN O-Net KL: 72 MiB peak RSS against 53 MiB with a fixed threshold, issue 10's bound is
 * quantized.out's 41 MiB). */
#ifndef MNNLITE_HEAP_H
#define MNNLITE_HEAP_H

/* Fix glibc's mmap threshold at `bytes` (which also turns its dynamic adjustment off).
 * 1 when applied, 0 on another C library or when glibc refused the value. */
int mnnlite_heap_fix_mmap_threshold(long bytes);

#endif
