#!/usr/bin/env bash
# One short script for a lent CUDA machine (its image has torch, transformers, peft, lightning; no
# diffusers/jsonargparse/deepspeed). Writes JSON/logs under ${OUT:-bench_out}.
# The machine has no network: carry wheels for what it lacks, e.g.
#   pip download diffusers==0.42.1 --no-deps -d runs/wheels   (then carry runs/wheels)
set -uo pipefail
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
export PYTHONPATH=src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, peft, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/versions.txt"
if compgen -G "runs/wheels/*.whl" > /dev/null; then python3 -m pip install -q --no-deps runs/wheels/*.whl 2>&1 | tail -2; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/versions.txt"
for prec in fp32 bf16; do
  python3 bench/bench_encoder_step.py --device cuda --precision $prec --steps 10 --json "$OUT/encoder_step_$prec.json" 2>&1 | grep -v Warning | tee -a "$OUT/encoder_step.log"
done
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_eval_retrieval.py 2>&1 | tail -15 | tee "$OUT/pytest_gpu.log"
