#!/usr/bin/env bash
# The GPU checks of iqart in one call, for a CUDA machine lent briefly (the device image: PyTorch on
# Python 3.12 with the distributions in benchmarks/device_image/packages.txt, nvcc, ninja,
# compute-sanitizer; no open_clip, ftfy or wcwidth, no TensorRT, no package registry). Correctness
# evidence first, then the figures; each step under its own time cap (PLAN below), the caps inside
# one budget (IQART_VERIFY_BUDGET_S, default 540 s):
#   imports              the kernel, op, plugin and plan-cache modules import without open_clip
#   sanitizer-preflight  a tiny CUDA program, plainly and under compute-sanitizer: where the host
#                        refuses the sanitizer (gVisor: "Device not supported"), the sanitizer steps
#                        are "unavailable on this host", not kernel failures
#   build                the fused attention torch op is compiled (its error printed in full if not)
#   gpu-tests            tests/test_kernels.py -m gpu: op vs float64 SDPA, fp16/fp32, both regimes,
#                        poisoned outputs, views (no tests/conftest.py: it imports the model zoo)
#   decode-tests         tests/test_gpu_decode.py -m gpu: nvJPEG vs the CPU path, many batches back
#                        to back, fallbacks, orientation
#   memcheck, racecheck, initcheck   compute-sanitizer on benchmarks/memcheck_driver.py
#   fused-bench          fused op vs SDPA's fastest backend, CUDA-graph timed, fp16
#                        (benchmarks/bench_fused_attention.py)
#   model-bench          whole models at batch 1/32/128: torch fp32, torch fp16 autocast, fp16 +
#                        SDPA + CUDA graph and fp16 + fused op + CUDA graph, with the runners and
#                        timing of `iqart bench` (QualiCLIP and BPCLIP at 224, QualiCLIP at 1024x768;
#                        random RN50 weights)
#   decode-bench         12 MP JPEGs: decode images/s, PIL on the CPU vs nvJPEG batched, and end-to-end
#                        images/s with --decode-device cpu vs cuda (benchmarks/bench_gpu_decode.py)
# decode-tests, model-bench and decode-bench need the model code (open_clip), carried as wheels in
# .whl/ (see --fetch-wheels). Results: at most 8 files in $OUT (default: a new temporary folder):
# gpu_verify.log (every step's whole output), summary.md (one row per step, with the cause of each
# failure), env.txt, fused_attention.json, model_bench.json, gpu_decode.json. Exit status 1 if any
# step failed or was skipped.
#
#   bash benchmarks/gpu_verify.sh                 # on the GPU machine (device tool: carry .whl)
#   bash benchmarks/gpu_verify.sh --dry-run       # here: every import and argument of the real run,
#                                                 # with what the device image lacks blocked
#   bash benchmarks/gpu_verify.sh --fetch-wheels  # here: download the wheels the model steps need
#   bash benchmarks/gpu_verify.sh --plan          # the steps in order: name, kind, cap in seconds
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
WHEELS="$REPO/.whl"  # git-ignored; the device tool carries it with carry=[".whl"]
CARRIED_DISTS="open_clip_torch ftfy wcwidth"  # what the model code needs beyond the device image
BUDGET=${IQART_VERIFY_BUDGET_S:-540}
SETUP_S=25  # time outside the steps: the environment report, the wheels' install, the summary

# Every step in the order run: its kind (check: correctness evidence; bench: figures) and its cap
# in seconds. Checks come before benches, and the caps plus SETUP_S fit the default budget, so that
# no check is cut by a slow benchmark (tests/test_gpu_verify.py reads this with --plan and compares
# it with the order the dry run takes).
PLAN="
imports              check   20
sanitizer-preflight  check   20
build                check  100
gpu-tests            check   40
decode-tests         check   40
memcheck             check   60
racecheck            check   45
initcheck            check   35
fused-bench          bench   30
model-bench          bench   70
decode-bench         bench   55
"

MODE=run
case "${1:-}" in
    "") ;;
    --dry-run) MODE=dry ;;
    --fetch-wheels) MODE=fetch ;;
    --plan) echo "budget $BUDGET setup $SETUP_S"; echo "$PLAN" | sed '/^$/d'; exit 0 ;;
    -h | --help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bash benchmarks/gpu_verify.sh [--dry-run | --fetch-wheels | --plan]" >&2; exit 2 ;;
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
    # sitecustomize there makes every module the device image lacks unimportable in every Python
    # started below; the carried distributions only where a step is given them.
    export PYTHONPATH="$REPO/benchmarks/device_image:$PYTHONPATH" \
        IQART_DEVICE_PACKAGES="$REPO/benchmarks/device_image/packages.txt" IQART_CARRIED_DISTS="$CARRIED_DISTS"
