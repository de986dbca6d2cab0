#!/usr/bin/env bash
# Count instructions (callgrind's Ir) for one benchmark on one loop, once.
#
#   bench/callgrind.sh BENCH LOOP [SIZE]
#
# LOOP is asyncio, uvloop, rloop, ferroloop or `none` (the no-loop baseline of the loop-core
# benchmarks; see bench/benchmarks.py). For the loop-overhead table of every loop-core
# benchmark (Ir/op minus the baseline's, counted over the timed part only) use
# bench/overhead.py instead.
#
# SIZE defaults to the benchmark's --quick size (callgrind runs ~50-100x slower).
# Runs the benchmark under `valgrind --tool=callgrind`, then a baseline process
# that does the same imports and loop creation/close but runs no benchmark
# (benchmarks.py --dry), and prints both totals, their difference (the hot
# part) and the difference per operation. Instruction counts are far more
# repeatable than wall time on a noisy machine, so use this to compare a hot
# path before/after a change, or between loops.
#
# ferroloop is measured in its profiling build (release code with line tables, so
# callgrind_annotate can name source lines): `python bench/profiling.py --install` puts it in.
#
# Env: PYTHON (interpreter, default: the real binary behind `python`),
#      ANY_BUILD=1 to measure whatever ferroloop build is installed,
#      BASELINE=0 to skip the baseline run,
#      OUT_DIR (default bench/results/callgrind) for callgrind.out files,
#      which `callgrind_annotate FILE` can break down by function.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 BENCH LOOP [SIZE]" >&2
    exit 2
fi
bench=$1
loop=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! command -v valgrind >/dev/null; then
    echo "valgrind not found (apt-get install valgrind)" >&2
    exit 1
fi

# Resolve the real interpreter: a pyenv shim is a shell script, and valgrind
# would then measure bash instead of Python.
py=${PYTHON:-$(python -c 'import sys; print(sys.executable)')}

size=${3:-$("$py" -c "
import sys; sys.path.insert(0, '$here')
from benchmarks import BENCHMARKS
print(BENCHMARKS['$bench'].quick)
")}

out_dir=${OUT_DIR:-$here/results/callgrind}
mkdir -p "$out_dir"
run_file=$out_dir/callgrind.out.$bench.$loop.$size
base_file=$out_dir/callgrind.out.$bench.$loop.baseline

# Same hash seed for every run so dict/set layouts (and so instruction counts)
# don't change between runs.
export PYTHONHASHSEED=0

# The loop must be creatable before spending minutes under valgrind.
"$py" "$here/benchmarks.py" --check "$loop" >/dev/null
if [[ $loop == ferroloop && ${ANY_BUILD:-0} != 1 ]] && ! "$py" "$here/profiling.py" >/dev/null; then
    echo "(or ANY_BUILD=1 to count this build as it is)" >&2
    exit 1
fi

total_ir() {
    # "summary:" (older valgrind) or "totals:" line of a callgrind.out file.
    awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

run_cg() {
    local file=$1
    shift
    if ! valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$py" "$here/benchmarks.py" "$@" >"$file.stdout" 2>"$file.stderr"; then
        echo "run failed; valgrind/python stderr:" >&2
        tail -n 20 "$file.stderr" >&2
        exit 1
    fi
}

echo "callgrind: $bench on $loop, $size operations" >&2
run_cg "$run_file" "$bench" "$loop" "$size"
run_ir=$(total_ir "$run_file")
printf 'total Ir:            %15s  (%s)\n' "$run_ir" "$run_file"

if [[ ${BASELINE:-1} != 0 ]]; then
    run_cg "$base_file" "$bench" "$loop" "$size" --dry
    base_ir=$(total_ir "$base_file")
    hot_ir=$((run_ir - base_ir))
    printf 'baseline Ir:         %15s  (startup, imports, loop create/close)\n' "$base_ir"
    printf 'benchmark Ir:        %15s  (total - baseline)\n' "$hot_ir"
    "$py" -c "print(f'Ir per operation:    {$hot_ir / $size:15.1f}')"
fi
