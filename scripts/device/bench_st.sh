#!/usr/bin/env bash
# st's side of the GPU benchmark (scripts/device/check.sh): Wan 2.1 T2V 1.3B real shapes (random
# weights from make-model), LoRA rank 16 on the attention projections, bf16, checkpointing on every
# block, 832x480x81 (21x60x104 latents = 32,760 tokens), AdamW. Usage: bench_st.sh ST_HOST OUT.json
set -euo pipefail
host=$1 out=$2
model=${ST_BENCH_MODEL:-/tmp/st-bench-1.3b}
[ -d "$model" ] || "$host" make-model --plugin wan --preset t2v-1.3b --out "$model"
"$host" bench train --plugin wan --model "$model" --out /tmp/st-bench-832 --frames 81 --resolution 480 \
  --width 832 --steps ${ST_BENCH_STEPS:-3} --warmup 1 --mixed_precision bf16 --json \
  --gradient_checkpointing true | tee /tmp/st-bench-832.log
grep '^{' /tmp/st-bench-832.log | tail -1 > "$out"
