"""Read endpoints: search, one record, file downloads, hull, statistics, health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from . import hullview, views
from .formats import DOWNLOADS, write_structure
from .models import Error, Health, HullResponse, StructureDetail, StructurePage
from .params import ORDER_CHOICES, SearchParams, chemsys_param, order_param

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "A filter the database rejects (e.g. a bad cursor)."},
    404: {"model": Error, "description": "No such record."},
    422: {"model": Error, "description": "A malformed parameter, named in 'detail'."},
}
HULL_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {
        "model": Error,
        "description": "The system's energies cannot make a hull: an element without a "
        "reference energy, or energies of several models and no 'model' given.",
    },
    404: {
        "model": Error,
        "description": "No energies (of 'model', if given) are stored for the system or its "
        "subsystems.",
    },
}
RecordId = Annotated[int, Path(ge=1, le=2**62, description="Record id.")]


def state(request: Request):
    return request.app.state.lamkit


def get_record(db: Any, record_id: int):
    record = db.get(record_id)
    if record is None:
        raise HTTPException(404, f"no record with id {record_id}")
    return record


@router.get(
    "/structures", response_model=StructurePage, responses=ERRORS, summary="Search structures"
)
def search(
    request: Request,
    params: Annotated[SearchParams, Depends()],
    order_by: str = Query(
        "",
        description="Sort key, '-' prefix for descending: id, energy_per_atom, "
        "e_above_hull, nsites, submitted or formula (default, or empty: id).",
        json_schema_extra={"enum": ORDER_CHOICES},
    ),
    limit: int | None = Query(
        None, ge=1, description="Page size (capped by the server, 500 by default)."
    ),
    cursor: str | None = Query(
        None, max_length=2000, description="'next_cursor' of the previous page."
    ),
    count: bool = Query(False, description="Also count all matches (slower)."),
):
    """Structures matching every given filter, one page at a time (keyset paging: pass the
    returned ``next_cursor`` as ``cursor`` for the next page)."""
    st = state(request)
    filters = params.filters()
    page_size = min(limit or st.limits.default_limit, st.limits.max_limit)
    kwargs: dict[str, Any] = dict(filters, limit=page_size)
    order = order_param(order_by)
    if order:
        kwargs["order_by"] = order
    if cursor:
        kwargs["cursor"] = cursor
    page = st.db.query(**kwargs)
    return {
        "records": [views.summary(r) for r in page.records],
        "next_cursor": page.next_cursor,
        "limit": page_size,
        "count": st.db.count(**filters) if count else None,
    }


@router.get(
    "/structures/{record_id}",
    response_model=StructureDetail,
    responses=ERRORS,
    summary="One record in full",
)
def structure(request: Request, record_id: RecordId):
    """Lattice parameters, sites with Wyckoff letters, symmetry, energies, the energy above
    the hull with its decomposition, and download links."""
    st = state(request)
    record = get_record(st.db, record_id)
    return views.detail(st.db, record, base_url=str(request.url_for("api_root")).rstrip("/"))


@router.get(
    "/structures/{record_id}/file",
    responses={
        **ERRORS,
        200: {
            "description": "The structure file.",
            "content": {mt: {} for mt, _ in DOWNLOADS.values()},
        },
    },
    summary="Download a structure file",
)
def structure_file(
    request: Request,
    record_id: RecordId,
    format: str = Query(
        "cif", description="cif, poscar, extxyz or json.", json_schema_extra={"enum": [*DOWNLOADS]}
    ),
):
    """The structure as a file download (``Content-Disposition: attachment``)."""
    if format not in DOWNLOADS:
        raise HTTPException(
            422, f"format: unknown format {format!r}; expected one of {', '.join(DOWNLOADS)}"
        )
    st = state(request)
    record = get_record(st.db, record_id)
    media_type, suffix = DOWNLOADS[format]
    name = f"{record.formula}_{record.id}{suffix}"
    if format == "poscar":
        name = f"POSCAR_{record.formula}_{record.id}{suffix}"
    return Response(
        write_structure(record, format),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/hull/{chemsys}",
    response_model=HullResponse,
    responses=HULL_ERRORS,
    summary="Convex hull of a chemical system",
)
def hull(
    request: Request,
    chemsys: str = Path(max_length=200, description="e.g. 'Cl-Na'."),
    model: str | None = Query(
        None, max_length=255, description="Model whose energies make the hull."
    ),
):
    """Stable phases, every entry's energy above the hull, and plot-ready points. 404 when
    no energies are stored for the system (of ``model``); 400 when an element lacks a
    reference energy or several models' energies are stored and ``model`` is not given."""
    system = chemsys_param(chemsys)
    if system is None:
        raise HTTPException(422, "chemsys: give elements joined by '-', e.g. 'Cl-Na'")
    st = state(request)
    return hullview.hull_view(st.db, system, model)


@router.get("/stats", summary="Database statistics")
def stats(request: Request) -> dict[str, Any]:
    """Counts of records, chemical systems and elements; records per submitter
    (``by_submitter``) and per model (``by_model``). Records without a model or submitter are
    counted in ``without_model`` / ``without_submitter``, not under a key of their own."""
    return views.stats_view(state(request).db.stats())


@router.get("/health", response_model=Health, summary="Liveness and database check")
def health(request: Request, response: Response):
    st = state(request)
    try:
        n = st.db.count()
    except Exception as exc:  # noqa: BLE001 - report, do not crash the probe
        response.status_code = 503
        return {"status": f"database unavailable: {type(exc).__name__}"}
    from lamkit import __version__

    return {"status": "ok", "records": n, "database": st.dialect, "version": __version__}
