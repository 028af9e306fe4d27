"""``lam db import-optimade``: pull structures from any OPTIMADE provider into the database.

Plain HTTP (httpx): ``GET <base>/structures?filter=...&page_limit=...``, then the
``links.next`` of each page until the last one (or ``max_records``).  Each entry becomes a
record of its lattice, ``species_at_sites`` (each species one chemical symbol) and Cartesian
positions; the source is the entry's URL, so a second pull of the same entries stores nothing
new.  Entries lamkit cannot store (disordered or non-periodic structures, vacancies) are
skipped with the reason.  Energies: ``energy_field`` (a total energy in eV, e.g.
``_lamkit_energy``); by default ``_lamkit_energy`` and ``_lamkit_model`` when the provider
sends them.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DBError

#: Entries asked for per page.
PAGE_LIMIT = 100
_ELEMENTS: frozenset[str] | None = None


def structures_url(url: str) -> str:
    """The ``structures`` endpoint of an OPTIMADE base URL (versioned, unversioned, or the
    endpoint itself)."""
    url = url.strip().rstrip("/")
    if not re.match(r"https?://", url):
        raise DBError(f"import-optimade: expected an http(s) URL; found {url[:80]!r}")
    if url.endswith("/structures"):
        return url
    if re.search(r"/v[0-9]+(\.[0-9]+){0,2}$", url):
        return url + "/structures"
    return url + "/v1/structures"


@dataclass
class Pull:
    """What a pull fetched: entries converted, and (id, reason) of those skipped."""

    pages: int = 0
    fetched: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _elements() -> frozenset[str]:
    global _ELEMENTS
    if _ELEMENTS is None:
        from ..records import ELEMENTS

        _ELEMENTS = frozenset(ELEMENTS)
    return _ELEMENTS


def entry_item(
    entry: dict, source: str, energy_field: str | None = None, model: str | None = None
) -> dict:
    """A ``CrystalDB.import_records`` item of one OPTIMADE structure resource; ValueError with
    the reason if lamkit cannot store it."""
    a = entry.get("attributes") or {}
    dims = a.get("dimension_types")
    if a.get("nperiodic_dimensions", 3) != 3 or (dims is not None and list(dims) != [1, 1, 1]):
        raise ValueError("not periodic in three dimensions")
    lattice, cart, at_sites = (
        a.get("lattice_vectors"),
        a.get("cartesian_site_positions"),
        a.get("species_at_sites"),
    )
    if lattice is None or cart is None or at_sites is None:
        raise ValueError("lattice_vectors, cartesian_site_positions or species_at_sites missing")
    try:
        lat = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
        xyz = np.asarray(cart, dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError):
        raise ValueError("lattice_vectors or cartesian_site_positions are not numbers") from None
    symbol_of = {}
    for sp in a.get("species") or []:
        symbols, conc = sp.get("chemical_symbols") or [], sp.get("concentration") or [1.0]
        if len(symbols) != 1 or abs(float(conc[0]) - 1.0) > 1e-6:
            raise ValueError(f"species {sp.get('name')!r} is disordered ({symbols}, {conc})")
        symbol_of[sp.get("name")] = symbols[0]
    species = [symbol_of.get(name, name) for name in at_sites]
    bad = sorted({s for s in species if s not in _elements()})
    if bad:
        raise ValueError(f"species {bad} are not chemical elements (vacancies, unknowns)")
    if abs(np.linalg.det(lat)) < 1e-9:
        raise ValueError("degenerate lattice")
    item: dict[str, Any] = {
        "structure": {
            "lattice": lat.tolist(),
            "species": species,
            "frac_coords": np.linalg.solve(lat.T, xyz.T).T.tolist(),
        },
        "source": source,
    }
    energy = a.get(energy_field) if energy_field else a.get("_lamkit_energy")
    if energy is not None:
        item["energy"] = energy
    if model or a.get("_lamkit_model"):
        item["model"] = model or a.get("_lamkit_model")
    return item


def _error_of(resp) -> str:
    try:
        errors = resp.json().get("errors") or []
        return "; ".join(str(e.get("detail") or e.get("title")) for e in errors)[:300]
    except ValueError:
        return resp.text[:200]


def pull(
    url: str,
    filter_: str | None = None,
    max_records: int | None = None,
    page_limit: int = PAGE_LIMIT,
    energy_field: str | None = None,
    model: str | None = None,
    timeout: float = 60.0,
    report: Pull | None = None,
) -> Iterator[dict]:
    """Items (see :func:`entry_item`) of the provider's structures matching ``filter_``,
    following ``links.next``; skipped entries go to ``report.skipped``."""
    import httpx

    report = report if report is not None else Pull()
    endpoint = structures_url(url)
    params: dict[str, Any] | None = {"page_limit": page_limit}
    if filter_:
        params["filter"] = filter_
    nxt: str | None = endpoint
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        while nxt:
            try:
                resp = client.get(nxt, params=params)
            except httpx.HTTPError as exc:
                raise DBError(
                    f"import-optimade: {nxt[:120]}: {type(exc).__name__}: {exc}"
                ) from None
            if resp.status_code != 200:
                raise DBError(
                    f"import-optimade: {resp.url} answered {resp.status_code}: {_error_of(resp)}"
                )
            try:
                body = resp.json()
                data = body["data"]
            except (ValueError, KeyError, TypeError):
                raise DBError(f"import-optimade: {resp.url} did not answer OPTIMADE JSON") from None
            report.pages += 1
            for entry in data:
                if max_records is not None and report.fetched >= max_records:
                    return
                report.fetched += 1
                ident = str(entry.get("id"))
                source = ((entry.get("links") or {}).get("self")) or f"{endpoint}/{ident}"
                try:
                    yield entry_item(entry, str(source), energy_field, model)
                except ValueError as exc:
                    report.skipped.append((ident, str(exc)))
            link = (body.get("links") or {}).get("next")
            nxt = link.get("href") if isinstance(link, dict) else link
            params = None  # the next link carries every parameter


# ---------------------------------------------------------------------------- the command
COMMAND = "import-optimade"


def add_command(sub) -> None:
    """Add ``import-optimade`` to the ``lam db`` subparsers ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        COMMAND, help="pull structures from an OPTIMADE provider into the database"
    )
    p.add_argument("URL", help="OPTIMADE base URL, e.g. https://host/optimade/v1")
    p.add_argument("--filter", default=None, help='OPTIMADE filter, e.g. elements HAS "Fe"')
    p.add_argument("--max", type=int, default=None, help="at most this many structures")
    p.add_argument("--page-limit", type=int, default=PAGE_LIMIT)
    p.add_argument(
        "--energy-field",
        default=None,
        help="attribute holding the total energy in eV (default: _lamkit_energy if sent)",
    )
    p.add_argument("--model", default=None, help="model of those energies")
    p.add_argument("--submitter", default=None)
    p.add_argument("--dedupe", action="store_true", help="skip structures matching stored ones")
    p.add_argument("--no-hull", action="store_true", help="do not update hulls afterwards")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


def run_command(db, args) -> int:
    """Run ``lam db import-optimade``; 0, or 1 when entries were skipped or rejected."""
    if args.max is not None and args.max < 1:
        raise DBError(f"--max: expected a positive integer; found {args.max}")
    if args.page_limit < 1:
        raise DBError(f"--page-limit: expected a positive integer; found {args.page_limit}")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per page
    got = Pull()
    items = pull(
        args.URL,
        args.filter,
        args.max,
        args.page_limit,
        args.energy_field,
        args.model,
        args.timeout,
        got,
    )
    rep = db.import_records(
        items,
        submitter=args.submitter,
        progress=False,
        dedupe=args.dedupe,
        update_hull=not args.no_hull,
    )
    print(f"{got.fetched} structures fetched in {got.pages} pages from {structures_url(args.URL)}")
    print(rep.summary())
    for ident, reason in got.skipped[:20]:
        print(f"skipped {ident}: {reason}", file=sys.stderr)
    if len(got.skipped) > 20:
        print(f"... and {len(got.skipped) - 20} more skipped", file=sys.stderr)
    return 1 if got.skipped or rep.rejected else 0
