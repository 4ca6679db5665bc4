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
# Issue 11: ZeRO-2 and ZeRO-3 fits of a mid-size retrieval config (ViT-B-size vision encoder and Q-Former,
# ~200 M parameters, 64 px synthetic images) through Lightning, beside DDP on the same device count:
# median step time and peak memory -> "$OUT"/strategy_*.json (copy the table into bench/RESULTS.md).
# Needs deepspeed + jsonargparse[signatures] (+ diffusers) on the machine: carry them as wheels in runs/wheels.
python3 -m unifashion data synth --out "$OUT/synthetic" --scale tiny --datasets fashiongen --lm-steps 0 --vae-steps 0 2>&1 | tail -2
MID=(--model.encoder.vision_hidden_size 768 --model.encoder.vision_layers 12 --model.encoder.vision_heads 12
     --model.encoder.vision_intermediate_size 3072 --model.encoder.qformer_hidden_size 768
     --model.encoder.qformer_layers 12 --model.encoder.qformer_heads 12 --model.encoder.qformer_intermediate_size 3072
     --model.encoder.embed_dim 256 --data.init_args.batch_size 64 --data.init_args.num_workers 2)
for s in ddp zero2 zero3; do
  timeout 240 python3 bench/bench_strategy_fit.py --strategy $s --accelerator gpu --devices 1 --precision bf16-mixed \
    --data "$OUT/synthetic" --steps 30 --run-dir "$OUT/strategy_runs" --json "$OUT/strategy_$s.json" -- "${MID[@]}" \
    2>&1 | grep -v Warning | tail -3 | tee -a "$OUT/strategy.log"
done
