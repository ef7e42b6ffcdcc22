#!/usr/bin/env bash
# On a CUDA GPU machine: runs the kernel tests (GPU ones included), compute-sanitizer (memcheck,
# racecheck, initcheck) on a small driver, and the benchmark in fp16 and fp32. Logs go to $OUT
# (default: a fresh temporary directory). Exits non-zero if any step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG_DIR="${OUT:-$(mktemp -d)}"
mkdir -p "$LOG_DIR"
echo "logs: $LOG_DIR"
status=0

step() { # step <log name> <command...>: run, log, remember failure
    local name=$1
    shift
    echo "== $name: $*"
    "$@" >"$LOG_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOG_DIR/$name.log"
    if [ $rc -ne 0 ]; then
        echo "== $name FAILED (exit $rc)"
        status=1
    fi
}

nvidia-smi >"$LOG_DIR/nvidia-smi.log" 2>&1 || true
# Build the op once, outside the timed and sanitized runs.
step build python -c "from engine import fused_op; assert fused_op.is_available(), 'fused op unavailable'; fused_op._load_op()"
step pytest python -m pytest tests/test_kernels.py -q -rs

SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
if [ -x "$SANITIZER" ]; then
    # Without the caching allocator every tensor is its own allocation, so overruns are caught.
    for tool in memcheck racecheck initcheck; do
        step "sanitizer-$tool" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
            "$SANITIZER" --tool "$tool" --error-exitcode 1 python benchmarks/memcheck_driver.py
    done
else
    echo "== compute-sanitizer not found (looked for $SANITIZER)" | tee "$LOG_DIR/sanitizer.log"
    status=1
fi

step bench-fp16 python benchmarks/bench_fused_attention.py --dtype float16
step bench-fp32 python benchmarks/bench_fused_attention.py --dtype float32
exit $status
