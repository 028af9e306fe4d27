"""Export matching records, streamed page by page (memory stays flat at any size).

``cif-zip``  a zip archive, one CIF per record (``lam-<id>_<formula>.cif``, pymatgen's
             CifWriter) and ``index.jsonl`` with every record's fields but the structure;
``extxyz``   one frame per record, fields in the frame info (energy in eV);
``parquet``  one row per record: fields plus ``lattice`` (9 floats, Å, rows a, b, c),
             ``species`` and ``frac_coords`` (3n floats) and the labels ``forces`` (3n),
             ``stress`` (9) and ``magmoms`` (n) or null, float64 bit-exact;
``deepmd``   a folder of deepmd/npy mixed-type systems, one per atom count, with energies,
             forces and virials (:mod:`lamkit.db.deepmd_export`), for ``lam train``;
``deepmd-standard``  standard deepmd/npy systems, one per composition (any descriptor).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..registry import did_you_mean
from .errors import QueryError
from .handle import Database
from .records import Record

FORMATS = ("cif-zip", "extxyz", "parquet", "deepmd", "deepmd-standard")
_PAGE = 500


def export(
    db: Database, path: str | Path, fmt: str = "cif-zip", progress: bool = False, **filters
) -> int:
    """Write the records matching ``filters`` to ``path`` in ``fmt``; returns how many."""
    from tqdm.auto import tqdm

    if fmt not in FORMATS:
        raise QueryError(
            f"export format '{fmt}' is not one of {', '.join(FORMATS)}."
            + did_you_mean(fmt, FORMATS)
        )
    recs = db.iter_query(page_size=_PAGE, **filters)
    recs = tqdm(recs, disable=not progress, unit=" records", desc=f"export {fmt}")
    path = Path(path)
    if fmt in ("deepmd", "deepmd-standard"):
        from .deepmd_export import write_deepmd

        return write_deepmd(recs, path, _elements_of(db, filters), mixed=fmt == "deepmd")
    writer = {"cif-zip": _write_cif_zip, "extxyz": _write_extxyz, "parquet": _write_parquet}[fmt]
    return writer(recs, path)


def _elements_of(db: Database, filters: dict) -> list[str]:
    """Elements of the records matching ``filters``, by atomic number."""
    from sqlalchemy import select

    from .deepmd_export import sorted_elements
    from .query import conditions
    from .schema import records

    with db._read() as conn:
        conds = conditions(conn, **filters)
        systems = conn.execute(select(records.c.chemsys).distinct().where(*conds)).scalars()
        return sorted_elements(el for cs in systems for el in cs.split("-"))


def _meta(rec: Record) -> dict:
    d = rec.to_dict()
    d.pop("structure")
    return d


def _write_cif_zip(recs, path: Path) -> int:
    n = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        index = []
        for rec in recs:
            zf.writestr(f"{rec.public_id}_{rec.formula}.cif", rec.to_cif())
            index.append(json.dumps(_meta(rec)))
            n += 1
        zf.writestr("index.jsonl", "\n".join(index) + ("\n" if index else ""))
    return n


def _write_extxyz(recs, path: Path) -> int:
    import ase.io

    n = 0
    with open(path, "w") as fh:
        chunk = []
        for rec in recs:
            atoms = rec.to_atoms()
            for key in (
                "submitter",
                "source",
                "spacegroup_symbol",
                "e_above_hull",
                "formation_energy_per_atom",
                "spacegroup_number",
            ):
                value = getattr(rec, key)
                if value is not None:
                    atoms.info[key] = value
            atoms.info["submitted"] = rec.submitted.isoformat()
            if rec.tags:
                atoms.info["tags"] = ",".join(rec.tags)
            chunk.append(atoms)
            n += 1
            if len(chunk) >= _PAGE:
                ase.io.write(fh, chunk, format="extxyz")
                chunk = []
        if chunk:
            ase.io.write(fh, chunk, format="extxyz")
    return n


def _parquet_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("public_id", pa.string()),
            ("formula", pa.string()),
            ("chemsys", pa.string()),
            ("elements", pa.list_(pa.string())),
            ("nsites", pa.int32()),
            ("volume", pa.float64()),
            ("density", pa.float64()),
            ("spacegroup_number", pa.int32()),
            ("spacegroup_symbol", pa.string()),
            ("energy", pa.float64()),
            ("energy_per_atom", pa.float64()),
            ("model", pa.string()),
            ("formation_energy_per_atom", pa.float64()),
            ("e_above_hull", pa.float64()),
            ("source", pa.string()),
            ("submitter", pa.string()),
            ("submitted", pa.timestamp("us", tz="UTC")),
            ("tags", pa.list_(pa.string())),
            ("lattice", pa.list_(pa.float64())),
            ("species", pa.list_(pa.string())),
            ("frac_coords", pa.list_(pa.float64())),
            ("a", pa.float64()),
            ("b", pa.float64()),
            ("c", pa.float64()),
            ("alpha", pa.float64()),
            ("beta", pa.float64()),
            ("gamma", pa.float64()),
            ("forces", pa.list_(pa.float64())),  # 3n floats, eV/Å, or null
            ("stress", pa.list_(pa.float64())),  # 9 floats, eV/Å^3, or null
            ("magmoms", pa.list_(pa.float64())),  # n floats, Bohr magnetons, or null
        ]
    )


def _write_parquet(recs, path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        rows: list[dict] = []

        def flush() -> None:
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows.clear()

        for rec in recs:
            d = _meta(rec)
            d.pop("content_hash")
            d["submitted"] = rec.submitted
            d["lattice"] = rec.lattice.reshape(-1).tolist()
            d["species"] = list(rec.species)
            d["frac_coords"] = rec.frac_coords.reshape(-1).tolist()
            for key in ("forces", "stress", "magmoms"):
                value = getattr(rec, key)
                d[key] = None if value is None else value.reshape(-1).tolist()
            rows.append(d)
            n += 1
            if len(rows) >= _PAGE:
                flush()
        flush()
    return n
