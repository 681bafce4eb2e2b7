"""lightsr: upscale images and videos with lightweight super-resolution networks.

Python API (torch is imported on first use, not on import)::

    from lightsr_cli import Upscaler
    upscaler = Upscaler("bsrn-x4")            # a model id, or Upscaler(weights="file.pth")
    big = upscaler.upscale(pixels)            # H x W (x 3|4) uint8/uint16 numpy array
"""

__version__ = "0.1.0"

__all__ = ["Upscaler", "__version__"]


def __getattr__(name: str):
    if name == "Upscaler":
        from .api import Upscaler

        return Upscaler
    raise AttributeError(name)
