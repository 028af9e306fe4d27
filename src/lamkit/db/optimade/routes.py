"""The OPTIMADE 1.2 endpoints of the service, under ``/optimade``.

``/optimade/versions`` (text/csv) lists the served major version; ``/optimade/v1/`` serves
``info``, ``info/structures``, ``structures`` (``filter``, ``response_fields``, ``sort``,
``page_limit``/``page_offset`` with ``links.next``), ``structures/{id}`` and ``links``.  Any other
version prefix (``/optimade/v2/...``) answers 553.  Every error comes back in OPTIMADE's form
(``{"errors": [{"status", "title", "detail"}], "meta": ...}``), never as a 500 for bad input.
"""

from __future__ import annotations

import re
import time
import weakref
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select

from ... import __version__
from ..engine import read_conn
from ..schema import records
from .fields import API_VERSION, ATTRIBUTES, PREFIX, PROPERTIES, resource_of, sortable
from .filter import _UNSERVED, FilterError, condition
from .formulas import FormulaIndex

router = APIRouter(prefix="/optimade")
MAJOR = "v1"
#: Page size when ``page_limit`` is not given.
DEFAULT_PAGE_LIMIT = 20
SCHEMA_URL = "https://schemas.optimade.org/openapi/v1.2/optimade.json"
_TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    501: "Not Implemented",
    553: "Version Not Supported",
}
#: ``data_returned`` is given when a filter matches at most this many records.
COUNT_CAP = 10_000
#: Seconds a count of all records (``data_available``) is reused.
AVAILABLE_TTL_S = 10.0
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_AVAILABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_IDENT = re.compile(r"[a-z_][a-z_0-9]*")


class OptimadeError(Exception):
    """An error answered in OPTIMADE's form with ``status``."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _state(request: Request):
    return request.app.state.lamkit


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/optimade"


def meta(request: Request, warnings: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``meta`` object every OPTIMADE response carries."""
    path = request.url.path
    prefix = f"/optimade/{MAJOR}"
    rel = path[len(prefix) :] if path.startswith(prefix) else path[len("/optimade") :]
    query = request.url.query
    out: dict[str, Any] = {
        "query": {"representation": rel + (f"?{query}" if query else "")},
        "api_version": API_VERSION,
        "more_data_available": False,
        "schema": SCHEMA_URL,
        "time_stamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "provider": {
            "name": "lamkit",
            "description": "Crystal structures and energies of lamkit's crystal database",
            "prefix": PREFIX,
        },
        "implementation": {"name": "lamkit", "version": __version__},
    }
    out.update(extra)
    if warnings:
        out["warnings"] = [{"type": "warning", "detail": w} for w in warnings]
    return out


def error_response(request: Request, status: int, detail: str) -> JSONResponse:
    body = {
        "errors": [
            {"status": str(status), "title": _TITLES.get(status, "Error"), "detail": detail}
        ],
        "meta": meta(request),
    }
    return JSONResponse(body, status_code=status)


def _formulas(db: Any) -> FormulaIndex:
    index = _INDEXES.get(db.engine)
    if index is None:
        index = _INDEXES[db.engine] = FormulaIndex()
    return index


