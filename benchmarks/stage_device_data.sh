#!/bin/sh
# Stage what benchmarks/gpu_acceptance.py needs into the git-ignored .device-data/ of this checkout:
#   weights/<ARCH>/<official file>  (used as LIGHTSR_WEIGHTS_MIRROR; GRL's files too, if you have them)
#   benchmarks/Set5/x<scale>/{LR,HR}
# Usage: benchmarks/stage_device_data.sh ../shared     (a folder with weights/official and data/benchmarks)
# Then, on the GPU machine: python benchmarks/gpu_acceptance.py   (writes benchmarks/results-gpu-acceptance.json)
set -eu
shared=${1:?usage: $0 SHARED_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$here/.device-data/weights" "$here/.device-data/benchmarks"
cp -R "$shared/weights/official/." "$here/.device-data/weights/"
cp -R "$shared/data/benchmarks/Set5" "$here/.device-data/benchmarks/"
du -sh "$here/.device-data"
