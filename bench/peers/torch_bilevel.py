"""PyTorch peer of bench/bench_bilevel.c: one hypergradient of the logistic-regression
hyperparameter problem (n = 5000, d = 784, 10 classes, f32, inner W [784, 10], outer x [784]
log-weights), printed as `key value` lines that the C benchmark reads and divides by.

  <config> seconds   best of the repetitions, one hypergradient each

Configs: itd_T<T> (T SGD steps from W = 0 recorded with create_graph, then the gradient of the
validation loss w.r.t. x through them) and cg_T<T>_K<K> (T SGD steps without a graph, K
conjugate-gradient iterations of Hessian-vector products for H v = grad_W f, then the mixed
product -d/dx <grad_W g, v>). Inner step 0.1, x = -3, as in the C program. The C program runs
this script with OMP_WAIT_POLICY=PASSIVE and OPENBLAS_NUM_THREADS=1 (Debian's torch does its
GEMMs in OpenBLAS, whose pool torch.set_num_threads does not control; see
/work/shared/research/peers.md).
"""
import argparse
import re
import time

import torch

N, D, C, LR = 5000, 784, 10, 0.1
REPS = {10: 3, 100: 2}


def make_split(gen, teacher):
    X = torch.randn(N, D, generator=gen)
    y = (X @ teacher + torch.randn(N, C, generator=gen)).argmax(1)
    return X, y


def lower(data, x, W):
    X, y = data["train"]
    fit = torch.nn.functional.cross_entropy(X @ W, y)
    return fit + 0.5 * (x.exp()[:, None] * W.square()).sum()


def upper(data, W):
    X, y = data["val"]
    return torch.nn.functional.cross_entropy(X @ W, y)


def itd(data, x, T):
    W = torch.zeros(D, C, requires_grad=True)
    for _ in range(T):
        (gW,) = torch.autograd.grad(lower(data, x, W), W, create_graph=True)
        W = W - LR * gW
    (hx,) = torch.autograd.grad(upper(data, W), x)
    return hx


def aid_cg(data, x, T, K):
    W = torch.zeros(D, C, requires_grad=True)
    for _ in range(T):
        (gW,) = torch.autograd.grad(lower(data, x, W), W)
        W = (W - LR * gW).detach().requires_grad_(True)
    (b,) = torch.autograd.grad(upper(data, W), W)
    (gW,) = torch.autograd.grad(lower(data, x, W), W, create_graph=True)
    v, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), (r * r).sum()
    for _ in range(K):
        (Hp,) = torch.autograd.grad(gW, W, p, retain_graph=True)
        alpha = rr / (p * Hp).sum()
        v, r = v + alpha * p, r - alpha * Hp
        rr_new = (r * r).sum()
        p, rr = r + (rr_new / rr) * p, rr_new
    (mixed,) = torch.autograd.grad(gW, x, v)
    return -mixed  # f does not depend on x directly


def run(config, data, x):
    m = re.fullmatch(r"itd_T(\d+)|cg_T(\d+)_K(\d+)", config)
    if m.group(1):
        T = int(m.group(1))
        return lambda: itd(data, x, T), REPS.get(T, 1)
    T, K = int(m.group(2)), int(m.group(3))
    return lambda: aid_cg(data, x, T, K), 2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="itd_T10,itd_T100,cg_T100_K10")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(5)
    teacher = torch.randn(D, C, generator=gen) / D ** 0.5
    data = {"train": make_split(gen, teacher), "val": make_split(gen, teacher)}
    x = torch.full((D,), -3.0, requires_grad=True)
    for config in args.configs.split(","):
        fn, reps = run(config, data, x)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        print(f"{config} {best:.4f}", flush=True)


if __name__ == "__main__":
    main()
