#!/usr/bin/env bash
# The GPU check of issue 18, as one command for a machine with an NVIDIA GPU and CuPy:
# the GPU test module (tests/test_gpu.py), then the GPU benchmark (benchmarks/gpu.py).
#
#   benchmarks/gpu_check.sh [OUTDIR]        # logs, JUnit XML and gpu.json in OUTDIR
#
# Environment: WORKERS (pytest-xdist workers, 8), TEST_TIMEOUT and BENCH_TIMEOUT (seconds for
# each part, 300 and 240), BENCH_ARGS (the benchmark's options, --quick), PYTHON (python3).
# Each part runs under its own time limit, so a hang in one still leaves the other's figures.
set -u
out=${1:-benchmarks/results}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$py" -c "import sys, numpy, cupy; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)"
opts=()
[ "${WORKERS:-8}" -gt 0 ] && opts+=(-n "${WORKERS:-8}")
"$py" -c "import pytest_timeout" 2>/dev/null && opts+=(--timeout 90)  # one hung test, not all
timeout "${TEST_TIMEOUT:-300}" "$py" -m pytest tests/test_gpu.py -v "${opts[@]}" -p no:cacheprovider \
    -rfE --tb=short --junitxml "$out/gpu-tests.xml" 2>&1 | tee "$out/gpu-tests.log"
tests=${PIPESTATUS[0]}
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout "${BENCH_TIMEOUT:-240}" "$py" -m benchmarks.gpu ${BENCH_ARGS:---quick} \
    --json "$out/gpu.json" 2>&1 | tee "$out/gpu-bench.log"
bench=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
