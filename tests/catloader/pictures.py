"""Real picture files made with Pillow, and files that only pretend to be pictures."""

from __future__ import annotations

import io
import random

from PIL import Image

CAT_ORANGE = (224, 122, 47)


def picture_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small valid picture in ``fmt`` (a Pillow format name)."""
    image = Image.new("RGB", size, CAT_ORANGE)
    for x in range(0, size[0], 4):
        image.putpixel((x, size[1] // 2), (43, 33, 24))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def noise_png(size: tuple[int, int], seed: int = 7) -> bytes:
    """A PNG of random pixels: it compresses badly, so its file size is about 3 bytes/pixel."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
