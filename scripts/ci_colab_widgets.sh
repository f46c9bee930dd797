#!/usr/bin/env bash
# Run the kernel-side widget tests under Colab's widget stack (ipywidgets 7.7.1) in .venv-colab/.
#
# Colab ships ipywidgets 7.7.1 with the classic notebook front end; our views must work there too
# (sdexplain/widgets.py promises 7.7 and 8). This builds a separate venv once (re-used afterwards,
# re-installed when pyproject.toml changes) and runs the widget and image tests in it.
#   bash scripts/ci_colab_widgets.sh            # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${COLAB_VENV:-.venv-colab}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
IPYWIDGETS_SPEC=${IPYWIDGETS_SPEC:-ipywidgets==7.7.1}
STAMP="$VENV/.sdexplain-colab-installed"

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    echo "*" > "$VENV/.gitignore"  # keep the venv out of git (Python < 3.13 venvs do not do it themselves)
    # torch first and on its own, so pip never pulls a CUDA build (the CPU wheel is what we test with)
    "$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q ${TORCH_PIP_ARGS:-} "$TORCH_SPEC"
    "$VENV/bin/pip" install -q -e . "$IPYWIDGETS_SPEC" "pytest>=8"
    touch "$STAMP"
fi

"$VENV/bin/python" - <<'PY'
import ipywidgets, sys
print(f"colab widget stack: ipywidgets {ipywidgets.__version__} on Python {sys.version.split()[0]}")
assert ipywidgets.__version__.startswith("7."), "expected Colab's ipywidgets 7.x"
PY
# ipywidgets 7 creates its comms through ipykernel.comm.Comm, which a current ipykernel deprecates
# (one warning per widget): silenced so that real warnings stay visible.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    -W "ignore:The \`ipykernel.comm.Comm\` class has been deprecated:DeprecationWarning" \
    tests/test_widgets.py tests/test_widgets_static.py tests/test_run_progress.py tests/test_images.py "$@"
