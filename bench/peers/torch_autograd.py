"""PyTorch peer of bench/bench_autograd.c: the same workloads, printed as `key value` lines
that the C benchmark reads and divides by.

  chain_<numel>_fwdbwd_ns   ns per op of a chain of elementwise ops, forward + backward
  mlp_<threads>t_grad_ms    ms per gradient of the MLP loss w.r.t. its six parameters
  mlp_<threads>t_hvp_ms     ms per Hessian-vector product by double backprop

Run it with OMP_WAIT_POLICY=PASSIVE (the C program does): torch's best setting on small
machines, see /work/shared/research/peers.md. Thread counts apply to torch and to its
OpenBLAS pool (torch_common.set_threads). Medians of repeated runs, f32.
"""
import argparse
import math
import statistics
import time

import torch

from torch_common import set_threads


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def chain_forward(x, ops):
    y = x
    for i in range(ops):
        if i % 3 == 0:
            y = y * 0.999
        elif i % 3 == 1:
            y = y + 0.001
        else:
            y = torch.tanh(y)
    return y


def bench_chain(numel, ops, reps):
    x = torch.randn(numel, requires_grad=True)

    def step():
        loss = chain_forward(x, ops).sum()
        torch.autograd.grad(loss, [x])

    step()
    return median_time(step, reps) * 1e9 / ops


def make_mlp(batch):
    gen = torch.Generator().manual_seed(2)
    dims = [784, 256, 256, 10]
    params = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        params.append(torch.randn(fan_in, fan_out, generator=gen) / math.sqrt(fan_in))
        params.append(0.1 * torch.randn(fan_out, generator=gen))
    for p in params:
        p.requires_grad_(True)
    x = torch.randn(batch, 784, generator=gen)
    labels = torch.arange(batch) % 10
    v = [torch.randn(p.shape, generator=gen) for p in params]
    return params, x, labels, v


def mlp_loss(params, x, labels):
    h = x
    for layer in range(3):
        h = h @ params[2 * layer] + params[2 * layer + 1]
        if layer < 2:
            h = torch.tanh(h)
    return torch.nn.functional.cross_entropy(h, labels)


def bench_mlp(params, x, labels, v, hvp, reps):
    def grad():
        torch.autograd.grad(mlp_loss(params, x, labels), params)

    def hessian_vector():
        g = torch.autograd.grad(mlp_loss(params, x, labels), params, create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
        torch.autograd.grad(dot, params)

    fn = hessian_vector if hvp else grad
    fn()
    return median_time(fn, reps) * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sizes", default="1,16", help="chain sizes (numel)")
    args = parser.parse_args()

    set_threads(1)
    for numel in (int(s) for s in args.sizes.split(",")):
        print(f"chain_{numel}_fwdbwd_ns {bench_chain(numel, args.ops, 31):.1f}", flush=True)
    params, x, labels, v = make_mlp(args.batch)
    for threads in (int(t) for t in args.threads.split(",")):
        set_threads(threads)
        for hvp in (False, True):
            ms = bench_mlp(params, x, labels, v, hvp, 11)
            print(f"mlp_{threads}t_{'hvp' if hvp else 'grad'}_ms {ms:.3f}", flush=True)


if __name__ == "__main__":
    main()
