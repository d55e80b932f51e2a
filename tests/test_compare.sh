#!/bin/sh
# TAP test of bilo-compare (examples/bilo_compare.c): every problem whose task this build has,
# on a tiny budget (exit code, one CSV per method, table rows); the budget sweep where an exact
# hypergradient exists; a bad option (exit 2, one line); --seeds and --config; and --resume,
# both skipping finished methods and continuing a run cut by --time-budget from its checkpoint
# to the same final numbers as a straight run.
#
# usage: test_compare.sh PATH/TO/bilo-compare
exe=$1
datasets=${BILO_DATASETS:-/usr/share/datasets}
dir=$(mktemp -d "${TMPDIR:-/tmp}/bilo_compare_XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT INT TERM
n=0
failed=0

ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
diag() { sed 's/^/# /' "$@"; }

if [ ! -x "$exe" ]; then
    echo "1..0 # SKIP bilo-compare not built ($exe)"
    exit 0
fi

has_task() { # has_task TASK PROBLEM ARGS...
    task=$1
    shift
    ! "$exe" "$@" --help | grep -q "^task $task: (not in this build)"
}

# The methods of the table: lines after the dashed rule up to the first blank line.
table_methods() { awk '/^---/ { on = 1; next } on && NF == 0 { exit } on { print $1 }' "$1"; }
table_status() { awk -v m="$2" '/^---/ { on = 1; next } on && $1 == m { print $2; exit }' "$1"; }

# Data rows of a CSV (lines after the header) and its last step.
csv_rows() { tail -n +2 "$1" | grep -c .; }
csv_last_step() { tail -n 1 "$1" | cut -d, -f1; }

# run_problem NAME ARGS...: 2 outer steps of every method the problem can run (one thread: the
# machine running the tests may be shared).
run_problem() {
    name=$1
    shift
    out="$dir/$name"
    "$exe" "$@" --methods all --outer-steps 2 --eval-every 1 --threads 1 --out "$out" \
        >"$out.stdout" 2>"$out.stderr"
    rc=$?
    ok $rc "$name: exit code 0"
    [ $rc -eq 0 ] || diag "$out.stderr"
    methods=$(table_methods "$out.stdout")
    [ -n "$methods" ]
    ok $? "$name: the table has method rows"
    bad=""
    for m in $methods; do
        [ "$(table_status "$out.stdout" "$m")" = ok ] && [ -f "$out/$m.csv" ] &&
            head -n 1 "$out/$m.csv" | grep -q '^step,' && [ "$(csv_rows "$out/$m.csv")" -eq 2 ] ||
            bad="$bad $m"
    done
    [ -z "$bad" ]
    ok $? "$name: every method ran 2 steps with a 2-row CSV log (bad:${bad:- none})"
    grep -q 'plots: \|gnuplot not found: CSV only' "$out.stdout"
    ok $? "$name: the footer says where the plots went"
}

check_budget() { # check_budget NAME: budget.csv holds 5 budgets per method of the table
    out="$dir/$1"
    want=$(($(table_methods "$out.stdout" | grep -c .) * 5))
    [ -f "$out/budget.csv" ] && [ "$(csv_rows "$out/budget.csv")" -eq "$want" ] &&
        ! tail -n +2 "$out/budget.csv" | cut -d, -f5 | grep -qi nan
    ok $? "$1: budget.csv has 5 finite relative errors per method ($want rows)"
}

# A tiny LIBSVM file (3 classes, 4 sparse features) for l2reg's data=PATH.
awk 'BEGIN { for (i = 0; i < 90; i++) { c = i % 3; printf "%d 1:%.3f %d:%.3f 4:%.3f\n", c,
    c + (i % 7) / 10, 2 + c % 2, (i % 5) / 4 - c, (i % 11) / 10 } }' >"$dir/tiny.svm"

