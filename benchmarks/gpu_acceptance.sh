#!/bin/sh
# The GPU path, proven in one call (issue #15 part 3): runs benchmarks/gpu_acceptance.py from this checkout.
#   benchmarks/stage_device_data.sh ../shared      # once: weights and Set5 into .device-data/
#   benchmarks/gpu_acceptance.sh                   # on the GPU machine -> benchmarks/results-gpu-acceptance.json
#   benchmarks/gpu_acceptance.sh --dry-run --out /tmp/dry.json    # on a CPU (CI): the same code, tiny sizes
# Exit code 0 when every check passed or was skipped, 1 when one failed, 2 without a GPU (and no --dry-run).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" "$here/benchmarks/gpu_acceptance.py" "$@"
