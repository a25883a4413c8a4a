#!/usr/bin/env bash
# The README's main job: on a fresh Debian 12 machine, installs what st needs, builds st-host and its
# plugins, makes a small random Wan model (st-host make-model) and a dataset of short captioned clips
# (ffmpeg CLI), trains a LoRA on it with a real config.json + multidatabackend.json, and prints where
# the LoRA, the checkpoints and the metrics are, with the loss at the start and at the end.
#
#   bash scripts/demo.sh            # everything under ./demo-run (override: ST_DEMO_DIR)
#   ST_DEMO_PRESET=tiny bash scripts/demo.sh   # a 25k-parameter model: seconds instead of minutes
#   ST_HOST=build/bin/st-host bash scripts/demo.sh   # use an existing build (no install, no build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD_DIR=${ST_BUILD_DIR:-build-demo}
DEMO=${ST_DEMO_DIR:-$ROOT/demo-run}
PRESET=${ST_DEMO_PRESET:-small}
STEPS=${ST_DEMO_STEPS:-60}
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=true
start=$(date +%s)
if [ -n "${ST_HOST:-}" ]; then
  HOST=$(realpath "$ST_HOST")
else
  bash scripts/setup-deps.sh
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DST_BUILD_TESTS=OFF -DST_ASAN_TESTS=OFF > /dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target st-host st_plugin_wan st_plugin_optim st_plugin_data_local
  HOST="$ROOT/$BUILD_DIR/bin/st-host"
  echo "demo: build took $(( $(date +%s) - start ))s"
fi

mkdir -p "$DEMO/clips"
cd "$DEMO"
if [ ! -f model/model_index.json ]; then
  "$HOST" make-model --plugin wan --preset "$PRESET" --seed 1 --out model
fi

# Twelve 1.5 s clips of FFmpeg's synthetic sources (moving patterns, each with its own caption).
i=0
for spec in "testsrc|a test card with a moving counter" "testsrc2|a colourful test card with moving shapes" \
            "smptebars|vertical colour bars" "mandelbrot|a zoom into the mandelbrot set" \
            "rgbtestsrc|red green and blue stripes" "life|cells of the game of life evolving" \
            "cellauto|a cellular automaton growing downwards" "gradients|soft colour gradients drifting" \
            "testsrc=rate=16:decimals=2|a test card with a fast counter" \
            "mandelbrot=start_scale=0.5|a close zoom into the mandelbrot set" \
            "life=mold=25:ratio=0.5|dense cells of the game of life" "gradients=speed=0.05|fast colour gradients"; do
  src=${spec%%|*}; caption=${spec#*|}
  name=$(printf "clip%02d" "$i")
  case "$src" in *=*) filter="$src:size=160x128";; *) filter="$src=size=160x128";; esac
  if [ ! -f "clips/$name.mp4" ]; then
    ffmpeg -nostdin -v error -y -f lavfi -i "$filter" -t 1.5 -r 16 -pix_fmt yuv420p "clips/$name.mp4"
  fi
  echo "$caption" > "clips/$name.txt"
  i=$((i + 1))
done

cat > multidatabackend.json <<JSON
[
  {"id": "demo-clips", "type": "local", "dataset_type": "video", "instance_data_dir": "clips",
   "caption_strategy": "textfile", "resolution": 128, "resolution_type": "pixel", "crop": true,
   "crop_aspect": "square", "video": {"num_frames": 17, "min_frames": 17},
   "cache_dir_vae": "cache/vae/{id}"},
  {"id": "demo-text", "type": "local", "dataset_type": "text_embeds", "default": true,
   "cache_dir": "cache/text"}
]
JSON

cat > config.json <<JSON
{
  "model_family": "wan",
  "pretrained_model_name_or_path": "model",
  "data_backend_config": "multidatabackend.json",
  "output_dir": "output",
  "model_type": "lora",
  "lora_rank": 16,
  "lora_dropout": 0.0,
  "train_batch_size": 1,
  "gradient_accumulation_steps": 1,
  "max_train_steps": $STEPS,
  "learning_rate": 1e-3,
  "optimizer": "optimi-lion",
  "lr_scheduler": "constant_with_warmup",
  "lr_warmup_steps": 10,
  "max_grad_norm": 1.0,
  "grad_clip_method": "norm",
  "mixed_precision": "no",
  "caption_dropout_probability": 0.1,
  "use_ema": true,
  "checkpoint_step_interval": 30,
  "checkpoints_total_limit": 2,
  "resume_from_checkpoint": "none",
  "validation_step_interval": 30,
  "validation_prompt": "a zoom into the mandelbrot set",
  "validation_negative_prompt": "blurry, static",
  "validation_num_video_frames": 17,
  "validation_resolution": "128x128",
  "validation_num_inference_steps": 8,
  "validation_guidance": 4.0,
  "validation_seed": 7,
  "framerate": 16,
  "eval_steps_interval": 30,
  "report_to": "tensorboard",
  "tracker_project_name": "demo",
  "eval_timesteps": 6,
  "num_eval_images": 3,
  "seed": 42
}
JSON

rm -rf output
"$HOST" config.json

python3 - output/metrics.jsonl <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
losses = [l["loss"] for l in lines if "timesteps" in l]
n = max(1, len(losses) // 10)
first, last = sum(losses[:n]) / n, sum(losses[-n:]) / n
print(f"demo: mean training loss of the first {n} steps {first:.4f}, of the last {n} steps {last:.4f} "
      f"({100 * (first - last) / first:.0f}% lower)")
evals = [(l["step"], l["loss/val"]) for l in lines if "loss/val" in l]
if evals:
    print("demo: evaluation loss (fixed samples, timesteps and noise): " +
          ", ".join(f"step {s} {v:.4f}" for s, v in evals))
PY
echo "demo: LoRA (ComfyUI/diffusers Wan names): $DEMO/output/pytorch_lora_weights.safetensors"
echo "demo: EMA LoRA:                          $DEMO/output/ema/pytorch_lora_weights.safetensors"
echo "demo: checkpoints:                       $(ls -d "$DEMO"/output/checkpoint-* | tr '\n' ' ')"
echo "demo: metrics (one JSON line per step):  $DEMO/output/metrics.jsonl"
echo "demo: TensorBoard curves and frames:      tensorboard --logdir $DEMO/output/logs"
echo "demo: validation videos:                 $(ls "$DEMO"/output/validation/*.mp4 | tr '\n' ' ')"
echo "demo: finished in $(( $(date +%s) - start ))s"