# name, task, whether it reads Fashion-MNIST, the arguments; small sizes keep each to seconds.
small_fmnist="--task-opt n_train=1000 --task-opt n_val=500"
problems="quadratic|quadratic|0|quadratic --task-opt dx=4 --task-opt dy=4
coreset|coreset|0|coreset
hyperrep|hyperrep|0|hyperrep
meta-sinusoid|meta-sinusoid|0|meta --data sinusoid
l2reg-libsvm|l2reg|0|l2reg --task-opt data=$dir/tiny.svm --inner-steps 3
hyperclean|hyperclean|1|hyperclean $small_fmnist --task-opt n_eval=500 --inner-steps 2
l2reg|l2reg|1|l2reg $small_fmnist --inner-steps 2
meta-fmnist|meta-fmnist|1|meta --data fmnist --task-opt test_episodes=20 --task-opt meta_batch=2 \
--inner-steps 2"
first=""
while IFS='|' read -r name task fmnist args; do
    # shellcheck disable=SC2086
    set -- $args
    if ! has_task "$task" "$@"; then
        skip "$name" "task not in this build"
    elif [ "$fmnist" = 1 ] && [ ! -d "$datasets/fashion-mnist" ]; then
        skip "$name" "$datasets/fashion-mnist is absent"
    else
        run_problem "$name" "$@"
        [ -f "$dir/$name/budget.csv" ] && check_budget "$name"
        case $name in quadratic | coreset | hyperrep) first=${first:-$name} ;; esac
    fi
done <<EOF
$problems
EOF

# A wrong option: exit 2, one line on stderr, nothing on stdout.
"$exe" quadratic --outer-steps many >"$dir/bad.stdout" 2>"$dir/bad.stderr"
rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <"$dir/bad.stderr")" -eq 1 ] && [ ! -s "$dir/bad.stdout" ] &&
    grep -q '^bilo-compare: ' "$dir/bad.stderr"
ok $? "bad option: exit 2 (got $rc) with one 'bilo-compare: ...' line"
"$exe" quadratic --no-such-option >/dev/null 2>"$dir/bad2.stderr"
[ $? -eq 2 ] && [ "$(wc -l <"$dir/bad2.stderr")" -eq 1 ]
ok $? "unknown option: exit 2 with one line"

if [ -z "$first" ]; then
    skip "resume" "no synthetic task in this build"
    echo "1..$n"
    exit $failed
fi

# --resume after a finished comparison: nothing runs again, the logs stay as they were.
methods=itd,aid-cg
r="$dir/resume"
"$exe" "$first" --methods $methods --outer-steps 4 --out "$r" >"$r.1" 2>&1
ok $? "resume: a 4-step run of $methods succeeds"
cp "$r/itd.csv" "$dir/itd.before"
"$exe" "$first" --methods $methods --outer-steps 4 --out "$r" --resume >"$r.2" 2>"$r.2e"
ok $? "resume: the same command with --resume succeeds"
[ "$(grep -c 'skipped (done)' "$r.2e")" -eq 2 ] && [ "$(grep -c 'skipped (done)' "$r.2")" -eq 2 ]
ok $? "resume: both methods are 'skipped (done)' on stderr and in the table"
cmp -s "$r/itd.csv" "$dir/itd.before"
ok $? "resume: the finished method's CSV is untouched"
grep -A3 '^method' "$r.2" | diag

# A run cut by the time budget continues from its checkpoint to the straight run's numbers.
c="$dir/cut"
s="$dir/straight"
"$exe" "$first" --methods aid-cg --outer-steps 30 --out "$s" >/dev/null 2>&1
"$exe" "$first" --methods aid-cg --outer-steps 30 --out "$c" --time-budget 0.000001 >"$c.1" 2>&1
rc=$?
[ $rc -eq 0 ] && [ "$(table_status "$c.1" aid-cg)" = stopped ] && [ ! -f "$c/aid-cg.done" ] &&
    [ -f "$c/aid-cg.ckpt" ] && [ "$(csv_last_step "$c/aid-cg.csv")" -eq 1 ]
ok $? "time budget: stops after step 1, checkpointed, no .done marker (exit $rc)"
"$exe" "$first" --methods aid-cg --outer-steps 30 --out "$c" --resume >"$c.2" 2>&1
ok $? "time budget: --resume succeeds"
[ "$(table_status "$c.2" aid-cg)" = ok ] && [ "$(csv_last_step "$c/aid-cg.csv")" -eq 30 ]
ok $? "time budget: the resumed run reaches step 30"
grep '^metric' "$s/aid-cg.done" >"$dir/m.straight"
grep '^metric' "$c/aid-cg.done" >"$dir/m.cut"
[ -s "$dir/m.straight" ] && cmp -s "$dir/m.straight" "$dir/m.cut"
ok $? "time budget: final metrics equal the straight run's to the last digit"
cut -d, -f1 "$c/aid-cg.csv" | tail -n +2 | awk 'NR > 1 && $1 <= prev { bad = 1 } { prev = $1 }
    END { exit bad }'
