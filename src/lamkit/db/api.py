"""``CrystalDB``: the Python API of the crystal-structure database.

>>> db = CrystalDB("crystals.db")          # or "postgresql+psycopg://user:pw@host/db"
>>> db.init()
>>> db.import_files(["structures.extxyz"], model="dpa2", submitter="me")
>>> page = db.query(only_elements=["Li", "Fe", "O"], e_above_hull_max=0.05, limit=50)
>>> more = db.query(only_elements=["Li", "Fe", "O"], e_above_hull_max=0.05, cursor=page.next_cursor)

Energies are total energies in eV (per atom: eV/atom); lengths in Å.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from . import hull as _hull
from . import ingest as _ingest
from .engine import make_engine, normalise_url, read_conn, write_tx
from .errors import DBError, NotFoundError, QueryError
from .query import Page, check_limit, conditions, encode_cursor, keyset, parse_order
from .records import Record, make_row, public_id, record_from_row
from .schema import chemsystems, records

#: What ``query(as_=...)`` returns per match.
RESULT_KINDS = ("record", "structure", "atoms", "dict")


def parse_id(record_id: int | str) -> int:
    """An integer record id from ``12``, ``"12"`` or the public id ``"lam-12"``."""
    if isinstance(record_id, bool):
        raise QueryError(f"record id: expected an integer or 'lam-<n>'; found {record_id!r}")
    if isinstance(record_id, int):
        return record_id
    text = str(record_id).strip()
    if text.startswith("lam-"):
        text = text[4:]
    if not text.isdigit() or len(text) > 18:
        raise QueryError(f"record id: expected an integer or 'lam-<n>'; found {record_id!r}")
    return int(text)


class CrystalDB:
    """A crystal-structure store on SQLite (default: the file ``lamkit.db``) or PostgreSQL.

    ``url``: None, a file path, ``sqlite:///path`` or ``postgresql+psycopg://...``.
    Safe to share between threads; each call opens its own connection from the pool.
    """

    def __init__(self, url: str | Path | None = None, **engine_kwargs):
        self.url = normalise_url(url)
        # engine_kwargs: busy_timeout (s, SQLite; default 30) and SQLAlchemy's create_engine's
        self.engine = make_engine(self.url, **engine_kwargs)
        self._ready = False

    # ---------------------------------------------------------------- lifecycle
    def init(self) -> CrystalDB:
        """Create the tables and indexes if missing (idempotent, and safe when several processes
        run it at once on a new file); upgrades older SQLite files (see :mod:`.migrate`)."""
        from .migrate import ensure_schema

        ensure_schema(self.engine)
        self._ready = True
        return self

    def _ensure(self) -> None:
        if not self._ready:
            self.init()

    def close(self) -> None:
        """Release all pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> CrystalDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CrystalDB({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    def _read(self):
        return _Reading(self)

    # ---------------------------------------------------------------- writing
    def add(
        self,
        structure_or_atoms: Any,
        energy: float | None = None,
        model: str | None = None,
        submitter: str | None = None,
        source: str | None = None,
        tags: Iterable[str] | None = None,
        submitted: datetime | str | None = None,
        update_hull: bool = True,
        labels: dict | None = None,
    ) -> Record:
        """Store one structure with its total energy (eV); returns the stored Record (the
        existing one when the same structure, energy, model and source are already stored).
        ``labels``: ``forces`` [n, 3] eV/Å, ``stress`` [3, 3] eV/Å^3, ``magmoms`` [n] (an
        ase.Atoms brings its calculator's when ``labels`` is None).
        Raises RecordError with the reason for an invalid structure or label."""
        from .readers import atoms_labels
        from .records import is_atoms

        self._ensure()
        if labels is None and is_atoms(structure_or_atoms):
            labels = atoms_labels(structure_or_atoms)
        row = make_row(
            structure_or_atoms, energy, model, source, submitter, submitted, tags, labels
        )
        with write_tx(self.engine) as conn:
            new = _ingest.insert_rows(conn, [row])
            rid = conn.execute(
                select(records.c.id).where(records.c.content_hash == row["content_hash"])
            ).scalar_one()
            if update_hull and row["energy"] is not None:
                if not _hull.update_after_insert(conn, new):
                    _hull.update_hulls(conn, {(row["model"], row["chemsys"])})
        rec = self.get(rid)
        assert rec is not None
        return rec

    def import_records(
        self,
        items: Iterable[Any],
        *,
        submitter: str | None = None,
        model: str | None = None,
        source: str | None = None,
        batch_size: int = 1000,
        progress: bool = False,
        dedupe: bool = False,
        update_hull: bool = True,
        workers: int = 1,
        defer_symmetry: bool = False,
    ) -> _ingest.ImportReport:
        """Import structures (Structures, Atoms, dicts: see :mod:`lamkit.db.ingest`), one
        transaction per batch.  Invalid items are rejected with a reason, never raised.
        ``workers`` > 1 makes the rows (validation, space groups) in that many processes.
        ``defer_symmetry``: space groups are stored as pending for :meth:`index_symmetry`."""
        self._ensure()
        return _ingest.import_items(
            self,
            _ingest.iter_items(items, "records"),
            submitter=submitter,
            model=model,
            source=source,
            batch_size=batch_size,
            progress=progress,
            dedupe=dedupe,
            update_hull=update_hull,
            workers=workers,
            defer_symmetry=defer_symmetry,
        )

    def index_symmetry(
        self, *, workers: int = 1, batch_size: int = 1000, progress: bool = False
    ):
        """Fill in the space groups left pending by ``defer_symmetry`` imports
        (:func:`lamkit.db.symindex.index_symmetry`); returns an ``IndexReport``."""
        from .symindex import index_symmetry

        self._ensure()
        return index_symmetry(self, workers=workers, batch_size=batch_size, progress=progress)

    def import_files(
        self,
        paths: Iterable[str | Path] | str | Path,
        *,
        submitter: str | None = None,
        model: str | None = None,
        batch_size: int = 1000,
        progress: bool = True,
        dedupe: bool = False,
        update_hull: bool = True,
        energy_key: str | None = None,
        energies: dict[str, float] | str | Path | None = None,
        workers: int = 1,
        defer_symmetry: bool = False,
    ) -> _ingest.ImportReport:
        """Import files and folders: CIF, POSCAR/CONTCAR, extxyz and anything ASE reads, pymatgen
        JSON, the public API's record JSON (single, list or JSON lines) and deepmd/npy systems.
        Each batch is one transaction; re-running skips what is already stored.

        Forces, stress and magnetic moments come along from ASE calculator results (extxyz) and
        deepmd ``force.npy`` / ``virial.npy``.  ``energy_key``: the ``info`` key holding each
        ASE frame's total energy (eV).  ``energies``: file name -> total energy (eV), or the
        path of a two-column file of them (for CIFs, which carry none); names that match no
        imported file are listed in ``report.unused_energies``.  ``workers``: processes that
        make the rows, ``defer_symmetry`` (see :meth:`import_records`)."""
        from .readers import read_energy_file, with_energies

        self._ensure()
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if isinstance(energies, (str, Path)):
            energies = read_energy_file(energies)
        used: set[str] = set()
        items = _ingest.iter_files(paths, energy_key=energy_key)
        if energies is not None:
            items = with_energies(items, dict(energies), used)
        report = _ingest.import_items(
            self,
            items,
            submitter=submitter,
            model=model,
            source=None,
            batch_size=batch_size,
            progress=progress,
            dedupe=dedupe,
            update_hull=update_hull,
            workers=workers,
            defer_symmetry=defer_symmetry,
        )
        if energies is not None:
            report.unused_energies = sorted(set(energies) - used)
        return report

    def update_hulls(self, chemsys: Iterable[str] | None = None, progress: bool = False) -> int:
        """Recompute formation energies and energies above hull for the given chemical systems
        and every stored system containing one of them (all systems when None), for every
        model.  Returns the number of phase diagrams built."""
        self._ensure()
        with write_tx(self.engine) as conn:
            return _hull.update_all(conn, chemsys, progress=progress)

    def delete(self, *record_ids: int | str) -> int:
        """Remove records (``12`` or ``"lam-12"``); returns how many existed.  Formation
        energies and hulls of their systems (and the systems containing them) are recomputed.
        A deleted id is never handed out again."""
        from sqlalchemy import delete as sql_delete

        self._ensure()
        ids = sorted({parse_id(r) for r in record_ids})
        if not ids:
            return 0
        with write_tx(self.engine) as conn:
            touched: set[tuple[str | None, str]] = set()
            deleted = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    select(records.c.model, records.c.chemsys, records.c.energy).where(
                        records.c.id.in_(chunk)
                    )
                ).all()
                touched |= {(r.model, r.chemsys) for r in rows if r.energy is not None}
                conn.execute(sql_delete(records).where(records.c.id.in_(chunk)))
                deleted += len(rows)
            if touched:
                _hull.update_hulls(conn, touched)
        return deleted

    def set_references(self, model: str | None, energies: dict[str, float]) -> None:
        """Declare elemental reference energies (eV/atom) for ``model``; formation energies and
        hulls of that model are measured against them (recomputed now)."""
        self._ensure()
        with write_tx(self.engine) as conn:
            _hull.declare_references(conn, model, energies)

    def references(self, model: str | None = None) -> dict[str, dict]:
        """The elemental references of ``model``: element -> {energy_per_atom, source,
        record_id}."""
        self._ensure()
        with read_conn(self.engine) as conn:
            return _hull.load_references(conn, model)

    # ---------------------------------------------------------------- reading
    def get(self, record_id: int | str) -> Record | None:
        """The record with this id (``12`` or ``"lam-12"``), or None."""
        rid = parse_id(record_id)
        with self._read() as conn:
            row = conn.execute(select(records).where(records.c.id == rid)).first()
        return None if row is None else record_from_row(row)

    def query(
        self,
        elements=None,
        only_elements=None,
        chemsys=None,
        formula=None,
        spacegroup=None,
        nsites=None,
        energy_per_atom=None,
        e_above_hull_max=None,
        submitter=None,
        submitted=None,
        tags=None,
        model=None,
        order_by: str = "id",
        limit: int = 100,
        cursor: str | None = None,
        as_: str = "record",
        with_total: bool = False,
        formation_energy_per_atom=None,
        density=None,
        volume=None,
        a=None,
        b=None,
        c=None,
        alpha=None,
        beta=None,
        gamma=None,
    ) -> Page:
        """One page of matching records (see docs/db.md for the filter semantics).

        ``elements``: contain all of these; ``only_elements``: every element is one of these;
        ``chemsys``: exactly this system; ranges are ``(lo, hi)`` with None for an open end
        (also ``formation_energy_per_atom`` eV/atom, ``density`` g/cm^3, ``volume`` Å^3,
        lattice lengths ``a``, ``b``, ``c`` Å and angles ``alpha``, ``beta``, ``gamma`` degrees);
        ``order_by``: one of id, energy_per_atom, e_above_hull, nsites, submitted, formula or a
        range field ("-" prefix for descending); ``cursor``: ``next_cursor`` of the previous
        page.
        ``as_``: "record", "structure" (pymatgen), "atoms" (ASE) or "dict"."""
        filters = dict(
            elements=elements,
            only_elements=only_elements,
            chemsys=chemsys,
            formula=formula,
            spacegroup=spacegroup,
            nsites=nsites,
            energy_per_atom=energy_per_atom,
            e_above_hull_max=e_above_hull_max,
            submitter=submitter,
            submitted=submitted,
            tags=tags,
            model=model,
            formation_energy_per_atom=formation_energy_per_atom,
            density=density,
            volume=volume,
            a=a,
            b=b,
            c=c,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
        )
        return self._page(filters, order_by, limit, cursor, as_, with_total)

    def _page(self, filters, order_by, limit, cursor, as_, with_total) -> Page:
        check_limit(limit)
        parse_order(order_by)
        if as_ not in RESULT_KINDS:
            raise QueryError(f"as_: expected one of {', '.join(RESULT_KINDS)}; found {as_!r}")
        with self._read() as conn:
            conds = conditions(conn, **filters)
            after, order = keyset(order_by, cursor)
            stmt = select(records).where(*conds, *after).order_by(*order).limit(limit + 1)
            rows = conn.execute(stmt).all()
            total = None
            if with_total:
                total = conn.execute(select(func.count()).where(*conds)).scalar_one()
        recs = [record_from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(order_by, recs[-1]) if len(rows) > limit else None
        return Page(_convert(recs, as_), next_cursor, total, order_by)

    def iter_query(
        self, *, order_by: str = "id", page_size: int = 500, as_: str = "record", **filters
    ) -> Iterator[Any]:
        """Every match, page by page (keyset pages of ``page_size``)."""
        cursor = None
        while True:
            page = self._page(filters, order_by, page_size, cursor, as_, False)
            yield from page.records
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def count(self, **filters) -> int:
        """Number of records matching the filters of :meth:`query`."""
        with self._read() as conn:
            conds = conditions(conn, **filters)
            return conn.execute(
                select(func.count()).select_from(records).where(*conds)
            ).scalar_one()

    def stats(self) -> dict:
        """Counts: records, chemical systems, elements, records per submitter and per model."""
        with self._read() as conn:
            n = conn.execute(select(func.count()).select_from(records)).scalar_one()
            nsys = conn.execute(select(func.count(func.distinct(records.c.chemsys)))).scalar_one()
            systems = conn.execute(select(chemsystems.c.chemsys)).scalars().all()
            by_sub = conn.execute(
                select(records.c.submitter, func.count()).group_by(records.c.submitter)
            ).all()
            by_model = conn.execute(
                select(records.c.model, func.count()).group_by(records.c.model)
            ).all()
            no_hull = conn.execute(
                select(func.count())
                .select_from(records)
                .where(records.c.energy.is_not(None), records.c.e_above_hull.is_(None))
            ).scalar_one()
        elements = sorted({el for s in systems for el in s.split("-")})
        return {
            "records": n,
            "chemsys": nsys,
            "elements": len(elements),
            "element_list": elements,
            "by_submitter": {str(k) if k is not None else None: v for k, v in by_sub},
            "by_model": {str(k) if k is not None else None: v for k, v in by_model},
            "without_hull": no_hull,
        }

    # ---------------------------------------------------------------- analysis
    def hull(self, chemsys: str | Iterable[str], model: str | None = None) -> _hull.Hull:
        """The convex hull of a chemical system (records of the system and its subsystems) for
        one model; ``model`` may be omitted when the system holds energies of one model only."""
        with self._read() as conn:
            return _hull.build_hull(conn, chemsys, model)

    def e_above_hull(
        self, structure_or_composition: Any, energy: float, model: str | None = None
    ) -> tuple[float, list[dict]]:
        """Energy above the stored hull (eV/atom) of any structure or composition with total
        energy ``energy`` (eV), and its decomposition: [{id, formula, fraction}]."""
        with self._read() as conn:
            return _hull.e_above_hull_of(conn, structure_or_composition, energy, model)

    def match(self, structure: Any, energy: float | None = None, model: str | None = None):
        """Stored records that are the same structure (see :mod:`lamkit.db.match`)."""
        from . import match as _match

        with self._read() as conn:
            return _match.match(conn, structure, energy=energy, model=model)

    def find_duplicates(self, progress: bool = False, **filters) -> list[list[int]]:
        """Groups of ids of stored records that match each other (StructureMatcher)."""
        from . import match as _match

        return _match.find_duplicates(self, progress=progress, **filters)

    def symmetry(self, record_id: int | str, symprec: float | None = None) -> dict:
        """spglib analysis of a stored record: number, symbol, Hall symbol, Wyckoff letters,
        equivalent atoms, conventional and primitive cells (JSON-ready)."""
        from . import match as _match

        rec = self.get(record_id)
        if rec is None:
            raise NotFoundError(f"no record with id {record_id!r}")
        return _match.symmetry(rec, symprec)

    def export(self, path: str | Path, fmt: str = "cif-zip", progress: bool = False, **filters):
        """Write matching records to ``path`` as "cif-zip", "extxyz", "parquet" or "deepmd" (a
        folder of mixed-type systems with energies, forces and virials), streaming page by page;
        returns the number of records written."""
        from . import export as _export

        return _export.export(self, path, fmt, progress=progress, **filters)


def _convert(recs: list[Record], as_: str) -> list[Any]:
    if as_ == "record":
        return recs
    if as_ == "structure":
        return [r.structure for r in recs]
    if as_ == "atoms":
        return [r.to_atoms() for r in recs]
    return [r.to_dict() for r in recs]


class _Reading:
    """A read connection that turns a missing schema into a DBError people can act on."""

    def __init__(self, db: CrystalDB):
        self.db = db
        self.cm = read_conn(db.engine)

    def __enter__(self):
        return self.cm.__enter__()

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, (OperationalError, ProgrammingError)) and not inspect(
            self.db.engine
        ).has_table("records"):
            self.cm.__exit__(typ, exc, tb)
            raise DBError(
                f"{self.db!r} has no crystal tables; create them with CrystalDB(url).init() "
                "or `lam db init`"
            ) from None
        return self.cm.__exit__(typ, exc, tb)


__all__ = ["CrystalDB", "Page", "Record", "parse_id", "public_id"]
