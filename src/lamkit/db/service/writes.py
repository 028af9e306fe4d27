"""Write endpoints (API key required): add records, upload files, delete a record.

Every structure is checked here first (element symbols, shapes, finite numbers, atom count,
records per request) so a bad one is refused with a 422 naming where it is; what passes goes
to the core's ``import_records``, which stores new structures, skips exact duplicates and
reports what it rejected (overlapping atoms...).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Body,
    Depends,
    File,
    Form,
    HTTPException,
    Request,
    Security,
    UploadFile,
)
from fastapi.security import APIKeyHeader

from .auth import HEADER
from .formats import (
    DOWNLOADS,
    FormatError,
    Upload,
    check_geometry,
    check_text,
    format_of,
    parse_file,
    parse_item,
)
from .models import POST_BODY_SCHEMA, Deleted, Error, ImportResult
from .removal import delete_record
from .routes import ERRORS, RecordId, state

router = APIRouter()

WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": Error, "description": "No X-API-Key header."},
    415: {"model": Error, "description": "The body is not JSON (POST /structures)."},
    403: {"model": Error, "description": "The key is not valid (or writes are off)."},
    503: {
        "model": Error,
        "description": "The database is busy (a write waited too long for its lock) or "
        "unreachable; retry after the Retry-After header's seconds.",
    },
    413: {
        "model": Error,
        "description": "The request body, a structure or the number of "
        "records is over the server's limit.",
    },
}


#: The API-key security scheme of the OpenAPI document (the check itself is KeyChecker's).
API_KEY = APIKeyHeader(
    name=HEADER,
    scheme_name="ApiKey",
    description="A key given to the server (--api-key name:secret); its name is the submitter.",
    auto_error=False,
)


def submitter(request: Request, _key: Annotated[str | None, Security(API_KEY)] = None) -> str:
    """The name of the request's API key (401/403 otherwise)."""
    return state(request).keys(request)


Submitter = Annotated[str, Depends(submitter)]


def _check_count(request: Request, n: int, where: str, noun: str) -> None:
    """413 when one request carries more than ``max_records_per_post`` items."""
    most = state(request).limits.max_records_per_post
    if n > most:
        raise HTTPException(413, f"{where}: {n} {noun} in one request; at most {most} are accepted")


def _check_sizes(request: Request, uploads: list[Upload]) -> None:
    limits = state(request).limits
    _check_count(request, len(uploads), "records", "structures")
    for up in uploads:
        if len(up.structure) > limits.max_atoms:
            raise HTTPException(
                413,
                f"{up.where}: {len(up.structure)} atoms; at most "
                f"{limits.max_atoms} per structure are accepted",
            )
        try:
            check_geometry(up.structure, up.where)
        except FormatError as exc:
            raise HTTPException(422, str(exc)) from None


def _store(
    request: Request,
    uploads: list[Upload],
    who: str,
    model: str | None,
    source: str | None,
    tags: list[str],
) -> dict[str, Any]:
    _check_sizes(request, uploads)
    items = [
        {
            "structure": up.structure,
            "energy": up.energy,
            "model": up.model or model,
            "source": up.source or source,
            "tags": sorted(set(up.tags) | set(tags)),
        }
        for up in uploads
    ]
    report = state(request).db.import_records(items, submitter=who)
    rejected = [
        {
            "where": uploads[r.index].where if 0 <= r.index < len(uploads) else str(r.source),
            "reason": str(r.reason),
        }
        for r in report.rejected
    ]
    if rejected and not report.added and not report.duplicates:
        raise HTTPException(422, "; ".join(f"{r['where']}: {r['reason']}" for r in rejected[:20]))
    return {
        "added": [int(i) for i in report.added_ids],
        "duplicates": int(report.duplicates),
        "rejected": rejected,
        "submitter": who,
    }


def _form_value_only(schema: dict[str, Any]) -> None:
    """An optional form field is absent or a value: a form cannot carry JSON null, so the
    OpenAPI document must not offer it (a client would send the text 'null')."""
    kinds = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(kinds) == 1:
        del schema["anyOf"]
        schema.update(kinds[0])


