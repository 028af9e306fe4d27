#!/usr/bin/env bash
# Install the reference implementation, deepmd-kit 3.2.0 from PyPI, built against the installed
# torch (the PyPI wheel's compiled ops target torch 2.11). The built wheel is cached, so only a
# new machine pays the ~4 minute build.
set -euo pipefail
PY=${PYTHON:-python3}
CACHE=${LAMKIT_REF_CACHE:-$HOME/.cache/lamkit-ref}
VERSION=3.2.0
if $PY -c "import deepmd.pt" 2>/dev/null; then
  echo "reference deepmd-kit already importable"; exit 0
fi
mkdir -p "$CACHE"
$PY -m pip install -q scikit-build-core setuptools_scm cmake ninja mpich hatch-fancy-pypi-readme \
  dependency_groups e3nn "torch==$($PY -c 'import torch; print(torch.__version__.split("+")[0])')"
wheel=$(ls "$CACHE"/deepmd_kit-$VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "building deepmd-kit $VERSION against the installed torch (a few minutes)..."
  DP_VARIANT=cpu DP_ENABLE_TENSORFLOW=0 DP_ENABLE_PYTORCH=1 \
    $PY -m pip wheel -q --no-build-isolation --no-deps --no-binary deepmd-kit \
    "deepmd-kit==$VERSION" -w "$CACHE"
  wheel=$(ls "$CACHE"/deepmd_kit-$VERSION-*.whl | head -n1)
fi
$PY -m pip install -q "$wheel" "torch==$($PY -c 'import torch; print(torch.__version__.split("+")[0])')"
$PY -c "import deepmd.pt; print('reference deepmd-kit', deepmd.__version__)"
