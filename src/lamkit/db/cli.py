"""``lam db``: init, import, query, hull, export, stats, serve.

The database is ``--db URL`` (a path, ``sqlite:///...`` or ``postgresql+psycopg://...``), else
the environment variable ``LAMKIT_DB_URL``, else the SQLite file ``lamkit.db``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import DBError


def _range(text: str | None, kind=float):
    """ "lo:hi" (either end may be empty) -> (lo, hi)."""
    if text is None:
        return None
    if ":" not in text:
        v = kind(text)
        return (v, v)
    lo, hi = text.split(":", 1)
    return (kind(lo) if lo.strip() else None, kind(hi) if hi.strip() else None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``lam db`` subcommands to ``p``."""
    p.add_argument(
        "--db",
        default=None,
        help="database URL or SQLite path (default: $LAMKIT_DB_URL or lamkit.db)",
    )
    sub = p.add_subparsers(dest="db_command", required=True)

    sub.add_parser("init", help="create the tables (idempotent)")

    i = sub.add_parser("import", help="import structure files and folders")
    i.add_argument("FILES", nargs="+", help="CIF, POSCAR, extxyz, JSON, JSON lines, deepmd dirs")
    i.add_argument("--submitter", default=None)
    i.add_argument("--model", default=None, help="model that computed the energies")
    i.add_argument("--batch-size", type=int, default=1000)
    i.add_argument("--dedupe", action="store_true", help="skip structures matching stored ones")
    i.add_argument("--no-hull", action="store_true", help="do not update hulls afterwards")
    i.add_argument("--no-progress", action="store_true")

    q = sub.add_parser("query", help="list matching records")
    q.add_argument("--elements", help="must contain all, e.g. Li,O")
    q.add_argument("--only-elements", help="elements are a subset of, e.g. Li,Fe,O")
    q.add_argument("--chemsys", help="exactly this system, e.g. Fe-Li-O")
    q.add_argument("--formula")
    q.add_argument("--spacegroup", help="number or symbol")
    q.add_argument("--nsites", help="lo:hi")
    q.add_argument("--energy-per-atom", help="lo:hi in eV/atom")
    q.add_argument("--e-above-hull-max", type=float)
    q.add_argument("--submitter")
    q.add_argument("--model")
    q.add_argument("--tags", help="comma-separated; all must be present")
    q.add_argument("--order-by", default="id")
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--cursor")
    q.add_argument("--format", choices=["table", "json"], default="table")

    h = sub.add_parser("hull", help="convex hull of a chemical system")
    h.add_argument("CHEMSYS")
    h.add_argument("--model", default=None)
    h.add_argument("--format", choices=["table", "json"], default="table")

    e = sub.add_parser("export", help="export matching records")
    e.add_argument("PATH")
    e.add_argument(
        "--format",
        choices=["cif-zip", "extxyz", "parquet"],
        default=None,
        help="default: from the suffix (.zip, .extxyz/.xyz, .parquet)",
    )
    e.add_argument("--only-elements")
    e.add_argument("--elements")
    e.add_argument("--chemsys")
    e.add_argument("--formula")
    e.add_argument("--e-above-hull-max", type=float)

    sub.add_parser("stats", help="counts per submitter, model")

    s = sub.add_parser("serve", help="run the HTTP service and web page")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--api-key",
        action="append",
        default=None,
        help="key allowed to write (repeat; default: $LAMKIT_API_KEYS, comma-separated)",
    )


def _url(args) -> str:
    return args.db or os.environ.get("LAMKIT_DB_URL") or "lamkit.db"


