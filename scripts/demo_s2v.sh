#!/usr/bin/env bash
# Speech-to-video demo (Wan 2.2 S2V): installs what st needs (and espeak-ng), builds st-host with the
# wan_s2v plugin, makes a random S2V model (st-host make-model --plugin wan_s2v), speaks eight
# sentences with espeak-ng and turns each into a clip whose picture is the waveform of its own
# speech (FFmpeg showwaves) with the speech as its audio track, then trains a LoRA with a
# SimpleTuner-style config (model_family wan_s2v, audio.auto_split) and validates it: the
# validation mp4s carry the driving audio.
#
#   bash scripts/demo_s2v.sh                           # everything under ./demo-s2v (ST_DEMO_DIR)
#   ST_DEMO_PRESET=tiny bash scripts/demo_s2v.sh       # the test-size model: seconds
#   ST_HOST=build/bin/st-host bash scripts/demo_s2v.sh # use an existing build (no install, no build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD_DIR=${ST_BUILD_DIR:-build-demo}
DEMO=${ST_DEMO_DIR:-$ROOT/demo-s2v}
PRESET=${ST_DEMO_PRESET:-small}
STEPS=${ST_DEMO_STEPS:-40}
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=true
start=$(date +%s)
if ! command -v espeak-ng > /dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get install -y --no-install-recommends espeak-ng > /dev/null
fi
if [ -n "${ST_HOST:-}" ]; then
  HOST=$(realpath "$ST_HOST")
else
  bash scripts/setup-deps.sh
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DST_BUILD_TESTS=OFF -DST_ASAN_TESTS=OFF > /dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target st-host st_plugin_wan_s2v st_plugin_optim st_plugin_data_local
  HOST="$ROOT/$BUILD_DIR/bin/st-host"
  echo "demo: build took $(( $(date +%s) - start ))s"
fi

mkdir -p "$DEMO/clips"
cd "$DEMO"
if [ ! -f model/model_index.json ]; then
  "$HOST" make-model --plugin wan_s2v --preset "$PRESET" --seed 1 --out model
fi

i=0
for spec in "en|hello there, how are you today" "en-us|the quick brown fox jumps over the lazy dog" \
            "en+f3|speech to video training in one native binary" "en-us+m3|listen to the sound of my voice" \
            "en+f4|one two three four five six seven" "en|good morning, it is a lovely day" \
            "en-us+f2|please train a small model for me" "en+m4|the waveform moves when I speak"; do
  voice=${spec%%|*}; text=${spec#*|}
  name=$(printf "talk%02d" "$i")
  if [ ! -f "clips/$name.mp4" ]; then
    espeak-ng -v "$voice" -s 150 -w "clips/$name.wav" "$text"
    ffmpeg -nostdin -v error -y -i "clips/$name.wav" \
      -filter_complex "[0:a]showwaves=s=96x96:mode=cline:rate=16:colors=white,format=yuv420p[v]" \
      -map "[v]" -map 0:a -c:v libx264 -c:a aac -ar 16000 -shortest "clips/$name.mp4"
    rm -f "clips/$name.wav"
  fi
  echo "a white waveform speaking: $text" > "clips/$name.txt"
  i=$((i + 1))
done

cat > multidatabackend.json <<JSON
[
  {"id": "talking", "type": "local", "dataset_type": "video", "instance_data_dir": "clips",
   "caption_strategy": "textfile", "resolution": 96, "resolution_type": "pixel", "crop": true,
   "crop_aspect": "square", "video": {"num_frames": 17, "min_frames": 17},
   "audio": {"auto_split": true, "sample_rate": 16000, "channels": 1},
   "cache_dir_vae": "cache/vae/{id}"},
  {"id": "talking-text", "type": "local", "dataset_type": "text_embeds", "default": true,
   "cache_dir": "cache/text"}
]
JSON

cat > config.json <<JSON
{
  "model_family": "wan_s2v",
  "model_flavour": "s2v-14b-2.2",
  "pretrained_model_name_or_path": "model",
  "data_backend_config": "multidatabackend.json",
  "output_dir": "output",
  "model_type": "lora",
  "lora_rank": 16,
  "train_batch_size": 1,
  "max_train_steps": $STEPS,
  "learning_rate": 1e-3,
  "optimizer": "adamw",
  "lr_scheduler": "constant_with_warmup",
  "lr_warmup_steps": 5,
  "max_grad_norm": 1.0,
  "mixed_precision": "no",
  "checkpoint_step_interval": 20,
  "checkpoints_total_limit": 1,
  "resume_from_checkpoint": "none",
  "validation_step_interval": $STEPS,
  "validation_prompt": "a white waveform speaking",
  "validation_negative_prompt": "blurry, static",
  "validation_num_video_frames": 17,
  "validation_resolution": "96x96",
  "validation_num_inference_steps": 8,
  "validation_guidance": 4.5,
  "validation_seed": 7,
  "framerate": 16,
  "seed": 42
}
JSON

rm -rf output
"$HOST" config.json

python3 - output/metrics.jsonl <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
losses = [l["loss"] for l in lines if "timesteps" in l]
n = max(1, len(losses) // 5)
first, last = sum(losses[:n]) / n, sum(losses[-n:]) / n
print(f"demo-s2v: mean training loss of the first {n} steps {first:.4f}, of the last {n} steps {last:.4f}")
PY
echo "demo-s2v: LoRA (ComfyUI/original S2V names): $DEMO/output/pytorch_lora_weights.safetensors"
echo "demo-s2v: validation videos (with the driving audio): $(ls "$DEMO"/output/validation/*.mp4 | tr '\n' ' ')"
echo "demo-s2v: finished in $(( $(date +%s) - start ))s"
