"""Helpers shared by the PyTorch peers: thread control that also reaches OpenBLAS, and timed
blocks.

Debian's torch does its fp32 GEMMs in OpenBLAS, whose thread pool torch.set_num_threads does
not control (see /work/shared/research/peers.md); set_threads sets both, so one peer process
can measure 1 and 2 threads in turn. Run the peers with OMP_WAIT_POLICY=PASSIVE (torch's
best setting on small machines; the C programs do).
"""
import ctypes
import time

import torch


def _openblas():
    """The OpenBLAS library torch loaded (None if there is none)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libopenblas" in path and ".so" in path:
                try:
                    lib = ctypes.CDLL(path)
                    lib.openblas_set_num_threads
                    return lib
                except (OSError, AttributeError):
                    return None
    return None


_BLAS = _openblas()


def set_threads(threads):
    torch.set_num_threads(threads)
    if _BLAS is not None:
        _BLAS.openblas_set_num_threads(threads)


def block_seconds(fn, seconds, min_calls=3, warmup=1):
    """Seconds per call of fn over a block of at least `seconds` (and min_calls), after
    `warmup` calls: the block's mean, as the C programs measure their side."""
    for _ in range(warmup):
        fn()
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or calls < min_calls:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls
