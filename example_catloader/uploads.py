"""Checking an uploaded picture and keeping it on disk under a generated name.

A picture is accepted when Pillow, limited to JPEG, PNG, GIF and WebP decoders, reads
the whole file, its extension matches what the content is, and it stays within the
size and pixel limits. The file is stored under a random name in the upload folder;
the name the user gave is only shown, never used as a path.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename


@dataclass(frozen=True)
class PictureFormat:
    media_type: str
    extensions: tuple[str, ...]

    @property
    def extension(self) -> str:
        """The extension stored files of this format get."""
        return self.extensions[0]


#: Pillow format name -> what CatLoader accepts for it.
FORMATS: dict[str, PictureFormat] = {
    "JPEG": PictureFormat("image/jpeg", ("jpg", "jpeg")),
    "PNG": PictureFormat("image/png", ("png",)),
    "GIF": PictureFormat("image/gif", ("gif",)),
    "WEBP": PictureFormat("image/webp", ("webp",)),
}
ACCEPTED_EXTENSIONS = frozenset(ext for f in FORMATS.values() for ext in f.extensions)
ACCEPT_ATTRIBUTE = ",".join(f".{ext}" for f in FORMATS.values() for ext in f.extensions)
STORED_NAME = re.compile(r"[0-9a-f]{32}\.(?:jpg|png|gif|webp)")
MAX_SHOWN_NAME = 100


class UploadRefused(Exception):
    """The upload is not an acceptable picture; ``str(error)`` says why, for the user."""


@dataclass(frozen=True)
class CheckedPicture:
    """A picture that passed every check, with what the database records about it."""

    data: bytes
    format: PictureFormat
    width: int
    height: int
    shown_name: str


def human_size(size: int) -> str:
    """``5242880`` -> ``"5 MB"``; ``20480`` -> ``"20 KB"``."""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def check_picture(upload: FileStorage | None, *, max_bytes: int, max_pixels: int) -> CheckedPicture:
    """Read and check ``upload``.

    :raises UploadRefused: with a message for the user.
    """
    name = (upload.filename or "") if upload is not None else ""
    if upload is None or not name:
        raise UploadRefused("Choose a picture to upload.")
    if any(ch in name for ch in "/\\\x00") or name.strip(". ") == "":
        raise UploadRefused("That file name is not allowed: send a plain name such as cat.jpg.")
    extension = name.rpartition(".")[2].lower() if "." in name else ""
    if extension not in ACCEPTED_EXTENSIONS:
        raise UploadRefused("Only JPEG, PNG, GIF and WebP pictures are accepted.")
    data = upload.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadRefused(f"That picture is too large: the limit is {human_size(max_bytes)}.")
    if not data:
        raise UploadRefused("That file is empty.")
    picture_format, width, height = _decode(data, max_pixels)
    if extension not in picture_format.extensions:
        raise UploadRefused(
            f"The file is named .{extension} but holds a {picture_format.extension.upper()} "
            f"picture: rename it to .{picture_format.extension} and try again."
        )
    shown = secure_filename(name)[-MAX_SHOWN_NAME:] or f"picture.{extension}"
    return CheckedPicture(data, picture_format, width, height, shown)


def _decode(data: bytes, max_pixels: int) -> tuple[PictureFormat, int, int]:
    unreadable = "That file is not a picture CatLoader can read (JPEG, PNG, GIF or WebP)."
    try:
        # Pillow itself refuses pictures over twice Image.MAX_IMAGE_PIXELS (a bomb).
        with Image.open(BytesIO(data), formats=list(FORMATS)) as image:
            picture_format = FORMATS[str(image.format)]
            width, height = image.size
            if width * height > max_pixels:
                raise UploadRefused(
                    f"That picture has too many pixels ({width} x {height}): "
                    f"the limit is {max_pixels:,} pixels."
                )
            image.load()  # decodes every byte: truncated or corrupt files fail here
    except UploadRefused:
        raise
    except Exception:  # noqa: BLE001 - any decoder failure means "not a readable picture"
        raise UploadRefused(unreadable) from None
    return picture_format, width, height


class PictureFolder:
    """The folder holding uploaded pictures, each under a random name."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def save(self, picture: CheckedPicture) -> str:
        """Write ``picture`` under a new random name and return that name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{secrets.token_hex(16)}.{picture.format.extension}"
        with open(self.folder / name, "xb") as handle:
            handle.write(picture.data)
        return name

    def path_of(self, stored_name: str) -> Path:
        """The file of ``stored_name``; refuses anything that is not a generated name."""
        if STORED_NAME.fullmatch(stored_name) is None:
            raise ValueError("not a stored picture name")
        return self.folder / stored_name

    def delete(self, stored_name: str) -> None:
        self.path_of(stored_name).unlink(missing_ok=True)
