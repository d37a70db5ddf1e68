#!/usr/bin/env bash
# The end-to-end demo on generated data, every step a user runs, at tiny sizes:
# Kinetics CSVs -> K710 manifests -> clips fetched by yt-dlp from a local HTTP server and cut ->
# SSV2 + AVA cuts + sampled WebVid/Instagram -> UnlabeledHybrid mixture -> leakage check against the val set ->
# verified shards + stats plot ->
# pretraining -> fine-tuning -> 5x3 evaluation.
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
PORT=${DEMO_PORT:-8765}
rm -rf "$OUT"; mkdir -p "$OUT"
step() { printf '\n=== %s\n' "$*"; }

step "generate raw inputs (videos, Kinetics CSVs, SSV2 JSON, WebVid metadata)"
python demo/make_data.py "$OUT/raw" "$PORT"
python -m http.server "$PORT" --bind 127.0.0.1 --directory "$OUT/raw/www" >"$OUT/http.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT

step "vmae-data build-k710"
vmae-data build-k710 --k400 "$OUT/raw/kinetics/k400" --k600 "$OUT/raw/kinetics/k600" \
    --k700 "$OUT/raw/kinetics/k700" --out "$OUT/k710"

step "vmae-data download (yt-dlp from the local server, frame-accurate cut)"
for split in train val; do
  vmae-data download "$OUT/k710/$split.parquet" --out "$OUT/clips-$split" --workers 2 --no-progress \
      --url-template "http://127.0.0.1:$PORT/{video_id}.mp4"
done

step "vmae-data ssv2 / sample webvid / download"
vmae-data ssv2 --annotations "$OUT/raw/ssv2/train.json" --labels "$OUT/raw/ssv2/labels.json" \
    --videos "$OUT/raw/ssv2/videos" --out "$OUT/ssv2.parquet" --probe
vmae-data sample webvid --metadata "$OUT/raw/webvid.csv" --n 6 --seed 0 --out "$OUT/webvid.parquet"
vmae-data download "$OUT/webvid.parquet" --out "$OUT/clips-webvid" --no-progress
step "vmae-data ava (a scaled window: seconds 2-17 of the demo movie, 75-frame clips at 15 fps)"
vmae-data ava --file-list "$OUT/raw/ava/ava_file_names_trainval_v2.1.txt" --videos "$OUT/raw/ava/movies" \
    --out "$OUT/ava" --window-start 2 --window-end 17 --clip-frames 75 --fps 15
vmae-data sample instagram --metadata "$OUT/raw/instagram/list.csv" --n 3 --seed 0 --out "$OUT/instagram.parquet"
vmae-data download "$OUT/instagram.parquet" --out "$OUT/clips-instagram" --no-progress

step "vmae-data mix unlabeled-hybrid"
vmae-data mix unlabeled-hybrid --k710 "$OUT/clips-train/manifest.parquet" --ssv2 "$OUT/ssv2.parquet" \
    --ava "$OUT/ava/manifest.parquet" --webvid "$OUT/clips-webvid/manifest.parquet" \
    --instagram "$OUT/clips-instagram/manifest.parquet" --out "$OUT/hybrid.parquet"

step "vmae-data fingerprint / dedup (does the mixture hold copies of the val videos?)"
vmae-data fingerprint "$OUT/hybrid.parquet" --out "$OUT/fp/hybrid.parquet" --workers 2 --no-progress
vmae-data fingerprint "$OUT/clips-val/manifest.parquet" --out "$OUT/fp/k710-val.parquet" --set k710-val --dense --no-progress
vmae-data dedup --fingerprints "$OUT/fp/hybrid.parquet" --against "$OUT/fp/k710-val.parquet" --out "$OUT/dups" --plot \
    --no-progress

step "vmae-data shard (without the pairs' pretraining side) / verify / stats"
vmae-data shard unlabeled-hybrid --manifest "$OUT/hybrid.parquet" --out "$OUT/shards/uh" --max-count 10 \
    --exclude "$OUT/dups/pairs.parquet" --workers 2 --no-progress
vmae-data shard k710 --manifest "$OUT/clips-train/manifest.parquet" --out "$OUT/shards/k710-train" \
    --name train --max-count 8 --no-progress
vmae-data shard k710 --manifest "$OUT/clips-val/manifest.parquet" --out "$OUT/shards/k710-val" \
    --name val --max-count 8 --no-progress
for d in uh k710-train k710-val; do vmae-data verify "$OUT/shards/$d" --decode --no-progress; done
vmae-data stats "$OUT/shards/uh" --plot "$OUT/stats.png"

# Tiny model and clips so the whole demo runs on a laptop CPU in a few minutes; the commands are the
# ones a cluster run uses, with the paper's model names and sizes instead.
TINY=(--num-frames 8 --input-size 64 --device cpu --workers 2)

step "vmae-train pretrain (dual masking, from the UnlabeledHybrid shards)"
vmae-train pretrain --shards "$OUT/shards/uh" --model pretrain_videomae_test \
    "${TINY[@]}" --batch-size 4 --num-sample 2 --epochs 8 --warmup-epochs 1 --base-lr 5e-2 \
    --save-every-steps 20 --log-every 5 --output-dir "$OUT/runs/pretrain"
vmae-train visualize --checkpoint "$OUT/runs/pretrain/$(ls "$OUT/runs/pretrain" | grep '^checkpoint-' | tail -1)" \
    --shards "$OUT/shards/uh/uh-000000.tar" --out "$OUT/recon.png" --num 2

step "vmae-train finetune (K710 labels, from the pretrained encoder)"
vmae-train finetune --shards "$OUT/shards/k710-train" \
    --val-shards "$OUT/shards/k710-val/val-000000.tar" --model vit_test --num-classes 710 \
    --init "$OUT/runs/pretrain/$(ls "$OUT/runs/pretrain" | grep '^checkpoint-' | tail -1)" \
    "${TINY[@]}" --batch-size 4 --epochs 10 --warmup-epochs 1 --base-lr 0.5 --layer-decay 1 --randaug none \
    --mixup 0 --cutmix 0 --reprob 0 --log-every 5 --output-dir "$OUT/runs/finetune"

step "vmae-train eval (5 temporal x 3 spatial views, one decode per video)"
vmae-train eval --shards "$OUT/shards/k710-val/val-000000.tar" --checkpoint "$OUT/runs/finetune/checkpoint-best.pth" \
    "${TINY[@]}" --views 5x3 --output-dir "$OUT/runs/eval"

printf '\ndemo finished: everything is in %s\n' "$OUT"
