"""Benchmark metrics as the SR literature computes them: PSNR and SSIM on the BT.601 Y channel.

Y follows MATLAB's rgb2ycbcr (16..235 range) on 8-bit RGB; ``border`` pixels (the scale, by
convention) are cropped from every side first. Pure numpy + OpenCV, no torch.
"""

from __future__ import annotations

import cv2
import numpy as np


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB (H x W x 3) -> float64 Y in [16, 235] (MATLAB rgb2ycbcr, unrounded)."""
    rgb = rgb.astype(np.float64) / 255.0
    return rgb @ np.array([65.481, 128.553, 24.966]) + 16.0


def _crop(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border > 0 else image


def psnr_y(sr_rgb: np.ndarray, hr_rgb: np.ndarray, border: int) -> float:
    sr, hr = _crop(rgb_to_y(sr_rgb), border), _crop(rgb_to_y(hr_rgb), border)
    mse = np.mean((sr - hr) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def ssim_y(sr_rgb: np.ndarray, hr_rgb: np.ndarray, border: int) -> float:
    """SSIM with an 11x11 Gaussian window (sigma 1.5) over the valid region, as in Wang et al. 2004."""
    sr, hr = _crop(rgb_to_y(sr_rgb), border), _crop(rgb_to_y(hr_rgb), border)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = kernel @ kernel.T

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.filter2D(image, -1, window)[5:-5, 5:-5]

    mu_sr, mu_hr = blur(sr), blur(hr)
    var_sr = blur(sr * sr) - mu_sr ** 2
    var_hr = blur(hr * hr) - mu_hr ** 2
    covariance = blur(sr * hr) - mu_sr * mu_hr
    ssim_map = ((2 * mu_sr * mu_hr + c1) * (2 * covariance + c2)) / \
        ((mu_sr ** 2 + mu_hr ** 2 + c1) * (var_sr + var_hr + c2))
    return float(ssim_map.mean())


def crop_to_match(hr: np.ndarray, sr: np.ndarray) -> np.ndarray:
    """HR images whose size is not a multiple of the scale are cropped to the SR size (top-left)."""
    return hr[: sr.shape[0], : sr.shape[1]]
