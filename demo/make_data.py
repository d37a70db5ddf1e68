"""Generate the demo's raw inputs: Kinetics-style annotation CSVs, an SSV2-style annotation set,
a WebVid-style metadata CSV, an AVA-style movie and an Instagram-style list, and the videos they point at
(the Kinetics and WebVid ones are served later over local HTTP).

Every clip's class is visible (a coloured square moving in a class-specific direction), on a dim textured
background of the same colour, so the demo's fine-tune has something real to learn.
Usage: python demo/make_data.py OUT_DIR PORT
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

# Four real K710 class names; their K400/K600 spellings include one renamed class ("dying hair").
CLASSES = [("abseiling", "abseiling"), ("zumba", "zumba"), ("dyeing hair", "dying hair"),
           ("juggling balls", "juggling balls")]
DIRECTIONS = [(1, 0), (-1, 0), (0, 1), (0, -1)]
COLOURS = [(230, 60, 60), (60, 200, 60), (60, 90, 230), (230, 200, 40)]
SIZE, FPS, SECONDS = 64, 15, 12


def clip_frames(cls: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = FPS * SECONDS
    # A dim background in the class colour keeps the class visible in every crop the augmentations take. Its
    # texture of 4-pixel blocks, its own per video, gives the frames the structure real footage has: PDQ's
    # quality is 100 (dedup ignores frames under 50; plain noise scored about 40) and two videos' hashes differ.
    texture = np.kron(rng.integers(0, 60, size=(SIZE // 4, SIZE // 4, 1)), np.ones((4, 4, 1), np.int64))
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    frames[:] = np.array(COLOURS[cls]) // 3 + texture + rng.integers(0, 20, size=(SIZE, SIZE, 3))
    # Each video has its own square size and speed, as two videos of one class differ in the real world
    # (clips identical but for their noise and start would be near-duplicates to `vmae-data dedup`).
    dx, dy = DIRECTIONS[cls]
    side, speed = int(rng.integers(12, 21)), rng.uniform(0.6, 1.8)
    x, y = rng.integers(8, SIZE - 24, size=2)
    for i in range(n):
        step = int(speed * i)
        px, py = (x + dx * step) % (SIZE - side), (y + dy * step) % (SIZE - side)
        frames[i, py:py + side, px:px + side] = COLOURS[cls]
    return frames


def encode(path: Path, frames: np.ndarray, codec=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")):
    n, h, w, _ = frames.shape
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-r", str(FPS), "-i", "-", *codec, str(path)], input=frames.tobytes(), check=True)


def main(out: Path, port: int):
    www = out / "www"
    www.mkdir(parents=True, exist_ok=True)
    rows = {}  # (version, split) -> list of csv lines
    for i in range(32):
        cls = i % len(CLASSES)
        vid = f"demo{i:03d}_yt"
        encode(www / f"{vid}.mp4", clip_frames(cls, seed=i))
        k710_name, old_name = CLASSES[cls]
        # Videos 0-23 are K400 train (old class names); 24-31 K400 val; every 3rd also sits in K600 and every 5th in K700,
        # so the K710 merge has cross-version duplicates and renamed labels to resolve.
        split = "train" if i < 24 else "val"
        rows.setdefault(("k400", split), []).append(f'"{old_name}",{vid},1,11,{split},0')
        if i % 3 == 0:
            rows.setdefault(("k600", split), []).append(f"{k710_name},{vid},1,11,{split}")
        if i % 5 == 0:
            rows.setdefault(("k700", split), []).append(f"{k710_name},{vid},1,11,{split}")
    for (version, split), lines in rows.items():
        d = out / "kinetics" / version
        d.mkdir(parents=True, exist_ok=True)
        header = "label,youtube_id,time_start,time_end,split" + (",is_cc" if version == "k400" else "")
        (d / f"{split}.csv").write_text(header + "\n" + "\n".join(lines) + "\n")

    # WebVid-style metadata: the videos live on the local server. The last one re-uploads the K400 val clip of
    # video 27 (its seconds 1-11), mirrored: the leak `vmae-data dedup` reports.
    webvid = ["videoid,contentUrl,duration,page_dir,name"]
    for i in range(8):
        vid = 1000 + i
        frames = clip_frames(i % 4, seed=100 + i) if i < 7 else clip_frames(27 % 4, seed=27)[FPS:FPS * 11, :, ::-1]
        encode(www / f"webvid_{vid}.mp4", np.ascontiguousarray(frames))
        webvid.append(f"{vid},http://127.0.0.1:{port}/webvid_{vid}.mp4,PT00H00M{SECONDS:02d}S,000001_000050,clip {i}")
    (out / "webvid.csv").write_text("\n".join(webvid) + "\n")

    # SSV2-style: webm videos, the train JSON and the label file.
    ssv2 = out / "ssv2"
    (ssv2 / "videos").mkdir(parents=True, exist_ok=True)
    templates = ["Pushing something from left to right", "Pushing something from right to left"]
    ann = []
    for i in range(6):
        encode(ssv2 / "videos" / f"{500 + i}.webm", clip_frames(i % 2, seed=200 + i)[:48],
               codec=("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"))
        t = templates[i % 2]
        ann.append({"id": str(500 + i), "label": t.replace("something", "a box").lower(), "template":
                    t.replace("something", "[something]"), "placeholders": ["a box"]})
    (ssv2 / "train.json").write_text(json.dumps(ann))
    (ssv2 / "labels.json").write_text(json.dumps({t: str(k) for k, t in enumerate(templates)}))

    # AVA-style: one 20 s "movie" (the demo cuts a scaled window of it) and the trainval file list.
    ava = out / "ava"
    (ava / "movies").mkdir(parents=True, exist_ok=True)
    movie = np.concatenate([clip_frames(k % 4, seed=300 + k)[:FPS * 5] for k in range(4)])
    encode(ava / "movies" / "demoMovie01.mp4", movie)
    (ava / "ava_file_names_trainval_v2.1.txt").write_text("demoMovie01.mp4\n")

    # Instagram-style list of local files (ids and paths relative to the list).
    insta = out / "instagram"
    (insta / "videos").mkdir(parents=True, exist_ok=True)
    lines = ["id,path"]
    for i in range(4):
        encode(insta / "videos" / f"ig{i}.mp4", clip_frames(i, seed=400 + i)[:FPS * 4])
        lines.append(f"ig{i},videos/ig{i}.mp4")
    (insta / "list.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
