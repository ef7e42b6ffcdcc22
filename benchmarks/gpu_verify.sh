#!/usr/bin/env bash
# The GPU checks of iqart in one call, for a CUDA machine lent briefly (the device image: PyTorch,
# nvcc, ninja, compute-sanitizer, onnx, onnxruntime, pytest; no open_clip, ftfy or wcwidth, no
# package registry). Steps, each under its own time limit inside one budget (IQART_VERIFY_BUDGET_S,
# default 540 s):
#   imports        the kernel, op, plugin and plan-cache modules import without open_clip
#   build          the fused attention torch op is compiled (its error printed in full if not)
#   gpu-tests      tests/test_kernels.py -m gpu: op vs float64 SDPA, fp16/fp32, both regimes,
#                  poisoned outputs, views (no tests/conftest.py: it imports the model zoo)
#   memcheck, racecheck, initcheck   compute-sanitizer on benchmarks/memcheck_driver.py
#   fused-bench    fused op vs SDPA, CUDA-graph timed (benchmarks/bench_fused_attention.py)
#   bench-224, bench-1024x768   `iqart bench` of torch fp32, torch fp16 and fp16 + fused op +
#                  CUDA graph at batch 1/32/128 (QualiCLIP and BPCLIP at 224, QualiCLIP at 1024x768;
#                  random RN50 weights; the model code needs open_clip: carried as wheels in .whl/,
#                  see --fetch-wheels)
#   decode-bench   12 MP JPEGs: decode images/s, PIL on the CPU vs nvJPEG batched, and end-to-end
#                  images/s with --decode-device cpu vs cuda (benchmarks/bench_gpu_decode.py)
#   decode-tests   tests/test_gpu_decode.py -m gpu: nvJPEG vs the CPU path, fallbacks, orientation
# Results: at most 8 files in $OUT (default: a new temporary folder): gpu_verify.log (every step's
# whole output), summary.md (one row per step, with the cause of each failure), env.txt,
# fused_attention.json, bench-224.json, bench-1024x768.json, gpu_decode.json. Exit status 1 if
# any step failed.
#
#   bash benchmarks/gpu_verify.sh                 # on the GPU machine (device tool: carry .whl)
#   bash benchmarks/gpu_verify.sh --dry-run       # here: every import and argument of the real
#                                                 # run, with open_clip/ftfy/wcwidth blocked
#   bash benchmarks/gpu_verify.sh --fetch-wheels  # here: download the wheels the bench step needs
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
WHEELS="$REPO/.whl"  # git-ignored; the device tool carries it with carry=[".whl"]
CARRIED_DISTS="open_clip_torch ftfy wcwidth"  # what the model code needs beyond the device image
BLOCKED_MODULES="open_clip,ftfy,wcwidth"

