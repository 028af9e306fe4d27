"""HTTP service and web page of the crystal database (FastAPI + a static page).

``lam db serve --db URL`` calls :func:`serve`; tests and embedding code use
:func:`lamkit.db.service.app.create_app`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["create_app", "serve"]


def create_app(*args: Any, **kwargs: Any):
    """See :func:`lamkit.db.service.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


def serve(
    url: Any = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_keys: Iterable[str] | Mapping[str, str] | None = None,
    **limits: Any,
) -> None:
    """Run the service with uvicorn until interrupted.

    ``url``: database URL (None: the default SQLite file) or a CrystalDB; ``api_keys``:
    ``name:secret`` strings, added to those of ``LAMKIT_DB_API_KEYS`` /
    ``LAMKIT_DB_API_KEYS_FILE``; ``limits``: keyword limits of ``create_app``
    (``max_body_bytes``, ``max_atoms``, ``max_records_per_post``, ``max_limit``).
    """
    import uvicorn

    app = create_app(url, api_keys=api_keys, **limits)
    uvicorn.run(app, host=host, port=int(port), log_level="info")
