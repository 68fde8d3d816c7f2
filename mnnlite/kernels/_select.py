"""What one kernel call may use now: the SIMD paths allowed by mnnlite.kernels.cpu, and the threads.

Each extension links its own copy of csrc/cpu_features.c, so a limit set through mnnlite.kernels.cpu
never reaches their C state; the wrappers ask here and pass the mask to the C core on every call.
"""
from mnnlite.kernels import cpu, threads


def isa_mask():
    """The MNNLITE_CPU_* bits of the enabled paths."""
    return cpu.enabled_mask()


def num_threads():
    return threads.get_num_threads()