fi
NVCC=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
FAILED=0

say() { echo "$*" | tee -a "$LOG"; }
row() { echo "| $1 | $2 | $3 | $4 |" >>"$ROWS"; }
one_line() { tr '\n|' ' /' | cut -c1-"${1:-300}"; }

# begin_step NAME: announces the step with its kind and cap from PLAN and sets LIMIT to the
# seconds it may run: its cap, or what is left of the budget. Returns 1 (after a "skipped" row)
# when too little is left.
begin_step() {
    local entry
    entry=$(echo "$PLAN" | awk -v name="$1" '$1 == name {print $2, $3}')
    if [ -z "$entry" ]; then
        say "== step $1: not in PLAN"; row "$1" FAILED 0 "not in the PLAN of gpu_verify.sh"; FAILED=1; return 1
    fi
    local kind=${entry% *} cap=${entry#* }
    local left=$((BUDGET - SECONDS))
    LIMIT=$((cap < left ? cap : left))
    say "== step $1 ($kind, cap $cap s) $(date -u +%H:%M:%S)"
    if [ "$MODE" = run ] && [ "$LIMIT" -lt 10 ]; then
        say "== $1: SKIPPED, the time budget (${BUDGET} s) is spent"
        row "$1" skipped 0 "time budget of ${BUDGET} s spent before this step"
        FAILED=1
        return 1
    fi
}

# run_step NAME COMMAND...: runs COMMAND under LIMIT seconds (begin_step's), its whole output into
# the log, its last lines on the console; a failure's cause (the output's last error-looking lines)
# goes into the summary.
run_step() {
    local name=$1
    shift
    local started=$SECONDS out="$WORK/steps/$name.log"
    say "   limit ${LIMIT} s: $*"
    timeout --kill-after=10 "$LIMIT" "$@" >"$out" 2>&1
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
        cause="timed out after ${LIMIT} s; last output: $(tail -n 1 "$out" | cut -c1-200)"
    else
        cause="exit $rc: $(grep -E -i 'error|fail|assert|not found|no module|unavailable|denied|refused' "$out" | tail -n 3 | one_line 400)"
        [ "${cause#exit $rc: }" = "" ] && cause="exit $rc: $(tail -n 2 "$out" | one_line)"
    fi
    say "== $name: FAILED ($cause)"
    row "$name" FAILED "$took" "$cause"
}

# --- environment ---------------------------------------------------------------------------------
(  # a subshell, so that its early exit in the dry run ends only this block
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); mode: $MODE; checkout: $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
    [ "$MODE" = dry ] && exit 0  # the machine's own description matters on the device only
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "CUDA_HOME=${CUDA_HOME:-unset}; nvcc: $NVCC; kernel: $(uname -r)"
    "$NVCC" --version 2>&1 | tail -n 2 || echo "nvcc: not found"
    "$SANITIZER" --version 2>&1 | head -n 3 || true
    python3 -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    python3 -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|numpy|onnx|onnxruntime|pytest|ninja|open.clip|ftfy|wcwidth|tensorrt)[ _-]' || true
) >"$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt" >>"$LOG"

# --- the model code's extra packages -------------------------------------------------------------
MODEL_ENV=()
MODEL_CODE_MISSING=""
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    say "installing the carried wheels: $(cd "$WHEELS" && ls -- *.whl | tr '\n' ' ')"
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl >>"$LOG" 2>&1; then
        MODEL_ENV=(PYTHONPATH="$WORK/site:$PYTHONPATH")
        [ "$MODE" = dry ] && MODEL_ENV+=(IQART_CARRIED_SITE="$WORK/site")
    else
        say "pip could not install the carried wheels (see above)"
    fi
elif [ "$MODE" = dry ]; then
    say "no .whl/: this machine's open_clip, ftfy and wcwidth stand in for the carried wheels; the real run needs them: bash benchmarks/gpu_verify.sh --fetch-wheels, then carry .whl"
    MODEL_ENV=(IQART_CARRIED_SITE=installed)
