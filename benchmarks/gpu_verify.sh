#!/usr/bin/env bash
# The GPU checks of iqart, in two parts that each fit one short device call (the device image:
# PyTorch on Python 3.12 with the distributions in benchmarks/device_image/packages.txt, nvcc,
# cmake, ninja, compute-sanitizer; no open_clip, ftfy or wcwidth, no TensorRT, no package
# registry). Each part's step caps and its setup add up to at most 240 s of command time
# (IQART_VERIFY_BUDGET_S), so one machine start and both parts back to back on the warm machine
# take about 10 of the 15 minutes a session is lent, leaving time to rerun either part once.
#
#   --part checks   correctness evidence:
#     imports              the kernel, op, plugin and plan-cache modules import without open_clip
#     sanitizer-preflight  a tiny CUDA program, plainly and under compute-sanitizer: where the host
#                          refuses the sanitizer (gVisor: "Device not supported"), the sanitizer
#                          steps are "unavailable on this host", not kernel failures
#     build                the fused attention torch op is compiled (its error printed in full if not)
#     plugin               libiqart_plugins.so built against TensorRT 11's headers (carried in
#                          .trt_headers/) and run without TensorRT by kernels/tests/
#                          plugin_enqueue_harness.cpp against float64 and the torch op
#                          (benchmarks/plugin_enqueue_check.py)
#     gpu-tests            tests/test_kernels.py -m gpu: op vs float64 SDPA, fp16/fp32, both regimes,
#                          poisoned outputs, views (no tests/conftest.py: it imports the model zoo)
#     decode-tests         tests/test_gpu_decode.py -m gpu: nvJPEG vs the CPU path, many batches,
#                          fallbacks, orientation
#     memcheck, racecheck, initcheck   compute-sanitizer on benchmarks/memcheck_driver.py
#     train-steps          a few steps of each trainer on the GPU with fp16 autocast: losses finite
#                          and falling (benchmarks/train_steps_gpu.py)
#   --part bench    figures (the op build again: seconds when the checks part left it built):
#     fused-bench          fused op vs SDPA's fastest backend, CUDA-graph timed, fp16, every shape's
#                          inputs at least twice the L2 (benchmarks/bench_fused_attention.py)
#     model-bench          whole models at batch 1/32/128: torch fp32, torch fp16 autocast, fp16 +
#                          SDPA + CUDA graph and fp16 + fused op + CUDA graph, with the runners and
#                          timing of `iqart bench` (QualiCLIP and BPCLIP at 224, QualiCLIP at
#                          1024x768; random RN50 weights)
#     decode-bench         12 MP JPEGs: PIL on the CPU vs nvJPEG batched, and end to end with
#                          --decode-device cpu vs cuda (benchmarks/bench_gpu_decode.py)
# Without --part, both parts run one after the other (each within its own budget).
# decode-tests, train-steps, model-bench and decode-bench need the model code (open_clip), carried
# as wheels in .whl/ (see --fetch-wheels). Every step that measures writes its JSON after every
# shape, batch or step, so a cap or a timeout keeps what was measured. Results: at most 8 files in
# $OUT (default: a new temporary folder): gpu_verify-PART.log (every step's whole output),
# summary-PART.md (one row per step, with the cause of each failure, then the machine: GPU, driver,
# CUDA, torch), and the JSON files train_steps.json (checks), fused_attention.json,
# model_bench.json and gpu_decode.json (bench): 8 files when both parts run in one call.
# Exit status 1 if any step failed or was skipped.
#
#   bash benchmarks/gpu_verify.sh --part checks   # on the GPU machine (carry .whl and .trt_headers)
#   bash benchmarks/gpu_verify.sh --part bench    # right after, on the same warm machine
#   bash benchmarks/gpu_verify.sh --dry-run       # here: both parts' imports and arguments, with
#                                                 # what the device image lacks blocked
#   bash benchmarks/gpu_verify.sh --fetch-wheels  # here: download the wheels the model steps need
#   bash benchmarks/gpu_verify.sh --plan          # the steps in order: part, name, kind, cap in seconds
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
WHEELS="$REPO/.whl"  # git-ignored; the device tool carries it with carry=[".whl", ".trt_headers"]
CARRIED_DISTS="open_clip_torch ftfy wcwidth"  # what the model code needs beyond the device image
BUDGET=${IQART_VERIFY_BUDGET_S:-240}  # per part: 4 minutes of command time
# Time outside the steps, per part: the environment report (nvidia-smi, nvcc and the sanitizer's
# versions, one Python start that imports torch: about 3 s here), the carried wheels' install
# (three small pure-Python wheels, pip without a registry: a few seconds) and the summary.
SETUP_S=10

