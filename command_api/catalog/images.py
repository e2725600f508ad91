"""Checks of uploaded images: size, format (sniffed, never the client's content type), full
decode with Pillow, dimensions. Only PNG, JPEG and WebP are accepted. What is stored is not the
uploaded bytes but the image re-encoded from its pixels: EXIF orientation applied, every
metadata block (EXIF with GPS position and camera, XMP, IPTC, comments, text chunks), the ICC
profile (its colours converted to sRGB first) and anything appended after the image are gone."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import ExifTags, Image, ImageCms

from command_api.catalog.errors import InvalidImage, UnsupportedImage
from command_api.problems import PayloadTooLarge

MIN_SIDE = 64
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000  # the default of VTO_UPLOAD_MAX_PIXELS; below Pillow's bomb threshold
FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
# How each format is written back: JPEG and WebP at a high quality (the photo is re-encoded
# once), PNG losslessly.
SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "PNG": {"optimize": False},
    "JPEG": {"quality": 95},
    "WEBP": {"quality": 95, "method": 4},
}
KEPT_INFO = ("transparency",)  # pixel data Pillow keeps in ``info``; nothing else is copied
_SRGB = ImageCms.createProfile("sRGB")


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


def check_image(data: bytes, max_pixels: int = MAX_PIXELS) -> CheckedImage:
    """The decoded facts of ``data``, or a problem: 415 for anything but PNG/JPEG/WebP (other
    image formats and non-images alike), 422 for a corrupt, truncated or oversized image (more
    than ``max_pixels``, refused from the header before anything is decoded).

    Memory: the decoded pixels (at most 4 bytes each: RGBA, CMYK, 32-bit grey) and at most one
    copy of them at a time (orientation, then colour conversion; each step frees the one
    before), plus ``data`` and the encoded result: about 8 bytes a pixel at worst, 6 for RGB."""
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
                if width * height > max_pixels:
                    raise InvalidImage(f"the image has more than {max_pixels} pixels")
                probe.verify()  # structure and checksums (PNG chunk CRCs)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                image.load()  # the full decode: truncated or corrupt data fails here
                clean, (width, height) = without_metadata(image, fmt)  # a quarter turn swaps them
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(f"the image has more than {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise InvalidImage(f"the file is not a decodable {fmt} image") from exc
    media_type, extension = FORMATS[fmt]
    return CheckedImage(clean, media_type, extension, width, height)


def _in_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """The pixels in sRGB when the image came with an ICC profile (which is not stored)."""
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image, source, _SRGB, outputMode="RGBA" if image.mode == "RGBA" else "RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image  # an unusable profile: the pixels as they are
    return converted if converted is not None else image


# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (struct.error, OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):
        return 1  # unreadable EXIF: the image as it is stored (the EXIF is dropped anyway)


def without_metadata(image: Image.Image, fmt: str) -> tuple[bytes, tuple[int, int]]:
    """``image`` upright (its EXIF orientation applied) and re-encoded from its pixels alone,
    and its size. ``image`` is closed here: each intermediate copy of the pixels is freed as
    soon as the next one exists, so at most two are held at a time."""
    kept: dict[str | tuple[int, int], Any] = {key: image.info[key] for key in KEPT_INFO if key in image.info}
    icc = image.info.get("icc_profile")
    method = _UPRIGHT.get(_orientation(image))
    pixels = image
    if method is not None:
        pixels = image.transpose(method)
        image.close()
    converted = _in_srgb(pixels, icc)
    if converted is not pixels:
        pixels.close()
    converted.info = kept
    out = io.BytesIO()
    converted.save(out, format=fmt, **SAVE_OPTIONS[fmt])
    size = converted.size
    converted.close()
    return out.getvalue(), size
