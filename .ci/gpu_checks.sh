#!/usr/bin/env bash
# The GPU checks (issue 14): the one prepared script a session with a lent GPU machine
# runs, from the repository root:
#
#   bash .ci/gpu_checks.sh                  # on the GPU machine (writes logs to ${OUT:-/tmp})
#   bash .ci/gpu_checks.sh --prepare-wheels # HERE, before: wheels the GPU image lacks
#
# It prints nvidia-smi and the torch/CUDA versions, runs the `gpu`-marked tests of
# tests/test_gpu.py, tests/test_condensed_gpu.py and tests/test_condensed_training.py
# (condensed training on CUDA: the torch.sparse kernels), then (when $OUT is set) the quick
# condensed-kernel benchmark on CUDA into $OUT/gpu. Expected 3-5 minutes on an H200 (not
# yet measured there); the tests stop at 300 s and the benchmark at 120 s, so the whole
# script ends within about 7 minutes.
#
# Packages: the repository is used in place (PYTHONPATH), nothing of it is installed.
# The device machine's image has torch, scikit-learn, pytest, hypothesis, ... but not
# stable-baselines3, gymnasium or avalanche-lib, and it reaches no package registry. So:
#   1. here, once per session:  bash .ci/gpu_checks.sh --prepare-wheels
#      (pip download, for CPython 3.12 manylinux x86_64, of the packages that image
#      lacks, pinned to this venv's versions, into build/gpu_wheels, about 30 MB);
#   2. device run:  command "bash .ci/gpu_checks.sh", carry ["build/gpu_wheels"].
# The script installs from that folder (--no-index --no-deps) only when an import fails;
# without the folder it falls back to `pip install -e ".[dev]"` (needs a registry).
#
# Environment: PYTHON (default python3), GPU_WHEELS (default build/gpu_wheels),
# SPARSE_AGENTS_TEST_DEVICE (default cuda; "cpu" checks the test bodies on a machine
# without a GPU and skips the benchmark), PYTEST_TIMEOUT_S (300), BENCH_TIMEOUT_S (120).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-build/gpu_wheels}
DEVICE=${SPARSE_AGENTS_TEST_DEVICE:-cuda}
export PYTHONUNBUFFERED=1
export PYTHONWARNINGS="ignore::UserWarning:qpsolvers"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# Third-party packages the GPU image lacks (their import-time dependency closure).
MISSING_ON_IMAGE="avalanche-lib stable-baselines3 gymnasium farama-notifications dill gdown
gputil pytorchcv qpsolvers wandb beautifulsoup4 soupsieve distro platformdirs pydantic
pydantic-core annotated-types typing-inspection sniffio cwevals googleapis-common-protos
opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
opentelemetry-exporter-http-transport opentelemetry-exporter-otlp-common
opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-proto-http"

if [[ "${1:-}" == "--prepare-wheels" ]]; then
    # pin each package to the version installed in this (the project's) environment
    pins=$("$PY" - $MISSING_ON_IMAGE <<'EOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
EOF
)
    mkdir -p "$WHEELS"
    for pin in $pins; do
        # a binary wheel for the image's CPython (3.12, manylinux x86_64) ...
        "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
            --python-version "${GPU_PY_VERSION:-3.12}" --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 "$pin" 2>/dev/null \
        || "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$pin"  # ... or built (pure sdist)
    done
    ls "$WHEELS"
    du -sh "$WHEELS"
    exit 0
fi

LOG_DIR=${OUT:-/tmp}
mkdir -p "$LOG_DIR"
ENV_LOG="$LOG_DIR/gpu_env.txt"

imports_ok() {
    "$PY" - >/dev/null 2>&1 <<'EOF'
import warnings
warnings.simplefilter("ignore")
import avalanche.training, gymnasium, hypothesis, pytest, sklearn, stable_baselines3  # noqa
import continual, sparse_agents.sb3, sparse_agents.condensed  # noqa
EOF
}

echo "== packages"
if imports_ok; then
    echo "all imports work; nothing installed"
elif compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing the carried wheels from $WHEELS (offline, --no-deps)"
    "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
else
    echo "no $WHEELS: pip install -e .[dev] (needs a package registry)"
    "$PY" -m pip install -q --retries 1 --timeout 15 -e ".[dev]"
fi
if ! imports_ok; then
    echo "imports still fail:" >&2
    "$PY" - >&2 <<'EOF' || true
import importlib, traceback, warnings
warnings.simplefilter("ignore")
for name in ("torch", "sklearn", "pytest", "hypothesis", "gymnasium", "stable_baselines3",
             "wandb", "avalanche.training", "continual", "sparse_agents.sb3",
             "sparse_agents.condensed"):
    try:
        importlib.import_module(name)
    except Exception:
        print(f"--- import {name} failed:")
        traceback.print_exc(limit=-3)
EOF
    exit 3
fi

echo "== device"
{
    date -u
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    "$PY" - <<'EOF'
import sys
import warnings
import torch
warnings.filterwarnings("ignore", message=".*QP solver.*")
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda",
      torch.version.cuda, "| cudnn", torch.backends.cudnn.version(),
      "| available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"sm_{p.major}{p.minor}",
          "| tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
import avalanche, gymnasium, stable_baselines3
print("stable-baselines3", stable_baselines3.__version__, "| gymnasium",
      gymnasium.__version__, "| avalanche", avalanche.__version__)
EOF
} 2>&1 | tee "$ENV_LOG"
if [[ "$DEVICE" == cuda* ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"
then
    echo "CUDA is not available: every gpu test would be skipped; stopping" >&2
    exit 2
fi

echo "== gpu tests"
extra=()  # pytest-timeout (on the GPU image): a hung test fails with its traceback
if "$PY" -c "import pytest_timeout" 2>/dev/null; then extra=(--timeout=150); fi
status=0
timeout "${PYTEST_TIMEOUT_S:-300}" "$PY" -m pytest -q -p no:cacheprovider -m gpu \
    --durations=10 --junitxml "$LOG_DIR/gpu_pytest.xml" ${extra[@]+"${extra[@]}"} \
    tests/test_gpu.py tests/test_condensed_gpu.py tests/test_condensed_training.py \
    2>&1 | tee "$LOG_DIR/gpu_pytest.log" \
    || status=$?
echo "pytest exit status: $status"

bench=skipped
if [[ -n "${OUT:-}" && "$DEVICE" == cuda* ]]; then
    echo "== condensed benchmark (quick, cuda) -> $OUT/gpu"
    bench=0
    timeout "${BENCH_TIMEOUT_S:-120}" "$PY" scripts/bench_condensed.py --device cuda --quick \
        --out "$OUT/gpu" 2>&1 | tee "$LOG_DIR/gpu_bench.log" || bench=$?
    echo "benchmark exit status: $bench"
fi

echo "== summary: pytest $status, benchmark $bench, logs in $LOG_DIR"
[[ "$status" == 0 && "$bench" != [1-9]* ]]
