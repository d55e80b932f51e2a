"""PyTorch peer of bench/bench_nn.c: one training step (forward + backward + Adam) of the MLP
784-256-256-10 (ReLU, softmax cross-entropy) at the given batch, f32, printed as `key value`
lines that the C benchmark reads and divides by.

  mlp_<threads>t_step_ms   ms per step, the mean of one timed block of --steps steps

The C program runs this script once per thread count and round, right after its own block,
with OMP_WAIT_POLICY=PASSIVE (torch's best setting on small machines, see
/work/shared/research/peers.md) and OPENBLAS_NUM_THREADS equal to --threads: Debian's torch
does its GEMMs in OpenBLAS, whose pool torch.set_num_threads does not control.
"""
import argparse
import math
import time

import torch


def make_mlp(batch):
    gen = torch.Generator().manual_seed(2)
    dims = [784, 256, 256, 10]
    params = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        bound = math.sqrt(6.0 / fan_in)
        params.append((torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound)
        params.append(torch.zeros(fan_out))
    for p in params:
        p.requires_grad_(True)
    x = torch.randn(batch, 784, generator=gen)
    labels = torch.arange(batch) % 10
    return params, x, labels


def mlp_logits(params, x):
    h = x
    for layer in range(3):
        h = h @ params[2 * layer] + params[2 * layer + 1]
        if layer < 2:
            h = torch.relu(h)
    return h


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()

    params, x, labels = make_mlp(args.batch)
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(mlp_logits(params, x), labels).backward()
        opt.step()

    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        ms = (time.perf_counter() - t0) * 1e3 / args.steps
        print(f"mlp_{threads}t_step_ms {ms:.3f}", flush=True)


if __name__ == "__main__":
    main()
