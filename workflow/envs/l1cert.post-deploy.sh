#!/usr/bin/env bash
# Runs inside the new environment from the workflow's directory (the project root).
set -euo pipefail
pip install --no-deps --no-build-isolation -e .
