"""How many threads the float kernels may use (default 1).

The count lives here, in Python, and every wrapper passes it to its C core on each call: the
extensions are separate shared objects, so a setting stored in one C library would not reach the others.
"""
_num_threads = 1


def set_num_threads(n):
    """Let conv2d, deconv2d and matmul split their work over n pthreads (1 = run in the caller)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > 64:
        raise ValueError(f"set_num_threads: expected an int in [1, 64], got {n!r}")
    global _num_threads
    _num_threads = n


def get_num_threads():
    return _num_threads
