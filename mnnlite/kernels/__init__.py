"""Fast kernels: Cython over csrc/.  They trust their inputs; callers in mnnlite.ops validate."""
