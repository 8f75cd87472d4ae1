#!/usr/bin/env bash
# The GPU checks of the loader and the trainers, in one go, on a CUDA machine:
#
#     bash bench/gpu.sh LOG_DIR [IMAGES] [WORKDIR] [PARTS]
#
# PARTS: any of loader, steps, phase6, comma-separated (default: all three).
#
# loader: synthesises IMAGES full-size images (default 10015), builds them at 256 px,
# then: the GPU decode tests; bench/loader.py for --decode cpu and gpu with
# 1, 2 and 4 workers; Phase 5's training step against the loader (4 workers);
# the decode floor (CPU and nvJPEG) and the on-the-fly path; short Phase 5
# (--decode gpu) and Phase 4 (--decode cpu, then gpu) runs on CUDA with AMP;
# evaluate with TTA.
# steps: the training step alone (bench/step.py: the trainers' own loop on one fixed batch) for Phase 5
# (MobileNetV3-Large at 224, batch 48 and 256) and Phase 6 (EfficientNet-B3 at 300 and ConvNeXt-Tiny at 224, metadata
# fusion), each in bf16 and fp16, with and without torch.compile, with the peak GPU memory; the loader alone at
# 300 px; and Phase 5 end to end (train, --decode gpu, 4 workers) at batch 48 and 256, with and without --compile.
# phase6: one full-length Phase 6 run of each backbone (EfficientNet-B3, ConvNeXt-Tiny) on the full-size synthetic
# build stored at 384 px (AMP, channels_last, metadata fusion, --decode gpu), then evaluate with TTA; their
# metrics.jsonl are copied into LOG_DIR. Needs webdataset and braceexpand besides the CUDA image's
# usual packages (torch, torchvision, opencv, pandas, click, tqdm, matplotlib). Each step's
# output goes to LOG_DIR/gpu.log; a failed step is reported and the rest run.
set -u
LOG=${1:?usage: bash bench/gpu.sh LOG_DIR [IMAGES] [WORKDIR]}
N=${2:-10015}
W=${3:-/tmp/hamdata-gpu}
PARTS=${4:-loader,steps,phase6}
PY=${PYTHON:-python3}
LOG=$(mkdir -p "$LOG" && cd "$LOG" && pwd)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$LOG/gpu.log") 2>&1
cd "$(dirname "$0")/.."

step() {  # step SECONDS COMMAND...: run with a time limit, report its exit status and wall time
  local limit=$1; shift
  echo "== $*"
  local t0=$SECONDS
  timeout "$limit" "$@"
  echo "== rc=$? in $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch, torchvision, cv2, os; print(sys.version.split()[0], torch.__version__, torchvision.__version__, cv2.__version__, torch.cuda.get_device_name(), os.cpu_count(), 'CPUs')"
has() { [[ ",$PARTS," == *",$1,"* ]]; }

step 120 $PY cli.py synth --out "$W/data" --images "$N" --overwrite
step 120 $PY cli.py build-shards --data "$W/data" --out "$W/shards" --overwrite
rm -rf "$W/runs" "$W/shards384"  # every run below starts afresh (train refuses an existing --out)

if has loader; then
  step 60 $PY -m pytest -q -p no:cacheprovider tests/test_trainers_decode.py
  for decode in cpu gpu; do
    for workers in 1 2 4; do
      step 60 $PY bench/loader.py "$W/shards" --workers "$workers" --decode "$decode" --batches 100
    done
  done
  for workers in 1 2; do
    step 60 $PY bench/loader.py "$W/shards" --workers "$workers" --decode gpu --raw-only --batches 100
  done
  for decode in cpu gpu; do
    step 90 $PY bench/loader.py "$W/shards" --workers 4 --decode "$decode" --batches 100 --arch mobilenet_v3_large
  done
  step 60 $PY bench/decode_floor.py "$W/shards"
  step 60 $PY bench/decode_floor.py "$W/shards" --device cuda
  step 60 $PY bench/onthefly.py "$W/data" --images 300
  step 150 $PY cli.py train phase5 --shards "$W/shards" --out "$W/runs/phase5" --weights none --epochs 2 --workers 4 --decode gpu
  step 150 $PY cli.py train phase4 --shards "$W/shards" --out "$W/runs/phase4" --weights none --epochs 1 --workers 4 --decode cpu
  step 150 $PY cli.py train phase4 --shards "$W/shards" --out "$W/runs/phase4-gpu" --weights none --epochs 2 --workers 4 --decode gpu
  step 60 $PY cli.py evaluate "$W/runs/phase5" --tta --workers 4
  cp "$W"/runs/phase5/metrics.jsonl "$LOG/phase5-metrics.jsonl" 2>/dev/null
  cp "$W"/runs/phase4/metrics.jsonl "$LOG/phase4-metrics.jsonl" 2>/dev/null
fi

if has steps; then
  for batch in 48 256; do
    for precision in bf16 fp16; do
      for compile in "" --compile; do
        step 300 $PY bench/step.py "$W/shards" --recipe phase5 --batch-size $batch --precision $precision $compile
      done
    done
  done
  [ -f "$W/shards384/dataset.json" ] || step 300 $PY cli.py build-shards --data "$W/data" --out "$W/shards384" --size 384
  for arch in "efficientnet_b3 --image-size 300" "convnext_tiny --image-size 224"; do
    for precision in bf16 fp16; do
      for compile in "" --compile; do
        step 300 $PY bench/step.py "$W/shards384" --recipe phase6 --arch $arch --precision $precision $compile
      done
    done
  done
  step 90 $PY bench/loader.py "$W/shards384" --workers 4 --decode gpu --image-size 300 --batch-size 32 --batches 100
  for batch in 48 256; do
    for compile in --no-compile --compile; do
      out="$W/runs/e2e-phase5-$batch$compile"
      step 300 $PY cli.py train phase5 --shards "$W/shards" --out "$out" --weights none --epochs 2 --workers 4 \
        --decode gpu --batch-size $batch --lr 3e-4 $compile
      cp "$out/metrics.jsonl" "$LOG/e2e-phase5-$batch$compile.jsonl" 2>/dev/null
    done
  done
fi

if has phase6; then
  [ -f "$W/shards384/dataset.json" ] || step 300 $PY cli.py build-shards --data "$W/data" --out "$W/shards384" --size 384
  for arch in efficientnet_b3 convnext_tiny; do
    size=300; [ $arch = convnext_tiny ] && size=224
    step 3600 $PY cli.py train phase6 --shards "$W/shards384" --out "$W/runs/phase6-$arch" --arch $arch --image-size $size \
      --weights none --workers 4 --decode gpu
    step 300 $PY cli.py evaluate "$W/runs/phase6-$arch" --tta --by-lesion --workers 4
    cp "$W/runs/phase6-$arch/metrics.jsonl" "$LOG/phase6-$arch-metrics.jsonl" 2>/dev/null
  done
fi
echo "== done"