ok $? "time budget: the resumed CSV has increasing steps"

# A run killed after its checkpoint at step 10 but with rows logged to step 20 (made without a
# kill: a 10-step run's checkpoint put back under a finished 20-step run): the resumed run logs
# steps 11..20 again and the CSV keeps each step once, ending with the straight run's numbers.
k="$dir/killed"
args="--methods aid-cg --eval-every 1 --out $k"
"$exe" "$first" $args --outer-steps 10 >/dev/null 2>&1 && cp "$k/aid-cg.ckpt" "$dir/ckpt10" &&
    "$exe" "$first" $args --outer-steps 20 --resume >/dev/null 2>&1 &&
    "$exe" "$first" --methods aid-cg --out "$dir/straight20" --outer-steps 20 >/dev/null 2>&1 &&
    cp "$dir/ckpt10" "$k/aid-cg.ckpt" && rm "$k/aid-cg.done" &&
    "$exe" "$first" $args --outer-steps 20 --resume >/dev/null 2>&1
ok $? "interrupted: the runs succeed"
[ "$(cut -d, -f1 "$k/aid-cg.csv" | tail -n +2 | tr '\n' ' ')" = "$(seq 1 20 | tr '\n' ' ')" ]
ok $? "interrupted: the CSV logs steps 1..20 once each"
grep '^metric' "$dir/straight20/aid-cg.done" >"$dir/m20.straight"
grep '^metric' "$k/aid-cg.done" >"$dir/m20.killed"
[ -s "$dir/m20.straight" ] && cmp -s "$dir/m20.straight" "$dir/m20.killed"
ok $? "interrupted: final metrics equal the straight run's"

# --resume with other options for a checkpointed method refuses rather than mixing runs.
"$exe" "$first" --methods aid-cg --outer-steps 60 --out "$c" --resume --aid-cg.K 2 >/dev/null 2>&1
[ $? -eq 1 ]
ok $? "resume: a checkpoint written with other options is refused (exit 1)"

# --seeds: one log per seed and mean ± std in the table.
"$exe" "$first" --methods aid-cg --outer-steps 2 --seeds 2 --seed 5 --out "$dir/seeds" \
    >"$dir/seeds.out" 2>/dev/null &&
    [ -f "$dir/seeds/aid-cg-seed5.csv" ] && [ -f "$dir/seeds/aid-cg-seed6.csv" ] &&
    grep '^aid-cg' "$dir/seeds.out" | grep -q '±'
ok $? "seeds: logs for seeds 5 and 6, mean ± std in the table"

# --config: [run] options and a [method] section.
cat >"$dir/c.ini" <<EOF
# a comment
[run]
methods = itd, aid-ns
outer-steps = 3
[aid-ns]
K = 4
EOF
"$exe" "$first" --config "$dir/c.ini" --out "$dir/cfg" >"$dir/cfg.out" 2>/dev/null &&
    [ "$(table_methods "$dir/cfg.out" | tr '\n' ' ')" = "itd aid-ns " ] &&
    [ "$(csv_last_step "$dir/cfg/aid-ns.csv")" -eq 3 ] && grep -q 'K=4$' "$dir/cfg/aid-ns.key"
ok $? "config: methods and steps from [run], K=4 from [aid-ns]"
printf '[run]\nouter-steps = -3\n' >"$dir/bad.ini"
"$exe" "$first" --config "$dir/bad.ini" >/dev/null 2>"$dir/badini.err"
[ $? -eq 2 ] && [ "$(wc -l <"$dir/badini.err")" -eq 1 ] && grep -q 'bad.ini:2' "$dir/badini.err"
ok $? "config: a bad value is one line naming file:line, exit 2"

echo "1..$n"
exit $failed
