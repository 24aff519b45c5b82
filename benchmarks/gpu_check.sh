#!/usr/bin/env bash
# One short check for a lent GPU (under 8 minutes on one H100 with the defaults): exact-mode
# throughput of the real tokenize stage, eager and through torch.compile (its codes compared with
# eager's), bf16 throughput, codes batched vs one clip at a time on the device, bf16 agreement
# with fp32, GPU busy % and memory (NVML, when pynvml is installed).
#
#   bash benchmarks/gpu_check.sh                       # CUDA, random SNAC, 2000 clips
#   bash benchmarks/gpu_check.sh --device cpu          # the same steps on a tiny corpus
#   SNAC_MODEL=DIR CLIPS=4000 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
if [[ "${1:-}" == "--device" ]]; then DEVICE="$2"; fi
if [[ "$DEVICE" == cpu ]]; then
  CLIPS="${CLIPS:-8}"; CHECK_CLIPS="${CHECK_CLIPS:-8}"; LENGTHS=2; THREADS=(--threads 1)
else
  CLIPS="${CLIPS:-2000}"; CHECK_CLIPS="${CHECK_CLIPS:-256}"; LENGTHS=4; THREADS=()
fi
MODEL=(); if [[ -n "${SNAC_MODEL:-}" ]]; then MODEL=(--snac_model "$SNAC_MODEL"); fi
OUT="${OUT:-$(mktemp -d)}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
echo "== machine"
python - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__,
      "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))
PY
echo "== exact mode: the real stage, eager and compiled"
python benchmarks/bench_tokenize.py --device "$DEVICE" --clips "$CLIPS" --rows_per_shard 256 \
  --torch_compile "${MODEL[@]}" "${THREADS[@]}" --json "$OUT/exact.json"
echo "== bf16: the real stage"
python benchmarks/bench_tokenize.py --device "$DEVICE" --clips "$CLIPS" --rows_per_shard 256 \
  --precision bf16 "${MODEL[@]}" "${THREADS[@]}" --json "$OUT/bf16.json"
echo "== codes: batched vs one clip at a time (exact), bf16 vs fp32"
python benchmarks/check_codes.py --device "$DEVICE" --clips "$CHECK_CLIPS" --lengths "$LENGTHS" "${MODEL[@]}"
echo "== done; figures in $OUT"