def _filters(a) -> dict:
    f = {}
    for key in ("elements", "only_elements", "chemsys", "formula", "submitter", "model"):
        value = getattr(a, key, None)
        if value is not None:
            f[key] = value
    if getattr(a, "spacegroup", None):
        f["spacegroup"] = a.spacegroup
    if getattr(a, "nsites", None):
        f["nsites"] = _range(a.nsites, int)
    if getattr(a, "energy_per_atom", None):
        f["energy_per_atom"] = _range(a.energy_per_atom)
    if getattr(a, "e_above_hull_max", None) is not None:
        f["e_above_hull_max"] = a.e_above_hull_max
    if getattr(a, "tags", None):
        f["tags"] = [t for t in a.tags.split(",") if t]
    return f


def _fmt(x, digits=4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def run(args) -> int:
    """Run a parsed ``lam db`` command; returns the exit code."""
    from .api import CrystalDB

    cmd = args.db_command
    if cmd == "serve":
        from . import service  # written alongside: lamkit.db.service.serve

        keys = args.api_key
        if keys is None and os.environ.get("LAMKIT_API_KEYS"):
            keys = [k for k in os.environ["LAMKIT_API_KEYS"].split(",") if k]
        service.serve(_url(args), host=args.host, port=args.port, api_keys=keys or [])
        return 0
    with CrystalDB(_url(args)) as db:
        if cmd == "init":
            db.init()
            print(f"initialised {db!r}")
        elif cmd == "import":
            rep = db.import_files(
                args.FILES,
                submitter=args.submitter,
                model=args.model,
                batch_size=args.batch_size,
                progress=not args.no_progress,
                dedupe=args.dedupe,
                update_hull=not args.no_hull,
            )
            print(rep.summary())
        elif cmd == "query":
            page = db.query(
                **_filters(args), order_by=args.order_by, limit=args.limit, cursor=args.cursor
            )
            if args.format == "json":
                print(
                    json.dumps(
                        {
                            "records": [r.to_dict() for r in page.records],
                            "next_cursor": page.next_cursor,
                        }
                    )
                )
            else:
                rows = [
                    [
                        r.public_id,
                        r.formula,
                        r.chemsys,
                        r.spacegroup_symbol,
                        r.nsites,
                        r.energy_per_atom,
                        r.e_above_hull,
                        r.model,
                        r.submitter,
                    ]
                    for r in page.records
                ]
                print(
                    _table(
                        [
                            "id",
                            "formula",
                            "chemsys",
                            "spacegroup",
                            "nsites",
                            "E/atom (eV)",
                            "E_hull (eV/atom)",
                            "model",
                            "submitter",
                        ],
                        rows,
                    )
                )
                if page.next_cursor:
                    print(f"next page: --cursor {page.next_cursor}")
        elif cmd == "hull":
            hull = db.hull(args.CHEMSYS, model=args.model)
            if args.format == "json":
                print(json.dumps(hull.to_dict()))
            else:
                rows = [
                    [
                        e["public_id"],
                        e["formula"],
                        e["energy_per_atom"],
                        e["formation_energy_per_atom"],
                        e["e_above_hull"],
                        "yes" if e["stable"] else "",
                    ]
                    for e in sorted(hull.entries, key=lambda e: (e["e_above_hull"], e["id"]))
                ]
                print(f"hull {hull.chemsys} (model {hull.model})")
                print(_table(["id", "formula", "E/atom", "E_form/atom", "E_hull", "stable"], rows))
        elif cmd == "export":
            fmt = args.format or _format_from_suffix(args.PATH)
            n = db.export(args.PATH, fmt, progress=sys.stderr.isatty(), **_filters(args))
            print(f"{n} records written to {args.PATH} ({fmt})")
        elif cmd == "stats":
            print(json.dumps(db.stats(), indent=1))
        else:  # pragma: no cover - argparse restricts the choices
            raise DBError(f"unknown db command {cmd}")
    return 0


def _format_from_suffix(path: str) -> str:
    p = path.lower()
    if p.endswith(".zip"):
        return "cif-zip"
    if p.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if p.endswith(".parquet"):
        return "parquet"
    raise DBError(f"export: cannot tell the format of '{path}'; give --format")
