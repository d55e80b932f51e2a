"""PyTorch peer of bench/bench_kernels.c --csv: elementwise ops on n f32 elements (inputs in
[-5, 5) filled like the C program's), out-of-place like bilo's ops, printed as
`<op>_<threads>t_seconds value` lines: seconds per call, the mean of a timed block.

usage: torch_kernels.py --ops exp,tanh,add --threads 1,2 --n N --seconds S
"""
import argparse

import torch

from torch_common import block_seconds, set_threads


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", default="exp,tanh,add")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--n", type=int, default=1000000)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    idx = torch.arange(args.n, dtype=torch.float64)
    a = (10 * torch.frac(idx * 0.6180339887 + 0.1) - 5).float()
    b = (10 * torch.frac(idx * 0.6180339887 + 0.7) - 5).float()
    fns = {"exp": lambda: torch.exp(a), "tanh": lambda: torch.tanh(a),
           "add": lambda: torch.add(a, b)}
    for op in args.ops.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            set_threads(threads)
            seconds = block_seconds(fns[op], args.seconds, warmup=3)
            print(f"{op}_{threads}t_seconds {seconds:.9g}", flush=True)


if __name__ == "__main__":
    main()
