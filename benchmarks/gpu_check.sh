#!/usr/bin/env bash
# GPU check of continual pre-training (issue #14 item 5): run on a machine with CUDA, no network
# needed. Builds random-weight models of published shapes with the real vocabulary sizes and runs
# CPT 2x2LS in bf16 at 32 x 512 for a fixed number of steps with elchat and with the HF Trainer
# reference, printing tokens/s, MFU against the GPU's measured bf16 matmul peak, and peak memory:
#   1. Qwen2.5-0.5B shape (vocab 151,936), loss chunk 4096 vs Hugging Face's full-logits loss;
#   2. Qwen2.5-7B shape (vocab 152,064) with gradient checkpointing, if the GPU has >= 70 GiB
#      (fp32 master weights of 7.6B parameters alone are 30 GiB; Adam moments of the trained 2x2LS
#      subset add ~12 GiB).
# Usage: bash benchmarks/gpu_check.sh [steps]      (default 10 measured steps after 2 warm-up)
# Not part of CI. Paste the printed tables into README's "Scaling" section with the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STEPS=${1:-10}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA GPU: benchmarks/gpu_check.sh needs one"
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, native bf16: {torch.cuda.is_bf16_supported(including_emulation=False)}")
PYEOF

echo "== Qwen2.5-0.5B shape, 2x2LS, bf16, batch 32 x 512 =="
"$PY" benchmarks/cpt_throughput.py --device cuda --random-shape qwen2.5-0.5b --precision bf16 \
    --batch 32 --block 512 --steps "$STEPS" --warmup 2 --loss-chunk 4096,0

GIB=$("$PY" -c "import torch; print(int(torch.cuda.get_device_properties(0).total_memory / 2**30))")
if [ "$GIB" -ge 70 ]; then
  echo "== Qwen2.5-7B shape, 2x2LS, bf16, gradient checkpointing, batch 32 x 512 =="
  "$PY" benchmarks/cpt_throughput.py --device cuda --random-shape qwen2.5-7b --precision bf16 \
      --batch 32 --block 512 --steps "$STEPS" --warmup 2 --gradient-checkpointing \
      --loss-chunk 4096 || echo "7B shape: failed (see above; likely out of memory at batch 32 -- rerun with --batch 8)"
else
  echo "== Qwen2.5-7B shape skipped: ${GIB} GiB < 70 GiB =="
fi