_META = {"type": "object", "description": "OPTIMADE response meta (query, api_version, ...)"}
_ERRORS_SCHEMA = {
    "type": "object",
    "required": ["errors", "meta"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["status", "title", "detail"],
                "properties": {
                    "status": {"type": "string"},
                    "title": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
        "meta": _META,
    },
}


def _docs(data: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of an endpoint: an OPTIMADE document whose ``data`` is ``data``
    ("object" or "array"), and OPTIMADE errors with the given statuses.  (The ``optimade``
    package's pydantic models are what the tests validate answers against; they are not used
    here because their names would clash with the service's own models.)"""
    body = {
        "type": "object",
        "required": ["data", "meta"],
        "properties": {"data": {"type": data}, "meta": _META, "links": {"type": "object"}},
    }
    out: dict[int | str, dict[str, Any]] = {
        200: {"description": "OPTIMADE answer", "content": {"application/json": {"schema": body}}}
    }
    for code in errors:
        out[code] = {
            "description": _TITLES[code],
            "content": {"application/json": {"schema": _ERRORS_SCHEMA}},
        }
    return out


# ---------------------------------------------------------------------------- parameters
def _int_param(name: str, text: str | None, default: int, lo: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise OptimadeError(400, f"{name}: expected an integer; found {text[:40]!r}") from None
    if value < lo:
        raise OptimadeError(400, f"{name}: expected an integer >= {lo}; found {value}")
    return value


def _response_fields(text: str | None, warnings: list[str]) -> tuple[str, ...] | None:
    if text is None:
        return None
    out = []
    for name in (n.strip() for n in text.split(",")):
        if not name or name in out:
            continue
        if name in PROPERTIES or name in _UNSERVED:
            out.append(name)
        elif name.startswith("_") and not name.startswith(f"_{PREFIX}_"):
            warnings.append(f"response_fields: {name!r} is another provider's; left out")
        else:
            raise OptimadeError(
                400,
                f"response_fields: unknown property {name[:60]!r}; known: " + ", ".join(PROPERTIES),
            )
    return tuple(out)


def _order(text: str | None) -> list:
    order = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        name = item[1:] if desc else item
        if name not in PROPERTIES:
            raise OptimadeError(400, f"sort: unknown property {name[:60]!r}")
        if not sortable(name):
            raise OptimadeError(
                400,
                f"sort: {name!r} is not sortable; sortable: "
                + ", ".join(k for k in PROPERTIES if sortable(k)),
            )
        col = records.c[PROPERTIES[name].column]
        order.append((col.desc() if desc else col.asc()).nulls_last())
    return [*order, records.c.id.asc()]


def _check_format(response_format: str | None) -> None:
    if response_format not in (None, "", "json"):
        raise OptimadeError(
            400, f"response_format: only 'json' is served; found {response_format!r}"
        )


# ---------------------------------------------------------------------------- endpoints
@router.get(
    "/versions",
    summary="OPTIMADE: served major versions (CSV)",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "'version' and one major version per line",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def versions() -> PlainTextResponse:
    return PlainTextResponse(f"version\n{MAJOR[1:]}\n", media_type="text/csv; header=present")


@router.get(f"/{MAJOR}/info", summary="OPTIMADE: base info", responses=_docs("object"))
def info(request: Request) -> JSONResponse:
    attributes = {
        "api_version": API_VERSION,
        "available_api_versions": [{"url": f"{_base(request)}/{MAJOR}", "version": API_VERSION}],
        "formats": ["json"],
        "entry_types_by_format": {"json": ["structures"]},
        "available_endpoints": ["info", "links", "structures"],
        "is_index": False,
    }
    data = {"id": "/", "type": "info", "attributes": attributes}
    return JSONResponse({"data": data, "meta": meta(request)})


@router.get(
    f"/{MAJOR}/info/structures",
    summary="OPTIMADE: structure properties",
    responses=_docs("object"),
)
def info_structures(request: Request) -> JSONResponse:
    props = {}
    for name, p in PROPERTIES.items():
        props[name] = {"description": p.description, "type": p.type, "sortable": sortable(name)}
        if p.unit:
            props[name]["unit"] = p.unit
    data = {
        "id": "structures",
        "type": "info",
        "description": "Ordered, periodic crystal structures with their energies",
        "properties": props,
        "formats": ["json"],
        "output_fields_by_format": {"json": list(PROPERTIES)},
    }
    return JSONResponse({"data": data, "meta": meta(request)})


@router.get(
    f"/{MAJOR}/links",
    summary="OPTIMADE: links to other databases",
    responses=_docs("array"),
)
def links(request: Request) -> JSONResponse:
    return JSONResponse({"data": [], "meta": meta(request, data_returned=0, data_available=0)})


@router.get(
    f"/{MAJOR}/structures",
    summary="OPTIMADE: search structures",
    responses=_docs("array", 400, 403, 501),
)
def structures(
    request: Request,
    filter: str | None = Query(None, description='OPTIMADE filter, e.g. elements HAS "Fe"'),
    response_fields: str | None = Query(None, description="Comma-separated properties"),
    sort: str | None = Query(None, description="Comma-separated properties, '-' descending"),
    page_limit: str | None = Query(None, description="Page size"),
    page_offset: str | None = Query(None, description="Entries to skip"),
    page_cursor: str | None = Query(
        None, description="Opaque cursor of the next page (links.next, default order only)"
    ),
    response_format: str | None = Query(
        None, description="Only 'json'", json_schema_extra={"enum": ["json", ""]}
    ),
) -> JSONResponse:
    try:
        _check_format(response_format)
        return _structures(
            request, filter, response_fields, sort, page_limit, page_offset, page_cursor
        )
    except OptimadeError as exc:
        return error_response(request, exc.status, exc.detail)
    except FilterError as exc:
        return error_response(request, exc.status, str(exc))
    except RecursionError:  # SQLAlchemy compiling a deeply nested condition
        return error_response(request, 400, "filter: nested too deeply")


def _structures(request, filter_, response_fields, sort, page_limit, page_offset, cursor):
    st = _state(request)
    warnings: list[str] = []
    limit = _int_param("page_limit", page_limit, min(DEFAULT_PAGE_LIMIT, st.limits.max_limit), 1)
    if limit > st.limits.max_limit:
        raise OptimadeError(
            403, f"page_limit: {limit} is above the largest page, {st.limits.max_limit}"
        )
    offset = _int_param("page_offset", page_offset, 0, 0)
    if offset > 2**62:
        raise OptimadeError(400, f"page_offset: {offset} is too large")
    fields = _response_fields(response_fields, warnings)
    order = _order(sort)
    after = _after(cursor, sort, offset)
    with read_conn(st.db.engine) as conn:
        cond, fw = condition(conn, filter_, _formulas(st.db))
        warnings += fw
        stmt = select(records).where(cond, *after).order_by(*order)
        rows = conn.execute(stmt.offset(offset).limit(limit + 1)).all()
        returned = _count(conn, cond, None if after else offset, len(rows), limit)
        available = _available(st.db, conn)
    more = len(rows) > limit
    data = [resource_of(r._mapping, fields) for r in rows[:limit]]
    nxt = None
    if more and sort:
        nxt = str(request.url.include_query_params(page_offset=offset + limit))
    elif more:  # the default order pages by id: each page costs the same at any depth
        url = request.url.remove_query_params("page_offset")
        nxt = str(url.include_query_params(page_cursor=f"id{rows[limit - 1].id}"))
    counts = {"data_available": available}
    if returned is not None:
        counts["data_returned"] = returned
    body = {
        "data": data,
        "meta": meta(request, warnings, more_data_available=more, **counts),
        "links": {"next": nxt},
    }
    return JSONResponse(body)


def _after(cursor: str | None, sort: str | None, offset: int) -> list:
    """Conditions of a ``page_cursor`` ('id<n>': records after id n in the default order)."""
    if not cursor:  # absent, or given empty like the other parameters
        return []
    m = re.fullmatch(r"id([0-9]{1,18})", cursor)
    if m is None:
        raise OptimadeError(400, f"page_cursor: not a cursor from a links.next: {cursor[:40]!r}")
    if sort or offset:
        raise OptimadeError(
            400, "page_cursor pages the default order only; not with sort or page_offset"
        )
    return [records.c.id > int(m.group(1))]


def _count(conn, cond, offset: int | None, nrows: int, limit: int) -> int | None:
    """``data_returned``: the exact number of matches when at most :data:`COUNT_CAP` (counted
    with a LIMIT, so a filter matching half a million records costs as much as one matching
    ten thousand), else None (the field is then left out, as OPTIMADE allows).  A last page
    that is not empty tells the count without asking when ``offset`` (the matches before the
    page) is known."""
    if offset is not None and nrows <= limit and (nrows > 0 or offset == 0):
        return offset + nrows if offset + nrows <= COUNT_CAP else None
    capped = select(records.c.id).where(cond).limit(COUNT_CAP + 1).subquery()
    n = conn.execute(select(func.count()).select_from(capped)).scalar_one()
    return n if n <= COUNT_CAP else None


def _available(db: Any, conn) -> int:
    """``data_available``: the number of records, cached per database for
    :data:`AVAILABLE_TTL_S` seconds (a full count costs tens of ms on PostgreSQL at 1M)."""
    now = time.monotonic()
    hit = _AVAILABLE.get(db.engine)
    if hit is not None and now - hit[0] < AVAILABLE_TTL_S:
        return hit[1]
    n = conn.execute(select(func.count()).select_from(records)).scalar_one()
    _AVAILABLE[db.engine] = (now, n)
    return n


@router.get(
    f"/{MAJOR}/structures/{{entry_id}}",
    summary="OPTIMADE: one structure",
    responses=_docs("object", 400, 404),
)
def structure(
    request: Request,
    entry_id: str,
    response_fields: str | None = Query(None, description="Comma-separated properties"),
    response_format: str | None = Query(
        None, description="Only 'json'", json_schema_extra={"enum": ["json", ""]}
    ),
) -> JSONResponse:
    try:
        _check_format(response_format)
        warnings: list[str] = []
        fields = _response_fields(response_fields, warnings)
        m = re.fullmatch(r"lam-([1-9][0-9]{0,17})", entry_id)
        row = None
        st = _state(request)
        if m is not None:
            with read_conn(st.db.engine) as conn:
                row = conn.execute(select(records).where(records.c.id == int(m.group(1)))).first()
        if row is None:
            raise OptimadeError(404, f"no structure with id {entry_id[:60]!r} (ids are 'lam-<n>')")
        with read_conn(st.db.engine) as conn:
            available = _available(st.db, conn)
        body = {
            "data": resource_of(row._mapping, fields),
            "meta": meta(request, warnings, data_returned=1, data_available=available),
            "links": {"next": None},
        }
        return JSONResponse(body)
    except OptimadeError as exc:
        return error_response(request, exc.status, exc.detail)


# The unversioned base URL serves the same endpoints (OPTIMADE allows it; the validator and
# clients given "https://host/optimade" work too).  Registered before the catch-all below.
for _path, _endpoint in (
    ("/info", info),
    ("/info/structures", info_structures),
    ("/links", links),
    ("/structures", structures),
    ("/structures/{entry_id}", structure),
):
    router.add_api_route(_path, _endpoint, methods=["GET"], include_in_schema=False)


@router.get("/{version}/{rest:path}", include_in_schema=False)
def other(request: Request, version: str, rest: str) -> JSONResponse:
    """553 for a version prefix lamkit does not serve; 404 for anything else."""
    if version != MAJOR and re.fullmatch(r"v[0-9]+(\.[0-9]+){0,2}", version):
        return error_response(
            request, 553, f"version {version} is not served; this server serves {MAJOR}"
        )
    return error_response(request, 404, f"no OPTIMADE endpoint {request.url.path!r}")


__all__ = ["router", "ATTRIBUTES"]
