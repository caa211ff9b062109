#!/usr/bin/env bash
# Fails in one line when the disk cannot hold what .ci/run still has to install, and make test's room.
# Measured on x86_64, from a fresh clone, with pip's cache off (as .ci/run runs): .venv 6.7 GB (a CUDA build of torch:
# 5.3 GB of it, triton 0.9 GB, which .ci/run then uninstalls); .venv-colab 1.0 GB (torch hard-linked from .venv);
# make test's artifacts, built books and temporary folders 1.0 GB at their peak. In MiB below.
set -euo pipefail
need=1100
[ -e .venv/.installed ] || need=$((need + 6850 - 900))
[ -e .venv-colab/.installed ] || need=$((need + 1000))
free=$(df -Pk . | awk 'NR == 2 {print int($4 / 1024)}')
gb() { awk -v mib="$1" 'BEGIN {printf "%.1f", mib / 1024}'; }
echo "disk: $(gb "$free") GB free; .ci/run needs about $(gb "$need") GB (environments still to install, tests' room)"
if [ "$free" -lt "$need" ]; then
  echo "error: $(gb "$free") GB free on $(df -P . | awk 'NR == 2 {print $6}'), about $(gb "$need") GB needed: free" \
    "some disk (old clones with their .venv folders are the usual culprits) and run again" >&2
  exit 1
fi
