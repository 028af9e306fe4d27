"""``lam db``: init, import, query, hull, export, stats, serve, show, delete, update-hulls,
find-duplicates.

The database is ``--db URL`` (a path, ``sqlite:///...`` or ``postgresql+psycopg://...``), else
the environment variable ``LAMKIT_DB_URL``, else the SQLite file ``lamkit.db``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import cli_records
from .errors import DBError
from .optimade import importer as optimade_importer


class _DbParser(argparse.ArgumentParser):
    """The parser of each ``lam db`` command: every option is long (``--x``), so a value that
    starts with one dash is a value, not an unknown option (``--order-by -energy_per_atom``,
    ``--energy-per-atom -5:-3``)."""

    def _parse_optional(self, arg_string):
        if (
            len(arg_string) > 1
            and arg_string[0] == "-"
            and arg_string[1] != "-"
            and arg_string not in self._option_string_actions
        ):
            return None  # a positional-like value
        return super()._parse_optional(arg_string)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _range(text: str | None, kind=float, name: str = "range"):
    """ "lo:hi" (either end may be empty) -> (lo, hi); a lone value v -> (v, v)."""
    if text is None:
        return None
    what = "integers" if kind is int else "numbers"

    def num(part: str):
        try:
            return kind(part) if part.strip() else None
        except ValueError:
            raise DBError(
                f"--{name}: expected lo:hi with {what} (either end may be empty); found {text!r}"
            ) from None

    if ":" not in text:
        v = num(text)
        if v is None:
            raise DBError(f"--{name}: expected lo:hi or a single value; found {text!r}")
        return (v, v)
    lo, hi = text.split(":", 1)
    return (num(lo), num(hi))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``lam db`` subcommands to ``p``."""
    p.add_argument(
        "--db",
        default=None,
        help="database URL or SQLite path (default: $LAMKIT_DB_URL or lamkit.db)",
    )
    sub = p.add_subparsers(dest="db_command", required=True, parser_class=_DbParser)

    sub.add_parser("init", help="create the tables (idempotent)")

    i = sub.add_parser("import", help="import structure files and folders")
    i.add_argument("FILES", nargs="+", help="CIF, POSCAR, extxyz, JSON, JSON lines, deepmd dirs")
    i.add_argument("--submitter", default=None)
    i.add_argument("--model", default=None, help="model that computed the energies")
    i.add_argument("--batch-size", type=int, default=1000)
    i.add_argument("--dedupe", action="store_true", help="skip structures matching stored ones")
    i.add_argument("--workers", type=_positive_int, default=1,
                   help="processes making the rows (validation, space groups); for large imports")
    i.add_argument("--defer-symmetry", action="store_true",
                   help="store space groups as pending (fast bulk import); run 'lam db index'")
    i.add_argument("--no-hull", action="store_true", help="do not update hulls afterwards")
    i.add_argument("--no-progress", action="store_true")
    i.add_argument("--energy-file", help="two columns: structure file name, total energy in eV")
    i.add_argument("--energy-key", help="info key holding each extxyz/ASE frame's energy (eV)")

    x = sub.add_parser("index", help="space groups of records imported with --defer-symmetry")
    x.add_argument("--workers", type=_positive_int, default=1)
    x.add_argument("--no-progress", action="store_true")

    q = sub.add_parser("query", help="list matching records")
    _add_filters(q)
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
        choices=["cif-zip", "extxyz", "parquet", "deepmd", "deepmd-standard"],
        default=None,
        help="default: from the suffix (.zip, .extxyz/.xyz, .parquet); deepmd: a folder of "
        "mixed-type systems for lam train (type-embedding descriptors), deepmd-standard: one "
        "standard system per composition (any descriptor)",
    )
    _add_filters(e)

    sub.add_parser("stats", help="counts per submitter, model")
    cli_records.add_commands(sub, _add_filters)
    optimade_importer.add_command(sub)  # import-optimade

    s = sub.add_parser("serve", help="run the HTTP service and web page")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--api-key",
        action="append",
        default=None,
        help="key allowed to write (repeat; default: $LAMKIT_API_KEYS, comma-separated)",
    )


