"""PyTorch peer of bench/bench_bilevel.c: one hypergradient of the logistic-regression
hyperparameter problem (n = 5000, d = 784, 10 classes, f32, inner W [784, 10], outer x [784]
log-weights), printed as `key value` lines that the C benchmark reads and divides by.

  <config> seconds            best of the repetitions, one hypergradient each
  <config>_<t>t seconds       the same at t threads (--threads)
  <config>_peak_mib MiB       peak resident memory above the start of the run (--memory)

Configs: itd_T<T> (T SGD steps from W = 0 recorded with create_graph, then the gradient of the
validation loss w.r.t. x through them) and cg_T<T>_K<K> (T SGD steps without a graph, K
conjugate-gradient iterations of Hessian-vector products for H v = grad_W f, then the mixed
product -d/dx <grad_W g, v>) and esj_Q<Q>_T<T> (T SGD steps without a graph from W = 0 at x
and at x + mu u_q for Q Gaussian directions u_q, mu = 0.01; the estimate
(1/Q) sum_q <(W_T(x + mu u_q) - W_T(x)) / mu, grad_W f> u_q). Inner step 0.1, x = -3, as in the C program. The C program runs
this script with OMP_WAIT_POLICY=PASSIVE and OPENBLAS_NUM_THREADS=1 (Debian's torch does its
GEMMs in OpenBLAS, whose pool torch.set_num_threads does not control; see
/work/shared/research/peers.md).
"""
import argparse
import re
import time

import torch

from torch_common import set_threads

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


def inner_solve(data, x, T):
    W = torch.zeros(D, C, requires_grad=True)
    for _ in range(T):
        (gW,) = torch.autograd.grad(lower(data, x, W), W)
        W = (W - LR * gW).detach().requires_grad_(True)
    return W


def itd(data, x, T):
    W = torch.zeros(D, C, requires_grad=True)
    for _ in range(T):
        (gW,) = torch.autograd.grad(lower(data, x, W), W, create_graph=True)
        W = W - LR * gW
    (hx,) = torch.autograd.grad(upper(data, W), x)
    return hx


def aid_cg(data, x, T, K):
    W = inner_solve(data, x, T)
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


def esj(data, x, T, Q, gen, mu=0.01):
    x0 = x.detach()
    W = inner_solve(data, x0, T)
    (fy,) = torch.autograd.grad(upper(data, W), W)
    estimate = torch.zeros_like(x0)
    for _ in range(Q):
        u = torch.randn(x0.shape, generator=gen)
        W_mu = inner_solve(data, x0 + mu * u, T)
        estimate += ((W_mu - W).detach() * fy).sum() / mu * u
    return estimate / Q  # f does not depend on x directly


def run(config, data, x):
    m = re.fullmatch(r"itd_T(\d+)|cg_T(\d+)_K(\d+)|esj_Q(\d+)_T(\d+)", config)
    if m.group(1):
        T = int(m.group(1))
        return lambda: itd(data, x, T), REPS.get(T, 1)
    if m.group(4):
        Q, T, gen = int(m.group(4)), int(m.group(5)), torch.Generator().manual_seed(7)
        return lambda: esj(data, x, T, Q, gen), 1
    T, K = int(m.group(2)), int(m.group(3))
    return lambda: aid_cg(data, x, T, K), 2


def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_mib(fn):
    """Peak resident memory above the current one while fn runs, in MiB (the kernel's
    high-water mark, reset through /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    base = status_kib("VmRSS")
    fn()
    return (status_kib("VmHWM") - base) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="itd_T10,itd_T100,cg_T100_K10")
    parser.add_argument("--threads", default=None,
                        help="comma list: print <config>_<t>t keys for each thread count")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per config")
    parser.add_argument("--warmup", default=None, help="a config run once, untimed, first")
    parser.add_argument("--memory", default=None,
                        help="a config whose peak memory is printed as <config>_peak_mib")
    args = parser.parse_args()
    set_threads(1)
    gen = torch.Generator().manual_seed(5)
    teacher = torch.randn(D, C, generator=gen) / D ** 0.5
    data = {"train": make_split(gen, teacher), "val": make_split(gen, teacher)}
    x = torch.full((D,), -3.0, requires_grad=True)
    if args.warmup:
        run(args.warmup, data, x)[0]()
    if args.memory:
        print(f"{args.memory}_peak_mib {peak_mib(run(args.memory, data, x)[0]):.1f}", flush=True)
    for threads in args.threads.split(",") if args.threads else [None]:
        set_threads(int(threads) if threads else 1)
        suffix = f"_{threads}t" if threads else ""
        for config in args.configs.split(","):
            if not config:
                continue
            fn, reps = run(config, data, x)
            best = float("inf")
            for _ in range(args.reps or reps):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            print(f"{config}{suffix} {best:.4f}", flush=True)


if __name__ == "__main__":
    main()
