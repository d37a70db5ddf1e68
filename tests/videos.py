"""Real test videos made with ffmpeg at run time. Each frame can carry its own index as a 4x4 grid of
black/white blocks (16 bits), so tests can check exactly which frames a cut or a sampler returned."""
import subprocess
from pathlib import Path

import numpy as np

GRID = 4


def index_frames(n: int, size=(64, 64), start: int = 0) -> np.ndarray:
    """n frames [n, H, W, 3] uint8; frame i encodes start + i."""
    h, w = size
    frames = np.zeros((n, h, w, 3), np.uint8)
    bh, bw = h // GRID, w // GRID
    for i in range(n):
        value = start + i
        for bit in range(GRID * GRID):
            if value >> bit & 1:
                r, c = divmod(bit, GRID)
                frames[i, r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = 255
    return frames


def read_index(frame: np.ndarray) -> int:
    """The index a frame made by index_frames carries (robust to lossy coding and mild scaling)."""
    h, w = frame.shape[:2]
    bh, bw = h // GRID, w // GRID
    value = 0
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        block = frame[r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        if block.mean() > 127:
            value |= 1 << bit
    return value


def write_video(path, frames: np.ndarray, fps: float = 30, gop: int = 16, codec: str = "libx264",
                extra=()) -> Path:
    """Encode frames [n, H, W, 3] uint8 to `path` with ffmpeg (near-lossless H.264 by default)."""
    n, h, w, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", str(fps), "-i", "-", "-c:v", codec]
    if codec == "libx264":
        cmd += ["-preset", "ultrafast", "-crf", "10", "-g", str(gop), "-pix_fmt", "yuv420p"]
    cmd += [*extra, str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    return path


def make_index_video(path, n: int, fps: float = 30, size=(64, 64), **kwargs) -> Path:
    return write_video(path, index_frames(n, size), fps=fps, **kwargs)
