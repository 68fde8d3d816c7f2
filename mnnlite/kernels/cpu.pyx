# distutils: sources = csrc/cpu_features.c csrc/heap.c
"""Which SIMD paths the kernels may use on this machine."""

cdef extern from "cpu_features.h":
    int MNNLITE_CPU_AVX2
    int MNNLITE_CPU_AVX512
    int MNNLITE_CPU_VNNI
    int MNNLITE_CPU_VBMI
    int mnnlite_cpu_features()
    void mnnlite_cpu_set_limit(int mask)

cdef extern from "heap.h":
    int mnnlite_heap_fix_mmap_threshold(long nbytes)

FEATURE_BITS = {"avx2": MNNLITE_CPU_AVX2, "avx512": MNNLITE_CPU_AVX512, "vnni": MNNLITE_CPU_VNNI,
                "vbmi": MNNLITE_CPU_VBMI}


def features():
    """Names of the SIMD paths enabled now, e.g. ``['avx2', 'avx512', 'vnni', 'vbmi']``."""
    cdef int f = mnnlite_cpu_features()
    return [name for name, bit in FEATURE_BITS.items() if f & bit]


def enabled_mask():
    """The MNNLITE_CPU_* bits of the enabled paths (what ``features`` names), in one C call: every kernel
    wrapper asks for it on every call."""
    return mnnlite_cpu_features()


def set_limit(names):
    """Allow only the named paths (``[]`` forces the scalar path, ``None`` lifts the limit)."""
    if names is None:
        mnnlite_cpu_set_limit(-1)
        return
    cdef int mask = 0
    for name in names:
        if name not in FEATURE_BITS:
            raise ValueError(f"unknown CPU feature {name!r}; known: {sorted(FEATURE_BITS)}")
        mask |= FEATURE_BITS[name]
    mnnlite_cpu_set_limit(mask)


def fix_mmap_threshold(long nbytes):
    """Serve blocks of ``nbytes`` and more from their own mappings, returned to the system when freed
    (glibc only: csrc/heap.h says why).  True when applied."""
    return bool(mnnlite_heap_fix_mmap_threshold(nbytes))
