"""The FastAPI application of the crystal database: JSON API under ``/api/v1`` and the web
page at ``/``.

``create_app(db)`` takes a :class:`lamkit.db.CrystalDB` or a database URL (the app then owns
the connection and closes it on shutdown). Errors always come back as ``{"detail": "..."}``:
422 for a malformed parameter or record (naming it), 400 for a filter the database rejects,
404 for a missing record, 413 for anything over the limits, never a 500 for bad input.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import DBError, NotFoundError, QueryError, RecordError
from ..optimade import routes as optimade_routes
from . import routes, writes
from .apidocs import add_docs
from .auth import KeyChecker, keys_from_env, parse_keys
from .limits import BodySizeLimit, Limits
from .methods import AllowedMethods
from .once import single_values

log = logging.getLogger(__name__)
STATIC = Path(str(files("lamkit.db.service") / "static"))
API = "/api/v1"
#: Seconds a client is asked to wait (``Retry-After``) when the database is busy or unreachable.
RETRY_AFTER_S = 5


@dataclass
class ServiceState:
    """What the endpoints share: the database, the key checker and the limits."""

    db: Any
    keys: KeyChecker
    limits: Limits
    dialect: str | None


def _open(db_or_url: Any):
    if db_or_url is None or isinstance(db_or_url, (str, Path)):
        from .. import CrystalDB

        db = CrystalDB(None if db_or_url is None else str(db_or_url))
        db.init()
        return db, True
    return db_or_url, False


def _dialect(db: Any) -> str | None:
    engine = getattr(db, "engine", None)
    return getattr(getattr(engine, "dialect", None), "name", None)


def _field_of(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header", "form")]
    return ".".join(parts) or "request"


def create_app(
    db: Any = None,
    api_keys: Iterable[str] | Mapping[str, str] | None = None,
    max_body_bytes: int = Limits.max_body_bytes,
    max_atoms: int = Limits.max_atoms,
    max_records_per_post: int = Limits.max_records_per_post,
    max_limit: int = Limits.max_limit,
    keys_from_environment: bool = True,
) -> FastAPI:
    """The service app over ``db`` (a CrystalDB, a database URL, or None for the default
    SQLite file).

    ``api_keys``: ``name:secret`` strings or a ``{name: secret}`` mapping; keys from
    ``LAMKIT_DB_API_KEYS`` / ``LAMKIT_DB_API_KEYS_FILE`` are added unless
    ``keys_from_environment`` is False. Without any key the write endpoints answer 403.
    """
    keys = parse_keys(api_keys)
    if keys_from_environment:
        keys.update(keys_from_env())
    limits = Limits(
        max_body_bytes=max_body_bytes,
        max_atoms=max_atoms,
        max_records_per_post=max_records_per_post,
        max_limit=max_limit,
        default_limit=min(Limits.default_limit, max_limit),
    )
    database, owned = _open(db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if owned:
            database.close()

    app = FastAPI(
        title="lamkit crystal database",
        version="1",
        description="Search, download and submit crystal structures and their energies. "
        "Writes need an API key in the X-API-Key header.",
        lifespan=lifespan,
        docs_url=None,  # served by apidocs from the fastapi-offline package, not a CDN
        redoc_url=None,
    )
    app.state.lamkit = ServiceState(database, KeyChecker(keys), limits, _dialect(database))
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(AllowedMethods)
    _add_error_handlers(app)

    @app.get(API, name="api_root", summary="API index", tags=["meta"])
    def api_root() -> dict[str, Any]:
        return {
            "name": "lamkit crystal database",
            "version": 1,
            "docs": "/docs",
            "openapi": "/openapi.json",
            "writes": app.state.lamkit.keys.enabled,
        }

    once = [Depends(single_values)]  # a repeated one-value query parameter: 422
    app.include_router(routes.router, prefix=API, tags=["read"], dependencies=once)
    app.include_router(writes.router, prefix=API, tags=["write"], dependencies=once)
    app.include_router(optimade_routes.router)  # /optimade/versions, /optimade/v1/...
    add_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":  # loc is ("body", <character offset>)
                loc = list(err.get("loc", ()))
                where = f" at character {loc[-1]}" if len(loc) > 1 else ""
                reason = (err.get("ctx") or {}).get("error", "JSON decode error")
                msgs.append(f"body: not valid JSON ({reason}{where})")
                continue
            msg = str(err.get("msg", "invalid"))
            given = err.get("input")
            shown = "" if given is None or isinstance(given, dict) else f" (got {given!r:.60})"
            msgs.append(f"{_field_of(err.get('loc', ()))}: {msg}{shown}")
        return JSONResponse({"detail": "; ".join(msgs) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # FastAPI's words when the JSON decoder gives up (e.g. nesting too deep)
            detail = "body: could not be parsed as JSON (malformed, or nested too deeply)"
        return JSONResponse(
            {"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(QueryError)
    async def bad_query(_request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RecordError)
    async def bad_record(_request: Request, exc: RecordError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(NotFoundError)
    async def not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(DBError)
    async def db_error(_request: Request, exc: DBError) -> JSONResponse:
        log.error("database error: %s", exc)
        return JSONResponse(
            {"detail": f"database error: {exc}"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(SQLAlchemyTimeoutError)
    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # a write that waited out SQLite's lock, a lost connection, a full pool: try later
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = reason[0] if reason else type(exc).__name__
        log.error("database unavailable: %s", reason)
        if "locked" in reason or "busy" in reason:
            detail = f"database busy: {reason} (another write held it too long); retry later"
        else:
            detail = f"database unavailable: {reason}; retry later"
        return JSONResponse(
            {"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
        )
