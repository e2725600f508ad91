"""Checks of uploaded images: size, format (sniffed, never the client's content type), full
decode with Pillow, dimensions. Only PNG, JPEG and WebP are accepted; the bytes are stored as
uploaded."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from command_api.catalog.errors import InvalidImage, UnsupportedImage
from command_api.problems import PayloadTooLarge

MIN_SIDE = 64
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000  # below Pillow's own decompression-bomb threshold
FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    media_type: str
    extension: str
    width: int
    height: int

    @property
    def size(self) -> int:
        return len(self.data)


def read_limited(stream: BinaryIO, max_bytes: int) -> bytes:
    """The stream's bytes; 413 when there are more than ``max_bytes``."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the upload is larger than {max_bytes} bytes")
    return data


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_image(data: bytes) -> CheckedImage:
    """The decoded facts of ``data``, or a problem: 415 for anything but PNG/JPEG/WebP (other
    image formats and non-images alike), 422 for a corrupt, truncated or oversized image."""
    fmt = sniff(data)
    if fmt is None:
        raise UnsupportedImage()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as probe:
                width, height = probe.size
                if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
                    raise InvalidImage(
                        f"the image is {width}x{height} px; each side must be {MIN_SIDE}..{MAX_SIDE} px"
                    )
                if width * height > MAX_PIXELS:
                    raise InvalidImage(f"the image has more than {MAX_PIXELS} pixels")
                probe.verify()  # structure and checksums (PNG chunk CRCs)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                image.load()  # the full decode: truncated or corrupt data fails here
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(f"the image has more than {MAX_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise InvalidImage(f"the file is not a decodable {fmt} image") from exc
    media_type, extension = FORMATS[fmt]
    return CheckedImage(data, media_type, extension, width, height)