POST_EXAMPLE = {
    "records": [
        {
            "lattice": [[5.64, 0, 0], [0, 5.64, 0], [0, 0, 5.64]],
            "species": ["Na", "Cl"],
            "frac_coords": [[0, 0, 0], [0.5, 0.5, 0.5]],
            "energy": -6.8,
            "model": "my-model",
            "tags": ["example"],
        }
    ],
}


@router.post(
    "/structures",
    response_model=ImportResult,
    status_code=201,
    responses=WRITE_ERRORS,
    summary="Add structures",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": POST_BODY_SCHEMA}}}},
)
def add_structures(
    request: Request,
    who: Submitter,
    body: Annotated[
        Any,
        Body(
            examples=[POST_EXAMPLE],
            description=(
                "One record, a list of records, or {'records': [...]}. A record is "
                "{'structure': <pymatgen Structure dict>} or {'lattice', 'species', "
                "'frac_coords'} (the record JSON of GET /structures/{id}), plus "
                "optional 'energy' (eV, total), 'model', 'source', 'tags'."
            ),
        ),
    ],
):
    """Store structures with their energies; the submitter is the API key's name."""
    if isinstance(body, bytes):  # FastAPI hands over the raw body when it is not JSON
        kind = request.headers.get("content-type") or "none"
        raise HTTPException(
            415, f"body: expected JSON with Content-Type: application/json; got Content-Type {kind}"
        )
    if isinstance(body, dict) and "records" in body:
        items, prefix = body["records"], "records"
    elif isinstance(body, list):
        items, prefix = body, "body"
    else:
        items, prefix = [body], "body"
    if not isinstance(items, list) or not items:
        raise HTTPException(422, f"{prefix}: expected a non-empty list of records")
    _check_count(request, len(items), prefix, "records")
    try:
        uploads = [
            parse_item(it, f"{prefix}[{i}]" if prefix == "records" or len(items) > 1 else prefix)
            for i, it in enumerate(items)
        ]
    except FormatError as exc:
        raise HTTPException(422, str(exc)) from None
    return _store(request, uploads, who, None, None, [])


@router.post(
    "/import",
    response_model=ImportResult,
    status_code=201,
    responses=WRITE_ERRORS,
    summary="Upload a structure file",
)
def import_file(
    request: Request,
    who: Submitter,
    file: Annotated[UploadFile, File(description="CIF, POSCAR, extxyz, JSON.")],
    format: str = Form(
        "",
        description="cif, poscar, extxyz or json (default, or empty: from the file name).",
        json_schema_extra={"enum": ["", *DOWNLOADS]},
    ),
    energy: float | None = Form(
        None,
        description="Total energy (eV) of a single-structure file.",
        json_schema_extra=_form_value_only,
    ),
    model: str | None = Form(None, max_length=255),
    source: str | None = Form(None, max_length=1024),
    tags: str | None = Form(None, description="Comma-separated."),
):
    """Parse the file, check it and store every structure in it.  A plain ``def``: FastAPI
    runs it in its thread pool, so a large file never holds up other requests."""
    name = file.filename or "upload"
    tag_list = [t.strip() for t in (tags or "").split(",") if t.strip()]
    try:
        for field, text in [("model", model), ("source", source), ("file", name)] + [
            ("tags", t) for t in tag_list
        ]:
            check_text(text, field)
        fmt = format_of(name, format)
        raw = file.file.read()  # spooled by Starlette before the endpoint runs
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"file: {name} is not UTF-8 text") from None
        uploads = parse_file(text, fmt, name)
    except FormatError as exc:
        raise HTTPException(422, str(exc)) from None
    if energy is not None:
        if len(uploads) != 1:
            raise HTTPException(
                422,
                f"energy: given once for a file of {len(uploads)} "
                f"structures; put energies in the file instead",
            )
        uploads[0].energy = energy
    return _store(request, uploads, who, model or None, source or name, tag_list)


@router.delete(
    "/structures/{record_id}",
    response_model=Deleted,
    responses=WRITE_ERRORS,
    summary="Delete a record",
)
def delete_structure(request: Request, record_id: RecordId, who: Submitter):
    """Remove one record; formation energies and hulls of its system are recomputed."""
    if not delete_record(state(request).db, record_id):
        raise HTTPException(404, f"no record with id {record_id}")
    return {"deleted": record_id}
