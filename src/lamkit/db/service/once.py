"""A query parameter that takes one value must be given once.

Starlette keeps every repetition and FastAPI reads the last one, so
``?e_min=oops&e_min=-3`` used to pass as ``e_min=-3``.  This dependency refuses a repeated
scalar parameter with a 422 naming it; list parameters (``elements``, ``tags``...) may repeat.
Which parameters are lists is read from the app's own OpenAPI document (built once, cached).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException, Request

_SCALARS = "lamkit_scalar_query_params"


def _is_list(schema: dict[str, Any]) -> bool:
    kinds = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    return any(k.get("type") == "array" for k in kinds)


def _scalars(request: Request) -> list[tuple[re.Pattern[str], str, set[str]]]:
    """(path pattern, method, one-value query parameters) of every documented operation."""
    cached = getattr(request.app.state, _SCALARS, None)
    if cached is None:
        cached = []
        for path, ops in request.app.openapi().get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)))
            for method, op in ops.items():
                names = {
                    p["name"]
                    for p in op.get("parameters", [])
                    if p.get("in") == "query" and not _is_list(p.get("schema", {}))
                }
                cached.append((pattern, method.upper(), names))
        setattr(request.app.state, _SCALARS, cached)
    return cached


def single_values(request: Request) -> None:
    """422 when a one-value query parameter of the requested operation is repeated."""
    path = request.url.path
    for pattern, method, names in _scalars(request):
        if method == request.method and pattern.fullmatch(path):
            for name in sorted(names):
                given = request.query_params.getlist(name)
                if len(given) > 1:
                    raise HTTPException(422, f"{name}: given {len(given)} times; give it once")
            return
