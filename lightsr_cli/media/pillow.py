"""Pillow, imported only when an image is opened: its plugins registered once, its errors made ours.

Pillow reads headers, metadata, frames and pages without decoding pixels until asked. HEIC/HEIF
come from the optional pillow-heif plugin (``pip install 'lightsr[heif]'``); AVIF from Pillow itself
(11.3 and later); JPEG XL from the optional pillow-jxl-plugin (``pip install 'lightsr[jxl]'``).
Pixel limits are ours (checked from the header before this is called), so Pillow's own
decompression-bomb warning, which would print to stderr, is silenced.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from pathlib import Path
from typing import Any

from ..errors import InputError

_setup_lock = threading.Lock()
_setup_done = False

HEIF_HINT = "HEIC/HEIF needs the optional pillow-heif package: pip install 'lightsr[heif]'"
JXL_HINT = "JPEG XL needs the optional pillow-jxl-plugin package: pip install 'lightsr[jxl]'"


def image_module() -> Any:
    """PIL.Image with the HEIF and JPEG XL plugins registered (where pillow-heif, pillow-jxl-plugin are installed)."""
    global _setup_done  # noqa: PLW0603 - a once-per-process plugin registration, guarded by a lock
    from PIL import Image

    if not _setup_done:
        with _setup_lock:
            if not _setup_done:
                warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
                try:
                    import pillow_heif
                except ImportError:
                    pass
                else:
                    pillow_heif.register_heif_opener()
                with contextlib.suppress(ImportError):
                    import pillow_jxl  # noqa: F401 - importing it registers the JXL plugin with Pillow
                _setup_done = True
    return Image


def has_heif() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def has_jxl() -> bool:
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        return False
    return True


def open_image(data: bytes, path: Path) -> Any | None:
    """The image in ``data`` opened lazily (header read, no pixels); None when Pillow does not know it.

    A HEIC/AVIF file that cannot be opened is an error with what to install; other formats fall
    back to OpenCV's decoder, which the caller tries next.
    """
    image = image_module()
    try:
        return image.open(io.BytesIO(data))
    except image.DecompressionBombError:
        raise InputError(f"cannot decode {path}: its header claims more pixels than the image decoder accepts",
                         hint="shrink the image first") from None
    except (image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        suffix = path.suffix.lower()
        if suffix in (".heic", ".heif") and not has_heif():
            raise InputError(f"cannot read {path.name}: no HEIF decoder installed", hint=HEIF_HINT) from None
        if suffix == ".jxl" and not has_jxl():
            raise InputError(f"cannot read {path.name}: no JPEG XL decoder installed", hint=JXL_HINT) from None
        if suffix in (".heic", ".heif", ".avif", ".gif", ".jxl"):
            raise InputError(f"cannot decode {path}: {error}",
                             hint="check that the file opens in an image viewer") from None
        return None
