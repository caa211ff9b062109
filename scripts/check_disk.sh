#!/usr/bin/env bash
# Fails in one line when the disk cannot hold the environments `make test` still has to install.
# Sizes measured on x86_64 with pip: .venv 6.7 GB, .venv-colab 5.8 GB (torch and its nvidia libraries).
set -euo pipefail
need=2
[ -e .venv/.installed ] || need=$((need + 7))
[ -e .venv-colab/.installed ] || need=$((need + 6))
free=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
echo "disk: ${free} GB free; make test needs about ${need} GB (environments still to install, builds and caches)"
if [ "$free" -lt "$need" ]; then
  echo "error: ${free} GB free on $(df -P . | awk 'NR == 2 {print $6}'), about ${need} GB needed: free some disk" \
    "(old clones with their .venv folders are the usual culprits) and run again" >&2
  exit 1
fi
