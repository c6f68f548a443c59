"""Uploaded photos: size and content checks, and where they are kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

from twin import settings
from twin.errors import ValidationError

UPLOAD_TYPES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/webp": (b"RIFF",),  # and b"WEBP" at offset 8
}


class UploadRejectedError(ValidationError):
    """An uploaded file is too big or not an allowed type."""


def check_photo(data: bytes, *, max_bytes: int | None = None) -> str:
    """Return the MIME type of an uploaded photo after checking its size and magic bytes.

    Raises
    ------
    UploadRejectedError
        If it is larger than the limit (5 MB) or not a JPEG, PNG or WebP by its content (the
        file name and the browser's claimed type are not trusted).
    """
    limit = int(max_bytes or settings.get("upload_max_bytes"))
    if len(data) > limit:
        raise UploadRejectedError(
            f"the photo has {len(data) / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB. "
            "Send a smaller photo."
        )
    for mime, magics in UPLOAD_TYPES.items():
        if any(data.startswith(m) for m in magics):
            if mime == "image/webp" and data[8:12] != b"WEBP":
                continue
            return mime
    raise UploadRejectedError("only JPEG, PNG or WebP photos are accepted; convert it first")




def store_photo(data: bytes) -> str:
    """Check an uploaded photo and keep it under ``<data_dir>/photos``; return its stored name.

    The name is the content's hash (the same photo twice is kept once) with the extension of
    its checked type, so nothing the uploader chose reaches the file system.

    Raises
    ------
    UploadRejectedError
        As :func:`check_photo`.
    """
    mime = check_photo(data)
    folder = Path(settings.get("data_dir")) / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(data).hexdigest()[:20] + "." + mime.split("/")[1]
    (folder / name).write_bytes(data)
    return f"photos/{name}"
