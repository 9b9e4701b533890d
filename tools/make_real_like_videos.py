"""A folder of real-like videos the tests never saw (issue 25's acceptance): pans over smooth
random landscapes in h264 mp4 of 4 sizes and frame rates (25, 29.97, 30, 24 fps; keyframes every
5 to 50 frames), one VP9 webm, captions for two (.txt and .json), and one corrupt mp4.

    uv run python tools/make_real_like_videos.py /tmp/realdata/videos
    VIDEOS=/tmp/realdata/videos bash tools/accept_own_videos.sh
"""

import sys
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
specs = [
    ("pan_a.mp4", 97, 75, 25, 120, 12),
    ("pan_b.mp4", 160, 90, 29.97, 90, 30),
    ("clouds.mp4", 131, 131, 30, 150, 50),
    ("sea.mp4", 200, 113, 24, 60, 5),
    ("city.webm", 120, 68, 25, 80, 25),
]
for name, w, h, fps, n, gop in specs:
    big = torch.tensor(rng.random((1, 3, 12, 24)), dtype=torch.float32)
    big = F.interpolate(big, size=(h * 2, w * 3), mode="bicubic", align_corners=False)
    big = (big - big.min()) / (big.max() - big.min())
    fine = F.interpolate(
        torch.tensor(rng.random((1, 3, 48, 96)), dtype=torch.float32),
        size=big.shape[-2:],
        mode="bilinear",
    )
    big = (0.8 * big + 0.2 * fine).clamp(0, 1)
    from fractions import Fraction

    container = av.open(str(out / name), "w")
    codec = "libvpx-vp9" if name.endswith("webm") else "h264"
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = w - w % 2, h - h % 2
    stream.pix_fmt = "yuv420p"
    if codec == "h264":
        stream.options = {"g": str(gop)}
    for t in range(n):
        x = int((big.shape[-1] - w) * t / n)
        y = int((big.shape[-2] - h) * (0.5 + 0.5 * np.sin(t / 20)))
        frame = (big[0, :, y : y + h, x : x + w] * 255).byte().permute(1, 2, 0).numpy()
        frame = np.ascontiguousarray(frame[: stream.height, : stream.width])
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
(out / "pan_a.txt").write_text("a slow pan over hills\n")
(out / "clouds.json").write_text('{"caption": "clouds drifting"}')
(out / "broken.mp4").write_bytes(
    b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 255, 3000, dtype=np.uint8))
)
print(sorted(p.name for p in out.iterdir()))
