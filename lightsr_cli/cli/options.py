"""Choices shared by several commands, as Enums so --help lists them."""

from __future__ import annotations

from enum import Enum

import typer


class Preset(str, Enum):
    fast = "fast"
    balanced = "balanced"
    quality = "quality"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    tf32 = "tf32"
    fp16 = "fp16"
    bf16 = "bf16"


class ClusterFiles(str, Enum):
    auto = "auto"
    shared = "shared"
    transfer = "transfer"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"


class ImageFormat(str, Enum):
    png = "png"
    jpeg = "jpeg"
    webp = "webp"
    bmp = "bmp"
    tiff = "tiff"
    gif = "gif"
    heic = "heic"
    avif = "avif"
    jxl = "jxl"


DEVICE = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, xpu[:N] "
                      "(Intel GPUs) or mps; AMD GPUs are cuda on ROCm builds of torch.",
                      rich_help_panel="Engine")
DEVICES = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, xpu[:N], mps; "
                       "several GPUs share the files or frames: cuda:0,cuda:1 or cuda:all.", rich_help_panel="Engine")
COMPILE = typer.Option(False, "--compile", help="torch.compile the network: slow first batch, then faster; "
                       "pays off for videos and many same-size images.", rich_help_panel="Engine")
PRECISION = typer.Option(Precision.auto, "--precision", help="auto: fp16/bf16 on GPUs where the model is safe; "
                         "on the CPU fp32, or fp16 (Intel AMX-FP16) or bf16 (AVX512-BF16: AMD Zen 4+, Intel Xeon since Cooper Lake) "
                         "where the CPU multiplies it in hardware and the model was measured faster and as faithful "
                         "in it. fp32 is IEEE fp32 everywhere; tf32: fp32 with TensorFloat-32 "
                         "convolutions and matmuls (NVIDIA Ampere and later).", rich_help_panel="Engine")
BACKEND = typer.Option(Backend.auto, "--backend", help="torch, onnxruntime (needs lightsr[onnx]; --device then "
                       "also takes tensorrt, dml, coreml, openvino, rocm, migraphx), or auto: the faster one measured "
                       "for this model and device.", rich_help_panel="Engine")
TILE = typer.Option(None, "--tile", help="Tile side in input pixels; 0 = whole image; default: whole image when it fits in memory.",
                    rich_help_panel="Engine")
BATCH = typer.Option(1, "--batch", min=1, help="Tiles (or video frames) per forward pass.", rich_help_panel="Engine")
MODEL = typer.Option(None, "--model", "-m", help="Model id (see `lightsr models`).", rich_help_panel="Model")
PRESET = typer.Option(None, "--preset", "-p", help="Pick the model by speed/quality preset (default: balanced).",
                      rich_help_panel="Model")
WEIGHTS = typer.Option(None, "--weights", help="A checkpoint file (.pth/.pt/.ckpt/.safetensors) of one of the five architectures.",
                       rich_help_panel="Model")
TTA = typer.Option(False, "--tta", help="8-way self-ensemble (flips and rotations): slower, slightly better.",
                   rich_help_panel="Engine")
JSON = typer.Option(False, "--json", help="Print one machine-readable summary on stdout.")


class PipeMode(str, Enum):
    auto = "auto"
    image = "image"
    yuv4mpegpipe = "yuv4mpegpipe"


PIPE = typer.Option(PipeMode.auto, "--pipe", help="With '-' as input: an image, or a raw y4m video stream "
                    "(ffmpeg -f yuv4mpegpipe -); auto tells them apart by the first bytes.", rich_help_panel="Pipes")
FIT = typer.Option(None, "--fit", metavar="WxH", help="Final size: the largest within the box, aspect kept.",
                   rich_help_panel="Size")
FILL = typer.Option(None, "--fill", metavar="WxH", help="Final size: the smallest that covers the box, aspect kept.",
                    rich_help_panel="Size")
WIDTH = typer.Option(None, "--width", help="Final width in pixels; the height follows the aspect ratio.",
                     rich_help_panel="Size")
HEIGHT = typer.Option(None, "--height", help="Final height in pixels; the width follows the aspect ratio.",
                      rich_help_panel="Size")
CLUSTER = typer.Option(None, "--cluster", help="Run on a Ray cluster (pip install 'lightsr[ray]'): ray (Ray on this "
                       "machine), ray://HOST:10001 (Ray Client), or auto (the cluster RAY_ADDRESS names).",
                       rich_help_panel="Cluster")
GPUS_PER_WORKER = typer.Option(1.0, "--gpus-per-worker", min=0, help="GPUs per model replica on GPU nodes "
                               "(0: CPU workers only).", rich_help_panel="Cluster")
CPUS_PER_WORKER = typer.Option(None, "--cpus-per-worker", min=0.01, help="CPUs per model replica on CPU nodes "
                               "(default: one replica per node, all its CPUs).", rich_help_panel="Cluster")
CLUSTER_FILES = typer.Option(ClusterFiles.auto, "--cluster-files", help="shared: workers read and write the "
                             "paths given here (all nodes see them); transfer: bytes travel through Ray's object "
                             "store; auto: shared when every worker sees the paths.", rich_help_panel="Cluster")
# Shared by `upscale` and `watch`, which take the same output choices.
SCALE = typer.Option(None, "--scale", "-s", help="Upscaling factor: 2, 3 or 4 (default 4, or the model's).",
                     rich_help_panel="Model")
IMAGE_FORMAT = typer.Option(None, "--format", "-f", help="Image output format (default: as the input).")
QUALITY = typer.Option(None, "--quality", min=1, max=100, help="JPEG/WebP quality (default 95).")