MODE=run
case "${1:-}" in
    "") ;;
    --dry-run) MODE=dry ;;
    --fetch-wheels) MODE=fetch ;;
    -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bash benchmarks/gpu_verify.sh [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
esac

if [ "$MODE" = fetch ]; then
    # Pure-Python wheels at the versions installed here (tested with this checkout); the device's
    # Python is 3.12, which pip is told so that it refuses anything that would not install there.
    mkdir -p "$WHEELS"
    for dist in $CARRIED_DISTS; do
        version=$(python3 -c "import importlib.metadata as m; print(m.version('$dist'))") || exit 1
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$WHEELS" "$dist==$version" || exit 1
    done
    ls -l "$WHEELS"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/iqart-gpu-verify.XXXXXX")
if [ "$MODE" = run ]; then OUT_DIR=${OUT:-$WORK/out}; else OUT_DIR=$WORK/out; fi
mkdir -p "$OUT_DIR" "$WORK/pkg" "$WORK/steps"
LOG="$OUT_DIR/gpu_verify.log"
ROWS="$WORK/summary-rows.md"
: >"$LOG"
: >"$ROWS"
# `import iqart` from this checkout without installing it (the device has no registry and the
# package maps the repository root to `iqart`).
ln -s "$REPO" "$WORK/pkg/iqart"
export PYTHONPATH="$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}"
export IQART_HOME="$WORK/home" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# torch.utils.cpp_extension guesses CUDA_HOME from nvcc's folder; a wrapper script in
# /usr/local/bin makes it guess /usr/local, which has no CUDA headers. Name the toolkit when it is
# where CUDA installs itself.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
if [ "$MODE" = dry ]; then
    # sitecustomize there makes open_clip, ftfy and wcwidth unimportable in every Python started below.
    export PYTHONPATH="$REPO/benchmarks/device_image:$PYTHONPATH" IQART_BLOCK_PACKAGES="$BLOCKED_MODULES"
fi
BUDGET=${IQART_VERIFY_BUDGET_S:-540}
FAILED=0

say() { echo "$*" | tee -a "$LOG"; }
row() { echo "| $1 | $2 | $3 | $4 |" >>"$ROWS"; }

# run_step NAME CAP_SECONDS COMMAND...: runs COMMAND under min(CAP, budget left), its whole output
# into the log, its last lines on the console; a failure's cause (the output's last error-looking
# lines) goes into the summary.
run_step() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - SECONDS))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then
        say "== $name: SKIPPED, the time budget (${BUDGET} s) is spent"
        row "$name" "skipped" 0 "time budget of ${BUDGET} s spent before this step"
        FAILED=1
        return
    fi
    local started=$SECONDS out="$WORK/steps/$name.log"
    say "== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$out" 2>&1
    local rc=$?
    cat "$out" >>"$LOG"
    tail -n 12 "$out"
    local took=$((SECONDS - started))
    if [ $rc -eq 0 ]; then
        say "== $name: ok (${took} s)"
        row "$name" ok "$took" ""
        return
    fi
    FAILED=1
    local cause
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        cause="timed out after ${limit} s; last output: $(tail -n 1 "$out" | cut -c1-200)"
    else
        cause="exit $rc: $(grep -E -i 'error|fail|assert|not found|no module|unavailable|denied|refused' "$out" | tail -n 3 | tr '\n|' ' /' | cut -c1-400)"
        [ "${cause#exit $rc: }" = "" ] && cause="exit $rc: $(tail -n 2 "$out" | tr '\n|' ' /' | cut -c1-300)"
    fi
    say "== $name: FAILED ($cause)"
    row "$name" FAILED "$took" "$cause"
}

# py_step NAME CAP [SANITIZER_TOOL] -- PYTHON_ARGS...: `python3 PYTHON_ARGS` (under compute-sanitizer
# when a tool is named) with the variables in STEP_ENV. The dry run lists the same arguments for
# benchmarks/dry_run_check.py, which checks them all in one process at the end.
STEP_ENV=()
py_step() {
    local name=$1 cap=$2 tool=""
    shift 2
    if [ "$1" != -- ]; then tool=$1; shift; fi
    shift  # --
    if [ "$MODE" = dry ]; then
        [ -n "$tool" ] && check_sanitizer "$tool"
        python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "argv": sys.argv[3:],
            "env": dict(v.split("=", 1) for v in filter(None, sys.argv[2].split("\n")))}))' \
            "$name" "$(printf '%s\n' "${STEP_ENV[@]}")" "$@" >>"$WORK/dry-commands.jsonl"
    elif [ -n "$tool" ]; then
        # Without the caching allocator every tensor is its own allocation, so overruns are caught.
        run_step "$name" "$cap" env "${STEP_ENV[@]}" PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
            "$SANITIZER" --tool "$tool" --error-exitcode 1 --print-limit 20 python3 "$@"
    else
        run_step "$name" "$cap" env "${STEP_ENV[@]}" python3 "$@"
    fi
}

SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
check_sanitizer() {
    case $1 in
        memcheck | racecheck | initcheck | synccheck) ;;
        *) say "unknown compute-sanitizer tool $1"; row "sanitizer $1" FAILED 0 "unknown tool"; FAILED=1 ;;
    esac
}

# --- environment ---------------------------------------------------------------------------------
(  # a subshell, so that its early exit in the dry run ends only this block
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); mode: $MODE; checkout: $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
    [ "$MODE" = dry ] && exit 0  # the machine's own description matters on the device only
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "CUDA_HOME=${CUDA_HOME:-unset}; nvcc: $(command -v nvcc || echo 'not on PATH')"
    nvcc --version 2>&1 | tail -n 2 || echo "nvcc: not found"
    "$SANITIZER" --version 2>&1 | head -n 3 || true
    python3 -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    python3 -m pip list 2>/dev/null | grep -i -E '^(torch|numpy|onnx|onnxruntime|pytest|ninja|open.clip|ftfy|wcwidth|tensorrt)[ _-]' || true
) >"$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt" >>"$LOG"

# --- the bench step's extra packages --------------------------------------------------------------
BENCH_ENV=()
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    say "installing the carried wheels: $(cd "$WHEELS" && ls -- *.whl | tr '\n' ' ')"
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl >>"$LOG" 2>&1; then
        BENCH_ENV=(PYTHONPATH="$WORK/site:$PYTHONPATH")
        [ "$MODE" = dry ] && BENCH_ENV+=(IQART_CARRIED_SITE="$WORK/site")
    else
        say "pip could not install the carried wheels (see above)"
    fi
