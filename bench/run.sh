#!/bin/sh
# The benchmark suite: every benchmark program with its peers, one table, one CSV.
#
#   bench/run.sh [--quick] [--build DIR] [--out FILE] [--openblas-core NAME]
#
# Configures (release, benchmarks on) and builds DIR (default: build-bench in the source
# tree) if needed, runs bench_gemm (vs OpenBLAS), bench_kernels (vs a raw SLEEF loop and
# PyTorch), bench_autograd, bench_nn and bench_bilevel (vs PyTorch) with --csv, and prints
#
#   workload | threads | unit | bilo | peer | peer figure | ratio | bilo min..max | peer min..max
#
# Figures are medians of interleaved rounds (bilo, peer, bilo, peer, ...); ratio > 1 means
# bilo is better (faster, or less memory). A peer that is not installed shows "missing".
# The rows also go to FILE (default: bench-results.csv in the current directory).
#
# Threads: every workload runs at the thread count in its row for bilo (bilo_set_num_threads)
# and its peer (openblas_set_num_threads; torch.set_num_threads plus torch's OpenBLAS pool).
# OMP_WAIT_POLICY: bilo runs with libgomp's default (workers spin briefly, then sleep)
# unless you export one; PASSIVE costs bilo a 25-40 us wake-up per parallel region, while
# OpenBLAS's own pool spins by default. The PyTorch peers always run with PASSIVE, their best
# setting here (oversubscribed spinning workers stall their barriers, research/peers.md).
# --quick: fewer and shorter rounds (about 6 minutes instead of 11).
# --openblas-core NAME: OPENBLAS_CORETYPE for the GEMM peer (e.g. Haswell, to compare with
# OpenBLAS's AVX2 kernels where it would pick AVX-512 ones).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
build="$src/build-bench"
out="bench-results.csv"
quick=""
gemm_args=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick="--quick" ;;
    --build) build="$2"; shift ;;
    --out) out="$2"; shift ;;
    --openblas-core) gemm_args="--peer-core $2"; shift ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$src" --buildtype=release -Dbench=true -Dtests=false \
        -Dexamples=false >/dev/null
fi
[ -x "$build/bench/bench_gemm" ] || meson configure "$build" -Dbench=true
ninja -C "$build" >/dev/null

[ -n "${OMP_WAIT_POLICY:-}" ] && export OMP_WAIT_POLICY
export BILO_SOURCE_DIR="$src"

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
echo "workload,threads,unit,bilo,bilo_min,bilo_max,peer,peer_value,peer_min,peer_max,ratio" >"$rows"
for program in gemm kernels autograd nn bilevel; do
    echo "running bench_$program ..." >&2
    extra=""
    [ "$program" = gemm ] && extra="$gemm_args"
    if ! "$build/bench/bench_$program" --csv $quick $extra | sed -n 's/^csv,//p' >>"$rows"; then
        echo "bench/run.sh: bench_$program failed" >&2
    fi
done
cp "$rows" "$out"

echo
echo "bilo benchmark suite ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset (libgomp default)}${quick:+, quick})"
echo "median of interleaved rounds; ratio > 1: bilo better"
awk -F, 'NR == 1 {
        printf "%-36s %2s %-7s %10s  %-10s %10s %7s  %-21s %s\n", "workload", "th", "unit",
               "bilo", "peer", "peer", "ratio", "bilo min..max", "peer min..max"
        next
    }
    {
        peer_range = $8 == "missing" ? "" : sprintf("%.4g..%.4g", $9, $10)
        peer_value = $8 == "missing" ? "missing" : sprintf("%.4g", $8)
        printf "%-36s %2d %-7s %10.4g  %-10s %10s %7s  %-21s %s\n", $1, $2, $3, $4, $7,
               peer_value, $11, sprintf("%.4g..%.4g", $5, $6), peer_range
    }' "$out"
echo
echo "rows written to $out"
