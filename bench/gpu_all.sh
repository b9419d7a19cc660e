#!/usr/bin/env bash
# GPU benchmarks in one call, paper size: training samples/s (bench/train_speed.py: issue 7.4, issue 3) and
# audio-driven render frames/s (bench/render_gpu.py: issue 7.3 / issue 5). About 8 minutes.
#
# The GPU machine (../.library/device/README.md) has no network and its own Python 3.12 with a CUDA torch, h5py,
# opencv, scikit-image, safetensors, tqdm, ... The project has no virtual environment to carry (it uses the system
# Python; one built here would be Python 3.11 with the CPU torch anyway). What is missing there travels in the
# git-ignored folder resources/gpu_bench/, made here (PyPI reachable) by
#
#     bash bench/gpu_all.sh prepare
#
# wheels/: PyPI wheels of av and dlib-bin for CPython 3.12 x86-64, this machine's versions (~40 MB; only the
# end-to-end render needs them); astronaut_landmarks.npy: the demo photo's 68 dlib landmarks (dlib's 100 MB model
# file is too big to carry); demo_speech.wav: the demo sentence (no espeak-ng there). Then one device call:
#
#     run(command="bash bench/gpu_all.sh", carry=["resources/gpu_bench"], timeout_s=600)
#
# Results under ${OUT:-/tmp/gpu_bench}: train_speed.{json,md,log}, render_gpu.{json,md,log} and env.txt (7 files;
# a call brings back at most 8). Each script rewrites its JSON after every configuration, so a step stopped by its
# time limit keeps what it measured. Smoke test on a CPU: bash bench/gpu_all.sh smoke (tiny sizes, ~1 min).
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=resources/gpu_bench
PY=python3

if [[ "${1:-}" == prepare ]]; then
    set -e
    mkdir -p "$CARRY/wheels"
    rm -f "$CARRY"/wheels/*.whl
    versions=$($PY -c 'import importlib.metadata as m; print(*(f"{p}=={m.version(p)}" for p in ("av", "dlib-bin")))')
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
        platforms+=(--platform "$p")
    done
    # shellcheck disable=SC2086  # $versions is two words on purpose
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$CARRY/wheels" $versions
    $PY bench/render_gpu.py --prepare "$CARRY"
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
if ! $PY -c 'import av, dlib' 2>/dev/null && compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_bench_site \
        "$CARRY"/wheels/*.whl && export PYTHONPATH=/tmp/gpu_bench_site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
carried=()
[[ -f "$CARRY/astronaut_landmarks.npy" ]] && carried+=(--landmarks "$CARRY/astronaut_landmarks.npy")
[[ -f "$CARRY/demo_speech.wav" ]] && carried+=(--speech "$CARRY/demo_speech.wav")

if [[ "${1:-}" == smoke ]]; then  # tiny sizes, a few steps: checks the wiring, not the speed
    train=(--size tiny --batch-size 2 --steps 2 --warmup 1 --configs fp32,bf16)
    render=(--size tiny --batch-sizes 2 4 --precision bf16 fp32 --repeats 2 --warmup 1 --baseline-frames 3
            --seconds 2 --e2e-repeats 1)
    limits=(120 120)
else
    train=(--size paper --batch-size 16 --steps 30 --warmup 5
           --configs fp32,all,bf16,bf16+channels_last,bf16+channels_last+fused_adam)
    render=(--size paper --batch-sizes 32 64 128 256 --precision bf16 fp32 --e2e-precision bf16 --seconds 60
            --chunk-frames 0 128)
    limits=(330 150)
fi

{
    date -u
    nvidia-smi || true
    $PY -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda,
        torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
    $PY -m pip list 2>/dev/null | grep -i -E '^(torch|triton|numpy|av|dlib) ' || true
} >"$OUT/env.txt" 2>&1

TORCH_LOGS=recompiles timeout "${limits[0]}" $PY bench/train_speed.py "${train[@]}" --json "$OUT/train_speed.json" \
    --md "$OUT/train_speed.md" 2>&1 | tee "$OUT/train_speed.log"
train_rc=$?
timeout "${limits[1]}" $PY bench/render_gpu.py "${render[@]}" "${carried[@]}" --json "$OUT/render_gpu.json" \
    --md "$OUT/render_gpu.md" 2>&1 | tee "$OUT/render_gpu.log"
render_rc=$?

echo "train_speed exit $train_rc, render_gpu exit $render_rc (124: stopped at its time limit)"
cat "$OUT/train_speed.md" "$OUT/render_gpu.md" 2>/dev/null
[[ $train_rc == 0 && $render_rc == 0 ]]
