"""PyTorch peer of bench/bench_nn.c: one training step (forward + backward + Adam) of the MLP
784-256-256-10 (ReLU, softmax cross-entropy) or of the 4-block CNN (conv3x3-BN-ReLU-maxpool2
x4, 64 channels, linear head, 28x28 inputs) at the given batch, f32, printed as `key value`
lines that the C benchmark reads and divides by.

  <model>_<threads>t_step_ms   ms per step, the mean of one timed block of --steps steps

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


def make_cnn(batch, hidden=64, classes=10):
    """Parameters laid out as bilo_nn_cnn4's: per block conv W, conv b, BN gamma, BN beta; then
    the head W [hidden, classes] and b; plus the running statistics (updated in training)."""
    gen = torch.Generator().manual_seed(2)
    params, stats = [], []
    cin = 1
    for _ in range(4):
        bound = math.sqrt(6.0 / (cin * 9))
        params += [(torch.rand(hidden, cin, 3, 3, generator=gen) * 2 - 1) * bound,
                   torch.zeros(hidden), torch.ones(hidden), torch.zeros(hidden)]
        stats += [torch.zeros(hidden), torch.ones(hidden)]
        cin = hidden
    bound = math.sqrt(6.0 / (hidden + classes))
    params += [(torch.rand(hidden, classes, generator=gen) * 2 - 1) * bound, torch.zeros(classes)]
    for p in params:
        p.requires_grad_(True)
    x = torch.randn(batch, 1, 28, 28, generator=gen)
    labels = torch.arange(batch) % classes
    return params, stats, x, labels


def cnn_logits(params, stats, x):
    F = torch.nn.functional
    h = x
    for b in range(4):
        w, bias, gamma, beta = params[4 * b:4 * b + 4]
        h = F.conv2d(h, w, bias, padding=1)
        h = F.batch_norm(h, stats[2 * b], stats[2 * b + 1], gamma, beta, training=True,
                         momentum=0.1, eps=1e-5)
        h = F.max_pool2d(torch.relu(h), 2)
    return h.flatten(1) @ params[16] + params[17]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    args = parser.parse_args()

    if args.model == "mlp":
        params, x, labels = make_mlp(args.batch)
        logits = lambda: mlp_logits(params, x)
    else:
        params, stats, x, labels = make_cnn(args.batch)
        logits = lambda: cnn_logits(params, stats, x)
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(logits(), labels).backward()
        opt.step()

    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        ms = (time.perf_counter() - t0) * 1e3 / args.steps
        print(f"{args.model}_{threads}t_step_ms {ms:.3f}", flush=True)


if __name__ == "__main__":
    main()
