#!/usr/bin/env bash
# st's side of the GPU benchmark (scripts/device/check.sh): Wan 2.1 T2V 1.3B real shapes (random
# weights from make-model), LoRA rank 16 on the attention projections, bf16, checkpointing on every
# block, 832x480x81 (21x60x104 latents = 32,760 tokens), AdamW. Usage: bench_st.sh ST_HOST OUT.json
set -euo pipefail
host=$1 out=$2
model=${ST_BENCH_MODEL:-/tmp/st-bench-1.3b}
[ -d "$model" ] || "$host" make-model --plugin wan --preset ${ST_BENCH_PRESET:-t2v-1.3b} --out "$model"
# ST_BENCH_FRAMES / _HEIGHT / _WIDTH / _PRESET shrink it for a CPU rehearsal of the script itself.
"$host" bench train --plugin wan --model "$model" --out /tmp/st-bench-832 --frames ${ST_BENCH_FRAMES:-81} \
  --resolution ${ST_BENCH_HEIGHT:-480} --width ${ST_BENCH_WIDTH:-832} --steps ${ST_BENCH_STEPS:-3} --warmup 1 --mixed_precision bf16 --json \
  --gradient_checkpointing true | tee /tmp/st-bench-832.log
grep '^{' /tmp/st-bench-832.log | tail -1 > "$out"
# Model FLOPs and MFU with the reference script's formula (3x the forward; dense bf16 peak of the card).
python3 - "$out" ${ST_BENCH_FRAMES:-81} ${ST_BENCH_HEIGHT:-480} ${ST_BENCH_WIDTH:-832} <<'PY'
import json, subprocess, sys
sys.path.insert(0, "scripts/device")
from bench_diffusers import PEAKS, model_flops
out, frames, h, w = sys.argv[1], *map(int, sys.argv[2:])
r = json.load(open(out))
tokens = ((frames - 1) // 4 + 1) * (h // 16) * (w // 16)
flops = 3 * model_flops(tokens)
try:
    name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError:
    name = "cpu"
peak = next((v for k, v in PEAKS.items() if k in name), 0.0)
s = r["median"]["total"]
r.update(impl="st", device=name or "cpu", tokens=tokens, s_per_step=round(s, 4), model_tflop_per_step=round(flops / 1e12, 2),
         mfu=round(flops / s / (peak * 1e12), 4) if peak else None)
json.dump(r, open(out, "w"))
print(json.dumps(r))
PY