def _add_filters(q: argparse.ArgumentParser) -> None:
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
    cli_records.add_range_arguments(q)


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
        f["nsites"] = _range(a.nsites, int, "nsites")
    if getattr(a, "energy_per_atom", None):
        f["energy_per_atom"] = _range(a.energy_per_atom, float, "energy-per-atom")
    if getattr(a, "e_above_hull_max", None) is not None:
        f["e_above_hull_max"] = a.e_above_hull_max
    if getattr(a, "tags", None):
        f["tags"] = [t for t in a.tags.split(",") if t]
    f.update(cli_records.range_filters(a, _range))
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
    """Run a parsed ``lam db`` command; returns the exit code: 0, 1 when an import could not
    read a whole file, 2 on an error (one line, no traceback; ``lam`` prints it), 141 when the
    reader of the output went away (``lam db query ... | head -1``), as for SIGPIPE."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _run(args)
    except BrokenPipeError:
        # the rest of the output goes nowhere, and so does Python's flush at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except SQLAlchemyError as exc:
        raise DBError(_database_error(_url(args), exc)) from None


def _database_error(url: str, exc: Exception) -> str:
    from sqlalchemy.engine import make_url

    from .engine import normalise_url

    try:
        shown = make_url(normalise_url(url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - the URL itself may be what is wrong
        shown = url
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return (
        f"database {shown}: {reason} (expected a lamkit database: an SQLite file that can "
        "be opened, or a reachable PostgreSQL URL)"
    )


def _run(args) -> int:
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
            return _import(db, args)
        elif cmd == "index":
            print(db.index_symmetry(workers=args.workers, progress=not args.no_progress).summary())
        elif cmd == "query":
            page = db.query(
                **_filters(args), order_by=args.order_by, limit=args.limit, cursor=args.cursor
            )
            _print_page(page, args.format)
        elif cmd == "hull":
            _print_hull(db.hull(args.CHEMSYS, model=args.model), args.format)
        elif cmd == "export":
            fmt = args.format or _format_from_suffix(args.PATH)
            n = db.export(args.PATH, fmt, progress=sys.stderr.isatty(), **_filters(args))
            print(f"{n} records written to {args.PATH} ({fmt})")
        elif cmd == "stats":
            print(json.dumps(db.stats(), indent=1))
        elif cmd == optimade_importer.COMMAND:
            return optimade_importer.run_command(db, args)
        elif cmd in cli_records.COMMANDS:
            return cli_records.run_command(db, args, _filters(args))
        else:  # pragma: no cover - argparse restricts the choices
            raise DBError(f"unknown db command {cmd}")
    return 0


def _import(db, args) -> int:
    """``lam db import``: missing paths refuse the whole import; 1 if a file was unreadable."""
    missing = [f for f in args.FILES if not os.path.exists(f)]
    if missing:
        raise DBError(
            f"import: no such file or folder: {', '.join(map(repr, missing[:5]))}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + "; nothing was imported"
        )
    if args.dedupe and args.defer_symmetry:
        raise DBError("import: --dedupe compares space groups; it cannot be used with "
                      "--defer-symmetry")
    rep = db.import_files(
        args.FILES,
        submitter=args.submitter,
        model=args.model,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        dedupe=args.dedupe,
        update_hull=not args.no_hull,
        energy_key=args.energy_key,
        energies=args.energy_file,
        workers=args.workers,
        defer_symmetry=args.defer_symmetry,
    )
    print(rep.summary())
    if args.defer_symmetry and rep.added:
        print("space groups pending: run 'lam db index' to compute them", file=sys.stderr)
    if rep.unused_energies:
        names = ", ".join(rep.unused_energies[:10])
        print(f"lam db import: energy file names not imported: {names}", file=sys.stderr)
    unread = sorted({r.source for r in rep.rejected if r.index < 0})
    if unread:
        print(f"lam db import: could not read {', '.join(unread)}", file=sys.stderr)
        return 1
    return 0


_QUERY_COLUMNS = [
    ("id", "public_id"),
    ("formula", "formula"),
    ("chemsys", "chemsys"),
    ("spacegroup", "spacegroup_symbol"),
    ("nsites", "nsites"),
    ("E/atom (eV)", "energy_per_atom"),
    ("E_hull (eV/atom)", "e_above_hull"),
    ("model", "model"),
    ("submitter", "submitter"),
]


def _print_page(page, fmt: str) -> None:
    if fmt == "json":
        records = [r.to_dict() for r in page.records]
        print(json.dumps({"records": records, "next_cursor": page.next_cursor}))
        return
    rows = [[getattr(r, attr) for _, attr in _QUERY_COLUMNS] for r in page.records]
    print(_table([title for title, _ in _QUERY_COLUMNS], rows))
    if page.next_cursor:
        print(f"next page: --cursor {page.next_cursor}")


def _print_hull(hull, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(hull.to_dict()))
        return
    keys = ["public_id", "formula", "energy_per_atom", "formation_energy_per_atom"]
    rows = [
        [e[k] for k in keys] + [e["e_above_hull"], "yes" if e["stable"] else ""]
        for e in sorted(hull.entries, key=lambda e: (e["e_above_hull"], e["id"]))
    ]
    print(f"hull {hull.chemsys} (model {hull.model})")
    print(_table(["id", "formula", "E/atom", "E_form/atom", "E_hull", "stable"], rows))


def _format_from_suffix(path: str) -> str:
    p = path.lower()
    if p.endswith(".zip"):
        return "cif-zip"
    if p.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if p.endswith(".parquet"):
        return "parquet"
    raise DBError(f"export: cannot tell the format of '{path}'; give --format")