# Every step in the order run: its part, kind (check: correctness evidence; bench: figures) and cap
# in seconds. A cap is the most the step may take, not what it is expected to take; each part's
# caps plus SETUP_S fit BUDGET, so that no step is cut because an earlier one ran long
# (tests/test_gpu_verify.py reads this with --plan and compares it with the order the dry run
# takes). Where a cap comes from:
# - build 45: the op's nvcc and g++ compile takes about 20 s on this project's 2-core CPU machines
#   (tests/test_fused_op_compile.py, sm_90 as there); ninja runs its three sources in parallel on
#   the GPU machine's 16 cores. Cached under build/gpu-verify-home, so the bench part, run on the
#   same warm machine, finds it built and spends seconds.
# - plugin 35: cmake configure and the plugin build for sm_90 alone took 13 s on 2 cores here, the
#   harness's compile 2 s, its float64 references (the largest: 2 x 4 heads x 400 x 400 x 64) under
#   a second, the torch-op comparison one Python start with the op already built, and the harness
#   again under memcheck (a C++ program: the sanitizer's start, about a second, and the same work).
# - gpu-tests 20, decode-tests 20: one pytest start with torch (about 3 s here) and seconds of GPU
#   work (the op's random shapes against float64 SDPA; a few dozen JPEGs through nvJPEG).
# - memcheck 20, racecheck 20, initcheck 15: one PyTorch process under compute-sanitizer each.
#   The driver's calls are the smallest that take each kernel path (benchmarks/memcheck_driver.py:
#   at most 17 MB of Q, K and V a call, microseconds of kernel time, so even a hundredfold
#   instrumentation slowdown leaves them under a second); what costs is the process: Python and
#   torch start in about 3 s, the sanitizer adds its own start (the preflight's C program measures
#   it) and patches each CUDA module as it loads. CUDA_MODULE_LOADING=LAZY (set below; CUDA's
#   default since 12.2) keeps that to the dozen kernels the driver uses rather than all of
#   torch's. Nobody has timed PyTorch under compute-sanitizer on these machines yet: the driver
#   prints its own timeline (torch imported, CUDA ready, calls done) for the next sizing.
#   initcheck runs the fp16 cases only, racecheck too (the tensor-core kernel's cp.async and
#   ldmatrix are where a race would be), memcheck both dtypes. Should a PyTorch process under the
#   sanitizer outlast these caps, the plugin step has already run the fp16 kernels at both
#   models' shapes under memcheck in a C++ program, which starts under it in about a second.
# - train-steps 30: three RN50 models built with random weights (about a second each), one batch
#   each drawn on the CPU (seconds of degradations), a batch-norm calibration pass and 10 fp16
#   steps each on 12 to 20 crops of 224 px (tens of milliseconds a step on a Hopper GPU; the
#   first includes cuDNN's autotuning).
# - fused-bench 60: 17 shapes, each a graph of every input set (up to about a thousand small calls)
#   for the op and each SDPA backend, 15 replays: about a second or two a shape.
# - model-bench 75: two RN50 loads, 3 sizes x 3 batches x 4 variants, 10 calls each, the largest
#   (QualiCLIP 1024x768 at batch 128, fp32) about 0.2 s a call; written after every batch.
# - decode-bench 45: 64 JPEGs of 12 MP made (8 distinct), decoded 3 times each way, then scored
#   end to end 3 times each way with an RN50 BPCLIP.
PLAN="
checks  imports              check   10
checks  sanitizer-preflight  check   15
checks  build                check   45
checks  plugin               check   35
checks  gpu-tests            check   20
checks  decode-tests         check   20
checks  memcheck             check   20
checks  racecheck            check   20
checks  initcheck            check   15
checks  train-steps          check   30
bench   build                check   45
bench   fused-bench          bench   60
bench   model-bench          bench   75
bench   decode-bench         bench   50
"

