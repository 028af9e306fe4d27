"""``lam db`` commands on single records and the whole store: show, delete, update-hulls,
find-duplicates, and the range filters shared by query, export and find-duplicates.

Imported when ``lam`` builds its parser, so it imports nothing heavy at module level."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from .errors import DBError, NotFoundError

#: Range filter options: option name -> (filter name, unit shown in the help).
RANGE_OPTIONS = {
    "formation-energy": ("formation_energy_per_atom", "eV/atom"),
    "density": ("density", "g/cm^3"),
    "volume": ("volume", "Å^3"),
    "a": ("a", "Å"),
    "b": ("b", "Å"),
    "c": ("c", "Å"),
    "alpha": ("alpha", "degrees"),
    "beta": ("beta", "degrees"),
    "gamma": ("gamma", "degrees"),
}


def add_range_arguments(p: argparse.ArgumentParser) -> None:
    """``--formation-energy lo:hi``, ``--density``, ``--volume``, ``--a`` .. ``--gamma``."""
    for option, (name, unit) in RANGE_OPTIONS.items():
        p.add_argument(f"--{option}", dest=name, help=f"lo:hi in {unit}")


def range_filters(args, parse: Callable) -> dict:
    """The range filters set on the command line; ``parse(text, float, option)`` -> (lo, hi)."""
    out = {}
    for option, (name, _) in RANGE_OPTIONS.items():
        text = getattr(args, name, None)
        if text:
            out[name] = parse(text, float, option)
    return out


def add_commands(sub, add_filters: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register show, delete, update-hulls and find-duplicates on the ``lam db`` subparsers."""
    s = sub.add_parser("show", help="one record: fields, cell, sites and labels")
    s.add_argument("ID", help="record id: 12 or lam-12")
    s.add_argument("--format", choices=["text", "json"], default="text")

    d = sub.add_parser("delete", help="remove records (hulls of their systems are recomputed)")
    d.add_argument("IDS", nargs="+", help="record ids: 12 or lam-12")
    d.add_argument("--yes", action="store_true", help="confirm: without it nothing is deleted")

    u = sub.add_parser("update-hulls", help="recompute formation energies and hulls")
    u.add_argument(
        "--chemsys", action="append", help="only this system and those containing it (repeat)"
    )
    u.add_argument("--no-progress", action="store_true")

    f = sub.add_parser("find-duplicates", help="groups of records that are the same structure")
    add_filters(f)
    f.add_argument("--format", choices=["table", "json"], default="table")
    f.add_argument("--no-progress", action="store_true")


COMMANDS = ("show", "delete", "update-hulls", "find-duplicates")


def run_command(db, args, filters: dict) -> int:
    """Run one of :data:`COMMANDS`; returns the exit code."""
    cmd = args.db_command
    if cmd == "show":
        rec = db.get(args.ID)
        if rec is None:
            raise NotFoundError(f"show: no record with id {args.ID!r}")
        print(json.dumps(rec.to_dict()) if args.format == "json" else show_text(rec))
    elif cmd == "delete":
        return _delete(db, args)
    elif cmd == "update-hulls":
        progress = not args.no_progress and sys.stderr.isatty()
        n = db.update_hulls(args.chemsys, progress=progress)
        print(f"{n} phase diagrams rebuilt")
    elif cmd == "find-duplicates":
        progress = not args.no_progress and sys.stderr.isatty()
        groups = db.find_duplicates(progress=progress, **filters)
        if args.format == "json":
            print(json.dumps({"groups": [[f"lam-{i}" for i in g] for g in groups]}))
        else:
            for g in groups:
                print(" ".join(f"lam-{i}" for i in g))
            print(f"{len(groups)} groups, {sum(len(g) for g in groups)} records")
    else:  # pragma: no cover - argparse restricts the choices
        raise DBError(f"unknown db command {cmd}")
    return 0


def _delete(db, args) -> int:
    from .api import parse_id

    ids = [parse_id(i) for i in args.IDS]
    found = [i for i in ids if db.get(i) is not None]
    missing = sorted(set(ids) - set(found))
    if not args.yes:
        print(
            f"would delete {len(set(found))} record(s): {' '.join(f'lam-{i}' for i in found)}; "
            "run again with --yes to delete",
            file=sys.stderr,
        )
        return 1
    n = db.delete(*found)
    print(f"deleted {n} record(s)")
    if missing:
        print(f"no such record(s): {' '.join(f'lam-{i}' for i in missing)}", file=sys.stderr)
        return 1
    return 0


def _v(x, digits: int = 6) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def show_text(rec) -> str:
    """A record as text: fields, cell, sites (with forces and moments) and stress."""
    import numpy as np

    lines = [f"{rec.public_id}  {rec.formula}  ({rec.chemsys}, {rec.nsites} sites)"]
    fields = [
        ("space group", f"{_v(rec.spacegroup_symbol)} ({_v(rec.spacegroup_number)})"),
        ("energy (eV)", _v(rec.energy, 10)),
        ("energy per atom (eV/atom)", _v(rec.energy_per_atom, 10)),
        ("formation energy (eV/atom)", _v(rec.formation_energy_per_atom)),
        ("energy above hull (eV/atom)", _v(rec.e_above_hull)),
        ("model", _v(rec.model)),
        ("volume (Å^3), density (g/cm^3)", f"{_v(rec.volume)}, {_v(rec.density)}"),
        ("a, b, c (Å)", ", ".join(_v(x) for x in (rec.a, rec.b, rec.c))),
        ("alpha, beta, gamma (deg)", ", ".join(_v(x) for x in (rec.alpha, rec.beta, rec.gamma))),
        ("source, submitter", f"{_v(rec.source)}, {_v(rec.submitter)}"),
        ("submitted", rec.submitted.isoformat()),
        ("tags", ", ".join(rec.tags) or "-"),
    ]
    width = max(len(k) for k, _ in fields)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in fields]
    lines.append("  lattice (Å):")
    lines += ["    " + "  ".join(f"{x:12.6f}" for x in row) for row in rec.lattice]
    head = "  site  el    frac_a     frac_b     frac_c"
    if rec.forces is not None:
        head += "      fx (eV/Å)   fy          fz"
    if rec.magmoms is not None:
        head += "     magmom"
    lines.append(head)
    for i, (el, frac) in enumerate(zip(rec.species, rec.frac_coords)):
        row = f"  {i:4d}  {el:3s}" + "".join(f" {x:10.6f}" for x in frac)
        if rec.forces is not None:
            row += "".join(f" {x:11.6f}" for x in rec.forces[i])
        if rec.magmoms is not None:
            row += f" {rec.magmoms[i]:10.4f}"
        lines.append(row)
    if rec.stress is not None:
        lines.append("  stress (eV/Å^3, ASE sign):")
        lines += ["    " + "  ".join(f"{x:12.6g}" for x in row) for row in np.asarray(rec.stress)]
    return "\n".join(lines)