fi
if [ "$MODE" = run ] && [ ${#MODEL_ENV[@]} -eq 0 ] && ! python3 -c "import open_clip" 2>/dev/null; then
    MODEL_CODE_MISSING="open_clip is not importable and no wheels were carried in .whl/ (bash benchmarks/gpu_verify.sh --fetch-wheels where a registry is, then carry .whl)"
fi

# --- the sanitizer preflight ---------------------------------------------------------------------
# SANITIZER_STATE: "ok", "unavailable on this host (...)" or "not run (...)", read by the sanitizer steps.
SANITIZER_STATE="not run (the sanitizer preflight did not run)"
preflight_part() {  # preflight_part LABEL COMMAND...: COMMAND in what is left of LIMIT; output in $PART_OUT
    local left=$((PREFLIGHT_END - SECONDS))
    PART_OUT="$WORK/steps/sanitizer-preflight.$1.log"
    timeout --kill-after=5 "$((left > 1 ? left : 1))" "${@:2}" >"$PART_OUT" 2>&1
    local rc=$?
    { echo "-- $1 (exit $rc): ${*:2}"; cat "$PART_OUT"; } >>"$LOG"
    return $rc
}
sanitizer_preflight() {
    begin_step sanitizer-preflight || { SANITIZER_STATE="not run (no time was left for the sanitizer preflight)"; return; }
    PREFLIGHT_END=$((SECONDS + LIMIT))
    local started=$SECONDS program="$WORK/sanitizer_preflight" cause=""
    # No target named: nvcc embeds sm_75 code and PTX, which runs on any GPU since Turing.
    local compile=("$NVCC" -o "$program" benchmarks/device_image/sanitizer_preflight.cu)
    if [ "$MODE" = dry ]; then  # the compile is all a machine without a GPU can check
        if [ ! -x "$NVCC" ]; then
            say "== sanitizer-preflight: nvcc not on this machine (the GPU image has it): the compile is not checked"
            row "sanitizer-preflight (dry)" ok 0 "nvcc not on this machine: the compile is not checked"
        elif preflight_part compile "${compile[@]}"; then
            say "== sanitizer-preflight: compiled; it runs, plainly and under compute-sanitizer, on the GPU machine"
            row "sanitizer-preflight (dry)" ok $((SECONDS - started)) ""
        else
            cause="nvcc could not build the preflight program: $(tail -n 3 "$PART_OUT" | one_line)"
            say "== sanitizer-preflight: FAILED ($cause)"
            row "sanitizer-preflight (dry)" FAILED $((SECONDS - started)) "$cause"
            FAILED=1
        fi
        return
    fi
    if [ ! -x "$NVCC" ]; then
        cause="nvcc not found ($NVCC)"
    elif ! preflight_part compile "${compile[@]}"; then
        cause="nvcc could not build the preflight program: $(tail -n 3 "$PART_OUT" | one_line)"
    elif ! preflight_part plain "$program"; then
        cause="the preflight program failed without the sanitizer: $(tail -n 3 "$PART_OUT" | one_line)"
    fi
    if [ -n "$cause" ]; then  # not the sanitizer's fault: CUDA itself does not work here
        say "== sanitizer-preflight: FAILED ($cause)"
        row sanitizer-preflight FAILED $((SECONDS - started)) "$cause"
        FAILED=1
        SANITIZER_STATE="not run (the sanitizer preflight failed: $cause)"
        return
    fi
    if [ ! -x "$SANITIZER" ]; then
        cause="compute-sanitizer not found ($SANITIZER)"
    elif preflight_part memcheck "$SANITIZER" --tool memcheck --error-exitcode 1 "$program" \
            && grep -q "values right" "$PART_OUT"; then
        say "== sanitizer-preflight: ok ($((SECONDS - started)) s): compute-sanitizer runs kernels on this host"
        row sanitizer-preflight ok $((SECONDS - started)) ""
        SANITIZER_STATE=ok
        return
    else
        cause="compute-sanitizer refused this host: $(grep -E -i 'not supported|error|fail' "$PART_OUT" | head -n 3 | one_line)"
        [ "$cause" = "compute-sanitizer refused this host: " ] && cause+=$(tail -n 3 "$PART_OUT" | one_line)
    fi
    # The program ran without the sanitizer: the host, not the kernels, is what the sanitizer steps lack.
    say "== sanitizer-preflight: unavailable on this host ($cause)"
    row sanitizer-preflight "unavailable on this host" $((SECONDS - started)) "$cause"
    SANITIZER_STATE="unavailable on this host ($cause)"
}

# --- the Python steps ----------------------------------------------------------------------------
# py_step NAME [--sanitizer TOOL] [--model-code] [--require-gpu] -- PYTHON_ARGS...: `python3
# PYTHON_ARGS` (under compute-sanitizer when a tool is named; with the carried wheels for
# --model-code; a GPU test that would skip fails with --require-gpu). The dry run lists the same
# arguments for benchmarks/dry_run_check.py, which checks them all in one process at the end.
py_step() {
    local name=$1 tool="" model=0
    local env=()
    shift
    while [ "$1" != -- ]; do
        case $1 in
            --sanitizer) tool=$2; shift ;;
            --model-code) model=1; env+=("${MODEL_ENV[@]}") ;;
            --require-gpu) env+=(IQART_REQUIRE_GPU=1) ;;  # this run exists to run them
        esac
        shift
    done
    shift  # --
    begin_step "$name" || return
    if [ "$MODE" = dry ]; then
        if [ -n "$tool" ] && ! check_sanitizer_tool "$tool"; then return; fi
        python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "argv": sys.argv[3:],
            "env": dict(v.split("=", 1) for v in filter(None, sys.argv[2].split("\n")))}))' \
            "$name" "$(printf '%s\n' "${env[@]}")" "$@" >>"$WORK/dry-commands.jsonl"
        return
    fi
    if [ $model = 1 ] && [ -n "$MODEL_CODE_MISSING" ]; then
        say "== $name: FAILED before starting: $MODEL_CODE_MISSING"
        row "$name" FAILED 0 "$MODEL_CODE_MISSING"
        FAILED=1
        return
    fi
    if [ -z "$tool" ]; then
        run_step "$name" env "${env[@]}" python3 "$@"
    elif [ "$SANITIZER_STATE" = ok ]; then
        # Without the caching allocator every tensor is its own allocation, so overruns are caught.
        run_step "$name" env "${env[@]}" PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
            "$SANITIZER" --tool "$tool" --error-exitcode 1 --print-limit 20 python3 "$@"
    elif [ "${SANITIZER_STATE#unavailable}" != "$SANITIZER_STATE" ]; then
        say "== $name: $SANITIZER_STATE"
        row "$name" "unavailable on this host" 0 "${SANITIZER_STATE#unavailable on this host }"
    else
        say "== $name: $SANITIZER_STATE"
        row "$name" skipped 0 "$SANITIZER_STATE"
        FAILED=1
    fi
}