MODE=run
PARTS="checks bench"
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) MODE=dry ;;
        --fetch-wheels) MODE=fetch ;;
        --part)
            case ${2:-} in
                checks | bench) PARTS=$2; shift ;;
                *) echo "--part takes checks or bench" >&2; exit 2 ;;
            esac ;;
        --plan) echo "budget $BUDGET setup $SETUP_S"; echo "$PLAN" | sed '/^$/d'; exit 0 ;;
        -h | --help) sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: bash benchmarks/gpu_verify.sh [--part checks|bench] [--dry-run] | --fetch-wheels | --plan" >&2; exit 2 ;;
    esac
    shift
done

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
# `import iqart` from this checkout without installing it (the device has no registry and the
# package maps the repository root to `iqart`).
ln -s "$REPO" "$WORK/pkg/iqart"
export PYTHONPATH="$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}"
# On the device, the op build and its cache live in an ignored folder of the checkout, which the
# device tool keeps between calls on a warm machine: the bench part finds the op the checks part
# built. The dry run keeps to its temporary folder.
if [ "$MODE" = run ]; then IQART_HOME="$REPO/build/gpu-verify-home"; else IQART_HOME="$WORK/home"; fi
export IQART_HOME PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 CUDA_MODULE_LOADING=LAZY
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
PART=${PARTS%% *}
PART_START=0
LOG="$OUT_DIR/gpu_verify-$PART.log"
ROWS="$WORK/summary-rows-$PART.md"
: >"$LOG"
: >"$ROWS"

say() { echo "$*" | tee -a "$LOG"; }
row() { echo "| $1 | $2 | $3 | $4 |" >>"$ROWS"; }
one_line() { tr '\n|' ' /' | cut -c1-"${1:-300}"; }

