# Sourced by gpu_check.sh and gpu_sweep.sh: strict mode, the repo root as working directory,
# this checkout's src/ first on PYTHONPATH, OUT (what comes back from the device) and DEV.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-out}
DEV=${DEV:-cuda}
