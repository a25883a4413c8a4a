#!/usr/bin/env bash
# cmake --install st into a temporary prefix, build examples/third_party_plugin against that
# install only, install the plugin there, and check that the installed st-host accepts and runs it.
# Then build examples/third_party_family (a model family on the installed SDK and family kit), load
# it with --plugin-dir, make a model, train a LoRA on generated clips with validation, and render.
set -euo pipefail
build_dir=$1
src_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log"
test -x "$prefix/bin/st-host"
test -f "$prefix/include/st/plugin.h"
test -f "$prefix/lib/cmake/st_sdk/st_sdkConfig.cmake"
# Configure with nothing of the build tree visible: only the prefix.
cmake -S "$src_dir/examples/third_party_plugin" -B "$work/ex" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$work/configure.log"
cmake --build "$work/ex" > "$work/build.log"
cmake --install "$work/ex" --prefix "$prefix" > /dev/null
test -f "$prefix/lib/st/plugins/st-step_decay.so"
out=$(env -u ST_PLUGIN_PATH "$prefix/bin/st-host" plugins 2>&1)
echo "$out"
echo "$out" | grep -q "st-step_decay.so \[install\]: accepted"
echo "$out" | grep -q "component lr.step_decay@1"
curve=$(env -u ST_PLUGIN_PATH "$prefix/bin/st-host" lr-curve --scheduler step_decay --learning_rate 1 --steps 300 \
  --every 100 --step_decay_every 100 --step_decay_gamma 0.5 2>&1)
echo "$curve"
# step 0 -> 1, step 100 -> 0.5, step 200 -> 0.25
echo "$curve" | grep -qx "0 1"
echo "$curve" | grep -qx "100 0.5"
echo "$curve" | grep -qx "200 0.25"

# ---- a third-party model family -----------------------------------------------------------------
test -f "$prefix/include/st/kit/vae.h"
cmake -S "$src_dir/examples/third_party_family" -B "$work/fam" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$work/fam-configure.log"
cmake --build "$work/fam" > "$work/fam-build.log"
host() { env -u ST_PLUGIN_PATH "$prefix/bin/st-host" --plugin-dir "$work/fam" "$@"; }
plugins=$(host plugins 2>&1)
echo "$plugins" | grep -q "st-minidit.so \[--plugin-dir\]: accepted"
run=$work/run
mkdir -p "$run/clips"
host make-model --plugin minidit --preset tiny --out "$run/model" > "$work/make-model.log" 2>&1
test -f "$run/model/transformer/diffusion_pytorch_model.safetensors"
test -f "$run/model/vae/config.json"
test -f "$run/model/tokenizer/spiece.model"
for i in 0 1 2 3; do
  ffmpeg -nostdin -v error -y -f lavfi -i "testsrc=size=48x48:rate=8:duration=1.5" -vf "hue=h=$((i * 60))" \
    -pix_fmt yuv420p "$run/clips/clip$i.mp4"
  echo "a test pattern number $i" > "$run/clips/clip$i.txt"
done
cat > "$run/multidatabackend.json" <<'JSON'
[{"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": "clips", "caption_strategy": "textfile",
  "resolution": 32, "resolution_type": "pixel", "crop": true, "crop_aspect": "square",
  "video": {"num_frames": 9, "min_frames": 9}, "cache_dir_vae": "cache/vae"},
 {"id": "text", "type": "local", "dataset_type": "text_embeds", "default": true, "cache_dir": "cache/text"}]
JSON
cat > "$run/config.json" <<'JSON'
{"model_family": "minidit", "model_type": "lora", "pretrained_model_name_or_path": "model",
 "data_backend_config": "multidatabackend.json", "output_dir": "out", "train_batch_size": 2,
 "max_train_steps": 8, "learning_rate": 0.01, "lr_scheduler": "constant", "optimizer": "adamw",
 "mixed_precision": "no", "lora_rank": 4, "checkpoint_step_interval": 4, "seed": 3,
 "validation_prompt": "a test pattern", "validation_step_interval": 8, "validation_num_video_frames": 5,
 "validation_resolution": "32x32", "validation_num_inference_steps": 2, "validation_guidance": 1.0}
JSON
(cd "$run" && host config.json > "$work/train.log" 2>&1) || { cat "$work/train.log"; exit 1; }
test -f "$run/out/pytorch_lora_weights.safetensors"
test -f "$run/out/validation/step_8_validation.mp4"
test -f "$run/out/checkpoint-8/checkpoint_manifest.json"
# 8 finite steps, the loss lower at the end than at the start, adapters that moved off zero (an
# independent reader of the LoRA file).
/usr/bin/python3 - "$run/out" <<'PY'
import json, struct, sys
out = sys.argv[1]
loss = [json.loads(l)["loss"] for l in open(out + "/metrics.jsonl") if '"timesteps"' in l]
assert len(loss) == 8 and all(isinstance(x, float) for x in loss), loss
assert sum(loss[-2:]) < sum(loss[:2]), f"loss did not fall: {loss}"
raw = open(out + "/pytorch_lora_weights.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
ups = [k for k in header if k.endswith("lora_B.weight")]
assert len(ups) == 4 * 2 * 2, ups  # to_q/k/v/out x attn1/attn2 x 2 blocks
moved = 0
for k in ups:
    a, b = header[k]["data_offsets"]
    vals = struct.unpack(f"<{(b - a) // 4}f", raw[8 + n + a:8 + n + b])
    moved += any(v != 0.0 for v in vals)
assert moved == len(ups), f"{moved} of {len(ups)} lora_B moved"
print("family run: loss", [round(x, 4) for x in loss], "and", moved, "adapters trained")
PY
(cd "$run" && host generate --plugin minidit --model model --lora out/pytorch_lora_weights.safetensors \
  --prompt "a test pattern" --frames 5 --resolution 32x32 --steps 2 --guidance 1 --out gen.mp4 > "$work/gen.log" 2>&1)
test -f "$run/gen.mp4"
echo "install test: OK"
