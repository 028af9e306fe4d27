"""``screen()``: parse, check, relax, judge and report, resumably, here or on a Dask cluster.

Per input structure (in input order, index 0..n-1):

1. parse (:mod:`.inputs`, parser processes with a timeout) -> rejected with the reason, or
2. validity rules (:mod:`.validity`) -> rejected with the reason, or
3. relaxation with :class:`lamkit.relax.Relaxer` in chunks of ``chunk_size`` structures (in
   this process, or as shards on Dask workers: :mod:`.cluster`) -> "failed" when it explodes,
4. judgement of each relaxed structure as it finishes: energy per atom, space group (spglib at
   lamkit.db's ``SYMPREC``), formation energy, energy above hull and decomposition
   (:class:`~.stability.HullOracle`), novelty against the database
   (:class:`~.novelty.NoveltyIndex`); the row and the relaxed structure are committed to the
   state store at once (:mod:`.store`), so a killed run resumes where it stopped;
5. at the end: uniqueness within the submission (:func:`~.novelty.find_unique`), the
   stable / metastable / S.U.N. flags (:mod:`.report`), the optional insertion into the
   database (:mod:`.insert`) and the output files.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ScreenConfig, ScreenError
from .inputs import Candidate, collect
from .potential import Resolved, resolve
from .relax_jobs import relax_local
from .store import StateStore, decode_structure, encode_structure
from .validity import Validator

log = logging.getLogger("lamkit")


@dataclass
class ScreenResult:
    """What a screening produced: ``table`` (one row per input structure), ``summary``
    (counts, rates, diversity, timing), ``paths`` (output files by name), ``screen_id``."""

    table: Any
    summary: dict
    paths: dict[str, Path]
    screen_id: str
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        """The printed summary table."""
        from .report import format_summary

        return format_summary(self.summary, self.paths)


def _open_db(db: Any):
    """A CrystalDB from a CrystalDB, a URL or a path (which must exist), or None."""
    if db is None:
        return None, False
    from ..db import CrystalDB

    if isinstance(db, CrystalDB):
        return db, False
    text = str(db)
    if "://" not in text and not Path(text).is_file():
        raise ScreenError(f"database: no such file '{text}' (give a path or a URL)")
    try:
        return CrystalDB(text).init(), True
    except Exception as exc:  # noqa: BLE001 - connection errors of every driver
        raise ScreenError(f"database {text}: cannot open: {type(exc).__name__}: {exc}") from None


def _base_row(c: Candidate) -> dict:
    from ..db.records import reduced_formula

    row: dict[str, Any] = {"index": c.index, "source": c.source}
    if c.atoms is not None and len(c.atoms):
        symbols = c.atoms.get_chemical_symbols()
        row.update(formula=reduced_formula(symbols), nsites=len(symbols))
    return row


def rejected_row(c: Candidate, reason: str, rule: str) -> dict:
    """The row of a structure that is not relaxed (``rule`` "parse" or a validity rule)."""
    row = _base_row(c) if rule != "parse" else {"index": c.index, "source": c.source}
    row.update(status="rejected", reason=reason, valid=False, rule=rule)
    return row


def failed_row(c: Candidate, reason: str, relax_status: str = "error") -> dict:
    """The row of a valid structure whose relaxation failed."""
    row = _base_row(c)
    row.update(status="failed", reason=reason, valid=True, converged=False)
    row.update(relax_status=relax_status, rule=f"relax: {relax_status}")
    return row


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class _Screening:
    """One run of :func:`screen` (state shared by its steps)."""

    def __init__(self, config: ScreenConfig, pot: Resolved, db: Any, hull_model, progress: bool):
        self.config, self.pot, self.db, self.progress = config, pot, db, progress
        self.hull_model = hull_model
        self.notes: list[str] = []
        self.timing = {"parse": 0.0, "relax": 0.0, "judge": 0.0, "finalize": 0.0}
        self.store: StateStore | None = None
        self.oracle = None
        self.index = None

    def settings(self) -> dict:
        return {
            "config": self.config.result_settings(),
            "potential": self.pot.identity,
            "hull_model": self.hull_model,
            "database": None if self.db is None else _safe_url(self.db),
        }

    def validator(self) -> Validator:
        c = self.config
        db_elements = None
        if self.db is not None and c.check_db_elements:
            refs = set(self.db.references(self.hull_model)) | set(c.references or {})
            if refs:
                db_elements = sorted(refs)
            else:
                self.notes.append(
                    "database rule skipped: the database has no elemental reference for model "
                    f"{self.hull_model!r} (hull_status says why each hull is missing)"
                )
        v = Validator(c, self.pot.type_map, db_elements)
        self.notes.extend(v.notes)
        return v

    def judges(self) -> None:
        from .novelty import NoveltyIndex
        from .stability import HullOracle

        c = self.config
        self.oracle = HullOracle(self.db, model=self.hull_model, references=c.references)
        if self.db is not None:
            self.index = NoveltyIndex(self.db, preset=c.preset, model=c.novelty_model)
        else:
            self.notes.append("no database: novelty not assessed (novel and S.U.N. are NA)")

    def judge(self, c: Candidate, res) -> tuple[dict, dict | None]:
        """Row and relaxed structure of a finished relaxation."""
        t0 = time.perf_counter()
        try:
            return self._judge(c, res)
        except Exception as exc:  # noqa: BLE001 - one structure's failure is its own row
            log.warning("screen: judging %s failed: %s", c.source, exc)
            row = failed_row(c, f"judging the relaxed structure failed: {exc!r}", res.status)
            row["rule"] = "judge"
            return row, None
        finally:
            self.timing["judge"] += time.perf_counter() - t0

    def _judge(self, c: Candidate, res) -> tuple[dict, dict | None]:
        from ..db.records import spacegroup

        if res.status == "exploded" or not _finite(res.energy):
            row = failed_row(c, res.reason or "relaxation failed", res.status)
            row.update(relax_steps=res.steps, fmax=_num(res.fmax))
            return row, None
        atoms = res.atoms
        row = _base_row(c)
        row.update(
            status="ok",
            reason=None if res.converged else res.reason,
            valid=True,
            converged=bool(res.converged),
            relax_status=res.status,
            relax_steps=int(res.steps),
            fmax=_num(res.fmax),
            energy=float(res.energy),
            energy_per_atom=float(res.energy) / len(atoms),
        )
        symbols = atoms.get_chemical_symbols()
        sg = spacegroup(atoms.cell.array.astype(float), atoms.get_scaled_positions(), symbols)
        row.update(spacegroup_number=sg[0], spacegroup_symbol=sg[1])
        st = self.oracle.assess(symbols, float(res.energy))
        row.update(
            formation_energy_per_atom=st.formation_energy_per_atom,
            e_above_hull=st.e_above_hull,
            decomposition=st.decomposition,
            hull_status=st.hull_status,
        )
        if self.index is not None:
            try:
                matched = self.index.match(atoms, row["energy_per_atom"])
                row.update(novel=matched is None, matched_id=matched)
            except Exception as exc:  # noqa: BLE001 - an unmatched structure stays unknown
                log.warning("novelty of %s: %s", c.source, exc)
                row.update(novel=None)
        return row, encode_structure(atoms)


def _num(x: Any) -> float | None:
    return float(x) if _finite(x) else None


def _safe_url(db: Any) -> str:
    return db.engine.url.render_as_string(hide_password=True)


def screen(
    inputs: Any,
    potential: Any,
    out_dir: str | Path = "screen-out",
    db: Any = None,
    config: ScreenConfig | dict | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    insert: bool = False,
    model_name: str | None = None,
    submitter: str | None = None,
    progress: bool = True,
    *,
    restart: bool = False,
) -> ScreenResult:
    """Screen crystal structures: parse, check, relax, judge stability, uniqueness, novelty.

    Args:
        inputs: paths (files, folders, .zip/.tar/.tar.gz archives), ase.Atoms, a
            ``{"db_query": {...}}`` dict of CrystalDB.query filters read from ``db``, or a list.
        potential: a model file, DeepPot, AtomicModel, ASE calculator, "emt" or
            "ase:module.Class" (see :mod:`lamkit.screen.potential`).
        out_dir: folder of the state store and the results files.
        db: CrystalDB, URL or path: hull, references, novelty and the ``insert`` target.
        config: :class:`ScreenConfig` (or a dict of its fields).
        workers: N: a local Dask cluster of N single-threaded worker processes.
        cluster: address of a running Dask scheduler ("tcp://host:8786").
        insert: write the relaxed structures that pass ``config.insert_when`` into ``db``
            (model ``model_name``, ``submitter``, tag ``screen:<id>``; idempotent).
        model_name: name of the model for the database (default: the model file's stem, or
            the calculator's name); also the default hull model.
        progress: progress bars (tqdm) with rate and ETA.
        restart: discard the stored results of ``out_dir`` and start over.

    Returns a :class:`ScreenResult`.  Raises ScreenError for unusable arguments; bad input
    structures never raise (they are rejected rows)."""
    t_start = time.perf_counter()
    config = _as_config(config)
    _check_engine(workers, cluster)
    database, owned = _open_db(db)
    try:
        if insert and database is None:
            raise ScreenError("insert needs a database (db=... / --db URL)")
        pot = resolve(potential, config)
        name = model_name or pot.name
        run = _Screening(config, pot, database, config.hull_model or name, progress)
        with StateStore(out_dir, run.settings(), restart=restart) as store:
            run.store = store
            if store.restarted:
                log.info("screen: %s held other results; they were discarded", out_dir)
            t = time.perf_counter()
            cands = collect(inputs, config, database, progress=progress)
            run.timing["parse"] = time.perf_counter() - t
            hashes = {c.index: c.input_hash() for c in cands}
            stored = store.hashes()
            todo = [c for c in cands if stored.get(c.index) != hashes[c.index]]
            jobs = _check(run, todo, hashes)
            run.judges()
            _relax(run, jobs, hashes, workers, cluster)
            t = time.perf_counter()
            rows, relaxed = _finish(run, cands)
            if insert:
                _insert(run, database, rows, relaxed, name, submitter)
            run.timing["finalize"] = time.perf_counter() - t
            run.timing.update(
                total=time.perf_counter() - t_start,
                resumed=len(cands) - len(todo),
                computed=len(todo),
                relaxed_here=len(jobs),
            )
            engine = _engine_name(workers, cluster)
            return _write(run, rows, relaxed, store, name, engine)
    finally:
        if owned:
            database.close()


def _insert(run, database, rows, relaxed, name, submitter) -> None:
    """``insert``: the passing relaxed structures into the database; rows get their ids."""
    from .insert import insert_passing

    ids, notes = insert_passing(
        database, rows, relaxed, run.config, name, submitter, run.store.screen_id
    )
    run.store.set_db_ids(ids)
    run.notes.extend(notes)
    for r in rows:
        r["db_id"] = ids.get(r["index"], r.get("db_id"))


def _as_config(config: Any) -> ScreenConfig:
    if config is None:
        return ScreenConfig()
    if isinstance(config, dict):
        return ScreenConfig.from_dict(config)
    if not isinstance(config, ScreenConfig):
        raise ScreenError(
            f"config: expected a ScreenConfig or a dict; found {type(config).__name__}"
        )
    config.check()
    return config


def _check_engine(workers: Any, cluster: Any) -> None:
    if workers is not None and cluster is not None:
        raise ScreenError("give workers (a local cluster) or cluster (an address), not both")
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise ScreenError(f"workers: expected a positive integer; found {workers!r}")
    if cluster is not None and (not isinstance(cluster, str) or not cluster.strip()):
        raise ScreenError(f"cluster: expected a scheduler address; found {cluster!r}")


def _engine_name(workers: int | None, cluster: str | None) -> str:
    if cluster is not None:
        return f"dask cluster {cluster}"
    if workers is not None:
        return f"dask local cluster, {workers} worker(s)"
    return "in-process"


def _check(run: _Screening, todo: list[Candidate], hashes: dict[int, str]) -> list[Candidate]:
    """Store the rejections among ``todo``; return the valid candidates."""
    validator = run.validator()
    rejected, valid = [], []
    for c in todo:
        if c.atoms is None:
            row = rejected_row(c, c.error or "unreadable", "parse")
        else:
            try:
                failed = validator.check(c.atoms)
            except Exception as exc:  # noqa: BLE001 - a check that breaks is a rejection
                failed = ("check", f"validity check failed: {type(exc).__name__}: {exc}")
            if failed is None:
                valid.append(c)
                continue
            row = rejected_row(c, failed[1], failed[0])
        rejected.append((c.index, hashes[c.index], row, None))
    run.store.put(rejected)
    return valid


def _relax(run: _Screening, jobs: list[Candidate], hashes, workers, cluster) -> None:
    """Relax the valid candidates; every finished one is judged and stored at once."""
    from tqdm.auto import tqdm

    by_index = {c.index: c for c in jobs}
    bar = tqdm(
        total=len(jobs),
        desc="relax",
        unit=" structures",
        disable=not run.progress or not jobs,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    failed = [0]

    def on_result(i: int, res) -> None:
        row, rel = run.judge(by_index[i], res)
        run.store.put([(i, hashes[i], row, rel)])
        failed[0] += row["status"] == "failed"
        bar.set_postfix(failed=failed[0], refresh=False)
        bar.update(1)

    def on_error(i: int, reason: str, transient: bool = False) -> None:
        # a transient failure (a lost worker) is stored under a key that a re-run recomputes
        key = ("retry:" if transient else "") + hashes[i]
        run.store.put([(i, key, failed_row(by_index[i], reason), None)])
        failed[0] += 1
        bar.update(1)

    t = time.perf_counter()
    judge0 = run.timing["judge"]
    try:
        pairs = [(c.index, c.atoms) for c in jobs]
        if workers is None and cluster is None:
            relax_local(pairs, run.pot, run.config, on_result, on_error)
        elif pairs:
            from .cluster import relax_distributed

            relax_distributed(
                pairs, run.pot, run.config, on_result, on_error, workers=workers, address=cluster
            )
    finally:
        bar.close()
    run.timing["relax"] = time.perf_counter() - t - (run.timing["judge"] - judge0)


def _finish(run: _Screening, cands: list[Candidate]) -> tuple[list[dict], dict[int, Any]]:
    """Rows of every candidate from the store, with uniqueness and the final flags; and the
    relaxed structures (index -> ase.Atoms)."""
    from .novelty import find_unique
    from .report import finalize

    stored = {s.index: s for s in run.store.load([c.index for c in cands])}
    rows, relaxed = [], {}
    for c in cands:
        s = stored.get(c.index)
        row = dict(s.row) if s is not None else failed_row(c, "not processed (interrupted?)")
        row.update(index=c.index, source=c.source, db_id=None if s is None else s.db_id)
        if s is not None and s.relaxed is not None and row["status"] == "ok":
            relaxed[c.index] = decode_structure(s.relaxed)
        rows.append(row)
    ok = [r["index"] for r in rows if r["status"] == "ok"]
    dups = find_unique(
        [relaxed[i] for i in ok],
        preset=run.config.preset,
        energies_per_atom=[r["energy_per_atom"] for r in rows if r["status"] == "ok"],
    )
    duplicates = {i: (None if d is None else ok[d]) for i, d in zip(ok, dups)}
    finalize(rows, duplicates, run.config)
    return rows, relaxed


def _write(run: _Screening, rows, relaxed, store: StateStore, name: str, engine: str):
    from ase.calculators.singlepoint import SinglePointCalculator

    from .report import summarize, table, write_outputs

    df = table(rows)
    frames = []
    for r in rows:
        atoms = relaxed.get(r["index"])
        if atoms is None:
            continue
        atoms.info.update(index=r["index"], source=r["source"], converged=bool(r["converged"]))
        if r.get("e_above_hull") is not None:
            atoms.info["e_above_hull"] = r["e_above_hull"]
        atoms.calc = SinglePointCalculator(atoms, energy=r["energy"])
        frames.append(atoms)
    t = run.timing
    per_hour = t["relaxed_here"] / t["relax"] * 3600 if t["relax"] > 0 else None
    info = {
        "screen_id": store.screen_id,
        "model": name,
        "hull_model": run.hull_model,
        "database": None if run.db is None else _safe_url(run.db),
        "engine": engine,
        "novelty_preset": run.config.preset,
        "novelty_against": run.config.novelty_model or "all records",
        "novelty_assessed": run.db is not None,
        "settings": run.config.to_dict(),
        "reasons": dict(
            Counter(r.get("rule", "?") for r in rows if r["status"] != "ok").most_common()
        ),
        "notes": run.notes,
        "timing": dict(t, structures_per_hour=per_hour),
    }
    summary = summarize(df, run.config, info)
    paths = write_outputs(df, summary, frames, store.out_dir)
    return ScreenResult(df, summary, paths, store.screen_id, list(run.notes))