check_sanitizer_tool() {
    case $1 in
        memcheck | racecheck | initcheck | synccheck) return 0 ;;
        *) say "unknown compute-sanitizer tool $1"; row "$name" FAILED 0 "unknown compute-sanitizer tool $1"; FAILED=1; return 1 ;;
    esac
}

# --- the steps, in PLAN's order: every check before any benchmark --------------------------------
py_step imports -- benchmarks/check_light_imports.py  # first: nothing has imported open_clip yet
sanitizer_preflight
py_step build -- benchmarks/build_fused_op.py
py_step gpu-tests --require-gpu -- -m pytest --noconftest -p no:cacheprovider -q -rs -m gpu tests/test_kernels.py
py_step decode-tests --model-code --require-gpu -- -m pytest -p no:cacheprovider -q -rs -m gpu tests/test_gpu_decode.py
py_step memcheck --sanitizer memcheck -- benchmarks/memcheck_driver.py
py_step racecheck --sanitizer racecheck -- benchmarks/memcheck_driver.py --dtypes float16
py_step initcheck --sanitizer initcheck -- benchmarks/memcheck_driver.py --dtypes float16
py_step fused-bench -- benchmarks/bench_fused_attention.py --dtypes float16 --json "$OUT_DIR/fused_attention.json"
py_step model-bench --model-code -- benchmarks/bench_fused_attention.py --whole-model qualiclip:224 bpclip-nr:224 \
    qualiclip:1024x768 --batch-sizes 1,32,128 --json "$OUT_DIR/model_bench.json"
py_step decode-bench --model-code -- benchmarks/bench_gpu_decode.py --count 64 --batch 32 --json "$OUT_DIR/gpu_decode.json"

if [ "$MODE" = dry ]; then
    if [ -x "$SANITIZER" ]; then
        say "compute-sanitizer: $SANITIZER"
    else
        say "compute-sanitizer: not on this machine (the GPU image has it)"
    fi
    LIMIT=300
    run_step checks python3 benchmarks/dry_run_check.py --commands "$WORK/dry-commands.jsonl" --rows "$ROWS"
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