# begin_step NAME: announces the step of the current PART with its kind and cap from PLAN and sets
# LIMIT to the seconds it may run: its cap, or what is left of the part's budget. Returns 1 (after
# a "skipped" row) when too little is left.
begin_step() {
    local entry
    entry=$(echo "$PLAN" | awk -v part="$PART" -v name="$1" '$1 == part && $2 == name {print $3, $4}')
    if [ -z "$entry" ]; then
        say "== step $1: not in PLAN for part $PART"; row "$1" FAILED 0 "not in the PLAN of gpu_verify.sh"; FAILED=1; return 1
    fi
    local kind=${entry% *} cap=${entry#* }
    local left=$((BUDGET - (SECONDS - PART_START)))
    LIMIT=$((cap < left ? cap : left))
    say "== step $1 ($kind, cap $cap s) $(date -u +%H:%M:%S)"
    if [ "$MODE" = run ] && [ "$LIMIT" -lt 5 ]; then
        say "== $1: SKIPPED, the part's time budget (${BUDGET} s) is spent"
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
    local started=$SECONDS out="$WORK/steps/$PART-$name.log"
    say "   limit ${LIMIT} s: $*"
    timeout --kill-after=5 "$LIMIT" "$@" >"$out" 2>&1
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
) >"$WORK/env.txt" 2>&1
cat "$WORK/env.txt" >>"$LOG"

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
    PART_OUT="$WORK/steps/$PART-sanitizer-preflight.$1.log"
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

# --- the parts, their steps in PLAN's order --------------------------------------------------------
part_checks() {
    py_step imports -- benchmarks/check_light_imports.py  # first: nothing has imported open_clip yet
    sanitizer_preflight
    py_step build -- benchmarks/build_fused_op.py
    local memcheck=()  # the harness under memcheck too, where the preflight found the sanitizer working
    [ "$SANITIZER_STATE" = ok ] && memcheck=(--memcheck "$SANITIZER")
    py_step plugin -- benchmarks/plugin_enqueue_check.py ${memcheck[@]+"${memcheck[@]}"}
    py_step gpu-tests --require-gpu -- -m pytest --noconftest -p no:cacheprovider -q -rs -m gpu tests/test_kernels.py
    py_step decode-tests --model-code --require-gpu -- -m pytest -p no:cacheprovider -q -rs -m gpu tests/test_gpu_decode.py
    py_step memcheck --sanitizer memcheck -- benchmarks/memcheck_driver.py
    py_step racecheck --sanitizer racecheck -- benchmarks/memcheck_driver.py --dtypes float16
    py_step initcheck --sanitizer initcheck -- benchmarks/memcheck_driver.py --dtypes float16
    py_step train-steps --model-code -- benchmarks/train_steps_gpu.py --steps 10 --json "$OUT_DIR/train_steps.json"
}

part_bench() {
    py_step build -- benchmarks/build_fused_op.py  # a cache hit after the checks part on a warm machine
    py_step fused-bench -- benchmarks/bench_fused_attention.py --dtypes float16 --json "$OUT_DIR/fused_attention.json"
    py_step model-bench --model-code -- benchmarks/bench_fused_attention.py --whole-model qualiclip:224 bpclip-nr:224 \
        qualiclip:1024x768 --batch-sizes 1,32,128 --json "$OUT_DIR/model_bench.json"
    py_step decode-bench --model-code -- benchmarks/bench_gpu_decode.py --count 64 --batch 32 --json "$OUT_DIR/gpu_decode.json"
}

# The part's summary: one row per step, with the cause of each failure.
write_summary() {
    {
        echo "# gpu_verify --part $PART ($MODE) $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - PART_START)) s of a ${BUDGET} s budget"
        echo
        echo "| step | status | seconds | cause |"
        echo "|---|---|---|---|"
        cat "$ROWS"
        echo
        echo '```'
        cat "$WORK/env.txt"
        echo '```'
    } >"$OUT_DIR/summary-$PART.md"
    echo
    cat "$OUT_DIR/summary-$PART.md"
}

PART_START=0  # the first part's budget counts the setup above (SETUP_S), as the device's clock does
for PART in $PARTS; do
    [ "$PART" = "${PARTS%% *}" ] || PART_START=$SECONDS
    LOG="$OUT_DIR/gpu_verify-$PART.log"
    ROWS="$WORK/summary-rows-$PART.md"
    touch "$LOG" "$ROWS"
    say "=== part $PART $(date -u +%H:%M:%S)"
    : >"$WORK/dry-commands.jsonl"
    "part_$PART"
    if [ "$MODE" = dry ]; then
        if [ -x "$SANITIZER" ]; then
            say "compute-sanitizer: $SANITIZER"
        else
            say "compute-sanitizer: not on this machine (the GPU image has it)"
        fi
        LIMIT=300
        run_step dry-run-check python3 benchmarks/dry_run_check.py --commands "$WORK/dry-commands.jsonl" --rows "$ROWS"
    fi
    write_summary
done

files=$(find "$OUT_DIR" -type f | wc -l)
if [ "$files" -gt 8 ]; then
    say "$OUT_DIR holds $files files; the device tool returns at most 8"
    FAILED=1
fi
echo
echo "results: $OUT_DIR ($files files)"
exit $FAILED
