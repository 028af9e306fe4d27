# The OPTIMADE client (optimade[http-client]) in its own virtual environment: it pulls httpx2,
# which would change Starlette's TestClient for the rest of the test suite. Exports
# LAMKIT_OPTIMADE_GET (its optimade-get command) for tests/test_db_optimade.py. Source it.
_venv="${HOME}/.cache/lamkit-optimade-client"
if [ ! -x "${_venv}/bin/optimade-get" ]; then
    ${PYTHON:-python3} -m venv "${_venv}"
    "${_venv}/bin/pip" install -q "optimade[http-client]>=1.0"
fi
export LAMKIT_OPTIMADE_GET="${_venv}/bin/optimade-get"
unset _venv