elif [ "$MODE" = dry ]; then
    say "no .whl/: this machine's open_clip, ftfy and wcwidth stand in for the carried wheels; the real run needs them: bash benchmarks/gpu_verify.sh --fetch-wheels, then carry .whl"
    BENCH_ENV=(IQART_CARRIED_SITE=installed)
fi

# --- the steps -----------------------------------------------------------------------------------
py_step imports 60 -- benchmarks/check_light_imports.py  # first: nothing has imported open_clip yet
py_step build 300 -- benchmarks/build_fused_op.py
STEP_ENV=(IQART_REQUIRE_GPU=1)  # a GPU test that would skip fails instead: this run exists to run them
py_step gpu-tests 180 -- -m pytest --noconftest -p no:cacheprovider -q -rs -m gpu tests/test_kernels.py
STEP_ENV=()
py_step memcheck 150 memcheck -- benchmarks/memcheck_driver.py
py_step fused-bench 150 -- benchmarks/bench_fused_attention.py --dtypes float16,float32 --json "$OUT_DIR/fused_attention.json"
# `iqart bench` (the iqart command's entry, as a user runs it), one call per input size, so that a
# failure at 1024x768 (memory, a capture) keeps the 224 figures. Charts stay out of $OUT: the JSON
# holds every figure, and $OUT returns at most 8 files.
BENCH=(-m iqart.engine.cli.entry bench --backends torch,torch-fp16,torch-fp16-fused-graph --batch-sizes 1,32,128
       --device cuda --warmup 3 --iters 10)
if [ "$MODE" = run ] && [ ${#BENCH_ENV[@]} -eq 0 ] && ! python3 -c "import open_clip" 2>/dev/null; then
    cause="open_clip is not importable and no wheels were carried in .whl/ (bash benchmarks/gpu_verify.sh --fetch-wheels where a registry is, then carry .whl)"
    for name in bench-224 decode-bench decode-tests bench-1024x768; do
        say "== $name: FAILED before starting: $cause"
        row "$name" FAILED 0 "$cause"
    done
    FAILED=1
else
    STEP_ENV=("${BENCH_ENV[@]}")
    py_step bench-224 180 -- "${BENCH[@]}" -m qualiclip -m bpclip-nr --sizes 224 \
        --json "$OUT_DIR/bench-224.json" --chart "$WORK/bench-224.png"
    py_step decode-bench 150 -- benchmarks/bench_gpu_decode.py --count 64 --batch 32 --json "$OUT_DIR/gpu_decode.json"
    STEP_ENV=("${BENCH_ENV[@]}" IQART_REQUIRE_GPU=1)
    py_step decode-tests 120 -- -m pytest -p no:cacheprovider -q -rs -m gpu tests/test_gpu_decode.py
    STEP_ENV=("${BENCH_ENV[@]}")
    py_step bench-1024x768 180 -- "${BENCH[@]}" -m qualiclip --sizes 1024x768 \
        --json "$OUT_DIR/bench-1024x768.json" --chart "$WORK/bench-1024x768.png"
    STEP_ENV=()
fi
py_step racecheck 120 racecheck -- benchmarks/memcheck_driver.py --dtypes float16
py_step initcheck 120 initcheck -- benchmarks/memcheck_driver.py --dtypes float16

if [ "$MODE" = dry ]; then
    if [ -x "$SANITIZER" ]; then
        say "compute-sanitizer: $SANITIZER"
    else
        say "compute-sanitizer: not on this machine (the GPU image has it)"
    fi
    run_step checks 300 python3 benchmarks/dry_run_check.py --commands "$WORK/dry-commands.jsonl" --rows "$ROWS"
fi

# --- summary -------------------------------------------------------------------------------------
{
    echo "# gpu_verify ($MODE) $(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECONDS} s of a ${BUDGET} s budget"
    echo
    head -n 1 "$OUT_DIR/env.txt"
    echo
    echo "| step | status | seconds | cause |"
    echo "|---|---|---|---|"
    cat "$ROWS"
} >"$OUT_DIR/summary.md"
files=$(find "$OUT_DIR" -type f | wc -l)
if [ "$files" -gt 8 ]; then
    say "$OUT_DIR holds $files files; the device tool returns at most 8"
    FAILED=1
fi
echo
cat "$OUT_DIR/summary.md"
echo
echo "results: $OUT_DIR ($files files)"
exit $FAILED
