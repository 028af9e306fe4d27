"""The API documentation pages, served offline from an installed package.

``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) are FastAPI's own pages pointed at the script,
style and icon files that the ``fastapi-offline`` pip package ships (Swagger UI 5, ReDoc 2),
mounted at ``/apidocs``, instead of at a CDN: both work with no network. Their
Content-Security-Policy lets them load nothing from elsewhere (ReDoc's bundle would fetch its
logo from cdn.redoc.ly; Swagger UI would ask validator.swagger.io for a badge, switched off).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)
PREFIX = "/apidocs"
#: files the pages need from the package's folder
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
#: everything from this server; inline scripts and styles (the pages' own), blob workers (ReDoc)
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def assets_dir() -> Path | None:
    """The folder of Swagger UI's and ReDoc's files in ``fastapi-offline``, if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def _missing(page: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><title>{page}</title><p>The {page} page needs the fastapi-offline "
        "package (pip install 'lamkit[db]'). The OpenAPI spec is at "
        '<a href="/openapi.json">/openapi.json</a>.</p>',
        status_code=503,
    )


def add_docs(app: FastAPI) -> None:
    """Add ``/docs`` and ``/redoc`` to ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    assets = assets_dir()
    if assets is not None:
        app.mount(PREFIX, StaticFiles(directory=assets), name="apidocs")
    else:
        log.warning("fastapi-offline is not installed: /docs and /redoc are unavailable")
    spec = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if assets is None:
            return _missing("API docs")
        page = get_swagger_ui_html(
            openapi_url=spec,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        if assets is None:
            return _missing("ReDoc")
        page = get_redoc_html(
            openapi_url=spec,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page
