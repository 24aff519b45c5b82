#!/usr/bin/env bash
#
# Prepare every Catalan dialect dataset of Common Voice 23 and upload the result to the
# Hugging Face Hub as one dataset with a config per dialect. Same positional arguments and
# defaults as the original workflow script; the work is done by `parla run`.
#
#   bash scripts/prepare_all_catalan_datasets.sh [OUTPUT_DIR] [MAX_SAMPLES] [HF_REPO] \
#        [UPLOAD_TO_HF] [NUM_WORKERS]
#
#   OUTPUT_DIR    where to write the corpus           (default /workspace/data/processed)
#   MAX_SAMPLES   clips kept per speaker               (default 50)
#   HF_REPO       dataset repo on the Hub              (default xaviviro/cv_23_ca_distilled)
#   UPLOAD_TO_HF  yes/no: upload when done             (default yes; login checked first)
#   NUM_WORKERS   worker processes                     (default: every core)
#
# DATASETS (environment, space-separated sources) replaces the 7 Hub datasets, e.g. local
# copies or the demo corpus:  DATASETS="$(python -c 'import parla.demo as d; \
#   print(d.demo_corpus_path())')" UPLOAD_TO_HF=no bash scripts/prepare_all_catalan_datasets.sh out
# PARLA (environment) is the command to run parla with (default: parla, else python -m parla).
# Any further arguments after the five are passed on to `parla run`.

set -euo pipefail

OUTPUT_DIR="${1:-/workspace/data/processed}"
MAX_SAMPLES="${2:-50}"
HF_REPO="${3:-xaviviro/cv_23_ca_distilled}"
UPLOAD_TO_HF="${4:-yes}"
NUM_WORKERS="${5:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)}"
shift $(( $# < 5 ? $# : 5 ))

if [[ -n "${DATASETS:-}" ]]; then
    read -r -a SOURCES <<< "$DATASETS"
else
    SOURCES=(
        "xaviviro/cv_23_ca_alacanti"
        "xaviviro/cv_23_ca_balear"
        "xaviviro/cv_23_ca_central"
        "xaviviro/cv_23_ca_nord_occidental"
        "xaviviro/cv_23_ca_septentrional"
        "xaviviro/cv_23_ca_tortosi"
        "xaviviro/cv_23_ca_valencia"
    )
fi

case "${UPLOAD_TO_HF,,}" in
    yes|y|true|1) UPLOAD=yes ;;
    no|n|false|0) UPLOAD=no ;;
    *) echo "UPLOAD_TO_HF must be yes or no, got '$UPLOAD_TO_HF'" >&2; exit 2 ;;
esac

if [[ -n "${PARLA:-}" ]]; then
    read -r -a PARLA_CMD <<< "$PARLA"
elif command -v parla >/dev/null 2>&1; then
    PARLA_CMD=(parla)
else
    PARLA_CMD=(python -m parla)
fi

echo "========================================"
echo "Catalan dialect datasets: prepare"
echo "========================================"
echo ""
echo "Configuration:"
echo "  Output dir:          $OUTPUT_DIR"
echo "  Max samples/speaker: $MAX_SAMPLES"
echo "  HF repo:             $HF_REPO"
echo "  Upload to HF:        $UPLOAD"
echo "  Workers:             $NUM_WORKERS"
echo ""
echo "Datasets:"
for source in "${SOURCES[@]}"; do
    echo "  - $source"
done
echo ""

ARGS=(run
      --datasets "${SOURCES[@]}"
      --output_dir "$OUTPUT_DIR"
      --balance_speakers
      --max_samples_per_speaker "$MAX_SAMPLES"
      --num_workers "$NUM_WORKERS")
if [[ "$UPLOAD" == yes ]]; then
    ARGS+=(--hf_repo "$HF_REPO")
fi

"${PARLA_CMD[@]}" "${ARGS[@]}" "$@"

echo ""
echo "========================================"
echo "Done"
echo "========================================"
echo "  Prepared data: $OUTPUT_DIR"
if [[ "$UPLOAD" == yes ]]; then
    echo "  On the Hub:    ${HF_ENDPOINT:-https://huggingface.co}/datasets/$HF_REPO"
    LOAD_FROM="$HF_REPO"
else
    LOAD_FROM="$OUTPUT_DIR"
fi
echo ""
echo "To use it:"
echo "  from datasets import load_dataset"
echo "  ds = load_dataset('$LOAD_FROM', 'central')  # or any other dialect, or 'all'"
