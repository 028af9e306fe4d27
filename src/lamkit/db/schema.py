"""Tables of the crystal database (SQLAlchemy Core), identical on SQLite and PostgreSQL.

``records``      one row per stored structure and energy; the structure is kept bit-exact as
                 float64 little-endian blobs (lattice 72 bytes, fractional coordinates 24 bytes a
                 site) and the species as a space-separated string.
``chemsystems``  one row per distinct chemical system with its 128-bit element mask (two
                 63-bit integers), so element-subset / superset filters run against a small table
                 and reach ``records`` through the indexed ``chemsys`` column.
``elemental_refs`` the elemental reference energies (eV/atom) per model that formation energies
                 and hulls are measured against: declared by a user, or the lowest-energy
                 elemental record of that model.
``meta``         key/value facts about the database (schema version, symprec).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = "2"

metadata = MetaData()

#: BIGINT on PostgreSQL, INTEGER (the rowid alias, AUTOINCREMENT) on SQLite.
IdType = BigInteger().with_variant(Integer(), "sqlite")

records = Table(
    "records",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("content_hash", String(64), nullable=False, unique=True),
    # structure, bit-exact
    Column("lattice", LargeBinary, nullable=False),  # 9 float64 LE, rows a, b, c in Å
    Column("frac_coords", LargeBinary, nullable=False),  # nsites*3 float64 LE
    Column("species", Text, nullable=False),  # "Na Cl Na Cl"
    # derived
    Column("formula", String(255), nullable=False),  # pymatgen reduced formula, e.g. "Fe2O3"
    Column("elements", String(255), nullable=False),  # "Fe O" sorted alphabetically
    Column("chemsys", String(255), nullable=False),  # "Fe-O" sorted alphabetically
    Column("nelements", Integer, nullable=False),
    Column("nsites", Integer, nullable=False),
    Column("volume", Float, nullable=False),  # Å^3
    Column("density", Float, nullable=False),  # g/cm^3
    Column("spacegroup_number", Integer),  # spglib, symprec 0.1 Å; NULL if spglib failed
    Column("spacegroup_symbol", String(32)),
    # energies
    Column("energy", Float),  # total energy, eV
    Column("energy_per_atom", Float),  # eV/atom
    Column("model", String(255)),  # the model (or method) that computed the energy
    Column("formation_energy_per_atom", Float),  # eV/atom against table `elemental_refs`
    Column("e_above_hull", Float),  # eV/atom, hull of the record's own chemsys and model
    # training labels (lamkit.db.labels), float64 LE, NULL when absent
    Column("forces", LargeBinary),  # nsites*3, eV/Å
    Column("stress", LargeBinary),  # 9, eV/Å^3, ASE sign (virial = -stress * volume)
    Column("magmoms", LargeBinary),  # nsites, Bohr magnetons
    # lattice parameters, for filters and sorts
    Column("a", Float),  # Å
    Column("b", Float),
    Column("c", Float),
    Column("alpha", Float),  # degrees
    Column("beta", Float),
    Column("gamma", Float),
    # provenance
    Column("source", String(1024)),
    Column("submitter", String(255)),
    Column("submitted", DateTime(timezone=False), nullable=False),  # naive UTC
    Column("tags", Text, nullable=False, default="[]"),  # JSON list of strings, sorted
    # ids are never reused: AUTOINCREMENT on SQLite (see lamkit.db.migrate), a sequence on
    # PostgreSQL
    sqlite_autoincrement=True,
)

Index("ix_records_chemsys", records.c.chemsys)
Index("ix_records_formula", records.c.formula)
Index("ix_records_spacegroup", records.c.spacegroup_number)
Index("ix_records_energy_per_atom", records.c.energy_per_atom)
Index("ix_records_e_above_hull", records.c.e_above_hull)
Index("ix_records_submitted", records.c.submitted)
Index("ix_records_nsites", records.c.nsites)
Index("ix_records_model_chemsys", records.c.model, records.c.chemsys)
Index("ix_records_submitter", records.c.submitter)
Index("ix_records_formation_energy", records.c.formation_energy_per_atom)

#: Columns added after schema version 1; :mod:`lamkit.db.migrate` adds them to older files.
ADDED_COLUMNS = ("forces", "stress", "magmoms", "a", "b", "c", "alpha", "beta", "gamma")

chemsystems = Table(
    "chemsystems",
    metadata,
    Column("chemsys", String(255), primary_key=True),
    Column("nelements", Integer, nullable=False),
    Column("mask_lo", BigInteger, nullable=False),  # bit Z-1 for Z = 1..63
    Column("mask_hi", BigInteger, nullable=False),  # bit Z-64 for Z = 64..126
)

elemental_refs = Table(
    "elemental_refs",
    metadata,
    Column("model", String(255), primary_key=True),  # "" stands for records without a model
    Column("element", String(3), primary_key=True),
    Column("energy_per_atom", Float, nullable=False),  # eV/atom
    Column("source", String(32), nullable=False),  # "declared" or "record"
    Column("record_id", IdType),  # the elemental record, when source == "record"
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
