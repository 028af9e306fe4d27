"""Screening inputs: files, folders, archives, database queries and objects; hostile files
(garbage, truncated, NaN, overlapping, absurd, unknown elements, empty, path traversal, bombs,
slow) become rejections with reasons, and a screening over the mix never crashes."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from lamkit.screen import ScreenConfig, ScreenError, screen
from lamkit.screen import inputs as inputs_mod
from lamkit.screen.inputs import collect

CIF_HEAD = """data_test
_cell_length_a {a}
_cell_length_b {a}
_cell_length_c {a}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
_symmetry_Int_Tables_number 1
loop_
_symmetry_equiv_pos_as_xyz
  'x, y, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
"""


def cif(a, sites) -> str:
    lines = [f"{el}{k} {el} {x} {y} {z} 1" for k, (el, x, y, z) in enumerate(sites)]
    return CIF_HEAD.format(a=a) + "\n".join(lines) + "\n"


FCC = [("Cu", 0, 0, 0), ("Cu", 0, 0.5, 0.5), ("Cu", 0.5, 0, 0.5), ("Cu", 0.5, 0.5, 0)]


def cif_bytes(atoms) -> bytes:
    buf = io.BytesIO()
    ase.io.write(buf, atoms, format="cif")
    return buf.getvalue()


@pytest.fixture
def hostile(tmp_path):
    """A folder of good and hostile files; returns (folder, {name: expected fragment or None})."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    good = cif(3.6, FCC)
    files = {
        "good.cif": (good, None),
        "garbage.cif": (np.random.default_rng(0).bytes(700), "invalid CIF"),
        "truncated.cif": (good[: len(good) // 2], "invalid CIF"),
        "nan.cif": (cif(3.6, FCC[:3] + [("Cu", "nan", 0.5, 0)]), "NaN"),
        "overlap.cif": (cif(3.6, [("Cu", 0, 0, 0), ("Cu", 0.02, 0, 0)]), "too close"),
        "absurd.cif": (cif(1e9, FCC), "volume per atom"),
        "unknown.cif": (cif(3.6, [("Xx", 0, 0, 0)]), ""),
        "empty.xyz": ("", "empty file"),
        "noise.extxyz": (np.random.default_rng(1).bytes(300), "cannot read file"),
        "sub/POSCAR": (None, None),
        "sub/two.extxyz": (None, None),
    }
    for name, (content, _) in files.items():
        if content is None:
            continue
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(d / name, mode) as fh:
            fh.write(content)
    ase.io.write(d / "sub" / "POSCAR", bulk("Au", "fcc", a=4.1), format="vasp")
    ase.io.write(d / "sub" / "two.extxyz", [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.1)])
    with zipfile.ZipFile(d / "archive.zip", "w") as zf:
        zf.writestr("../evil.cif", good)
        zf.writestr("/etc/abs.cif", good)
        zf.writestr("ok/inner.cif", good)
        zf.writestr("notes.txt", "not a structure")
    with open(d / "README", "w") as fh:  # not a structure file: ignored in folders
        fh.write("hello")
    return d


def test_folder_walk_order_sources_and_reasons(hostile):
    cands = collect([hostile], ScreenConfig(parse_workers=2))
    by = {c.source.split("in/", 1)[1]: c for c in cands}
    assert list(by) == [
        "absurd.cif",
        "archive.zip:../evil.cif",
        "archive.zip:/etc/abs.cif",
        "archive.zip:ok/inner.cif",
        "empty.xyz",
        "garbage.cif",
        "good.cif",
        "nan.cif",
        "noise.extxyz",
        "overlap.cif",
        "sub/POSCAR",
        "sub/two.extxyz[0]",
        "sub/two.extxyz[1]",
        "truncated.cif",
        "unknown.cif",
    ]
    assert [c.index for c in cands] == list(range(len(cands)))
    assert "escapes the archive" in by["archive.zip:../evil.cif"].error
    assert "absolute member path" in by["archive.zip:/etc/abs.cif"].error
    assert by["archive.zip:ok/inner.cif"].atoms.get_chemical_formula() == "Cu4"
    assert by["empty.xyz"].error == "empty file"
    assert "invalid CIF" in by["garbage.cif"].error
    assert "invalid CIF" in by["truncated.cif"].error
    assert by["good.cif"].atoms is not None and by["good.cif"].error is None
    assert by["sub/POSCAR"].atoms.get_chemical_formula() == "Au"
    assert by["sub/two.extxyz[1]"].atoms.get_chemical_formula() == "Au"
    assert not any("README" in s or "notes.txt" in s for s in by)
    # the same candidates without parser processes
    same = collect([hostile], ScreenConfig(parse_workers=0))
    assert [(c.source, c.error) for c in same] == [(c.source, c.error) for c in cands]
    assert [c.input_hash() for c in same] == [c.input_hash() for c in cands]


def test_screening_a_hostile_mix_never_crashes(hostile, tmp_path):
    res = screen([hostile], "emt", out_dir=hostile / "out", progress=False)
    # a second run does not read its own output folder (relaxed.extxyz, results.json)
    assert (
        screen([hostile], "emt", out_dir=hostile / "out", progress=False).summary["timing"][
            "computed"
        ]
        == 0
    )
    df = res.table
    rows = {s.split("in/", 1)[1]: r for s, (_, r) in zip(df.source, df.iterrows())}
    for name, fragment in {
        "garbage.cif": "invalid CIF",
        "truncated.cif": "invalid CIF",
        "overlap.cif": "too close",
        "absurd.cif": "volume per atom",
        "empty.xyz": "empty file",
        "noise.extxyz": "cannot read",
        "archive.zip:../evil.cif": "escapes",
    }.items():
        assert rows[name]["status"] == "rejected", name
        assert fragment in rows[name]["reason"], (name, rows[name]["reason"])
    # NaN coordinates and unknown elements: refused by the reader or by the rules
    assert rows["nan.cif"]["status"] == "rejected" and rows["nan.cif"]["reason"]
    assert rows["unknown.cif"]["status"] == "rejected" and rows["unknown.cif"]["reason"]
    for name in ("good.cif", "sub/POSCAR", "sub/two.extxyz[0]", "archive.zip:ok/inner.cif"):
        assert rows[name]["status"] == "ok" and rows[name]["converged"], name
    assert res.summary["counts"]["inputs"] == len(df)


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_archive_limits_and_bombs(tmp_path, monkeypatch):
    good = cif(3.6, FCC).encode()
    _zip(tmp_path / "big.zip", {"a.cif": good, "b.cif": good + b"#" * 20_000})
    cands = collect([tmp_path / "big.zip"], ScreenConfig(max_file_bytes=5_000, parse_workers=0))
    assert cands[0].atoms is not None
    assert "exceeds the 5000 byte limit" in cands[1].error
    cands = collect([tmp_path / "big.zip"], ScreenConfig(max_archive_bytes=1_000, parse_workers=0))
    assert cands[0].atoms is not None  # the first member fits in the archive's budget
    assert "total byte limit" in cands[1].error
    # a member that claims a huge compression ratio is not even extracted
    _zip(tmp_path / "bomb.zip", {"zeros.cif": b"\0" * (2 << 20), "ok.cif": good})
    monkeypatch.setattr(inputs_mod, "MAX_RATIO", 50)
    cands = collect([tmp_path / "bomb.zip"], ScreenConfig(parse_workers=0))
    assert "decompression bomb" in cands[0].error and cands[1].atoms is not None


def test_tar_links_and_gzip(tmp_path):
    good = cif(3.6, FCC).encode()
    with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("link.cif")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
        info = tarfile.TarInfo("dir/../../up.cif")
        info.size = len(good)
        tf.addfile(info, io.BytesIO(good))
        info = tarfile.TarInfo("dir/fine.cif")
        info.size = len(good)
        tf.addfile(info, io.BytesIO(good))
    import gzip

    with gzip.open(tmp_path / "one.extxyz.gz", "wb") as fh:
        buf = io.StringIO()
        ase.io.write(buf, bulk("Au"), format="extxyz")
        fh.write(buf.getvalue().encode())
    cands = collect([tmp_path / "set.tar.gz", tmp_path / "one.extxyz.gz"], ScreenConfig())
    src = [c.source.rsplit("/", 1)[-1] if ":" not in c.source else c.source.split(":", 1)[1]
           for c in cands]  # fmt: skip
    assert src == ["link.cif", "dir/../../up.cif", "dir/fine.cif", "one.extxyz"]
    assert "not a regular file" in cands[0].error
    assert "escapes" in cands[1].error
    assert cands[2].atoms is not None and cands[3].atoms.get_chemical_formula() == "Au"
    assert not (tmp_path.parent / "up.cif").exists()


def test_slow_file_times_out_and_the_rest_is_parsed(tmp_path):
    frame = 'Lattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\n'
    (tmp_path / "a_slow.extxyz").write_text(("1\n" + frame) * 40_000)
    (tmp_path / "b_fine.cif").write_text(cif(3.6, FCC))
    cands = collect([tmp_path], ScreenConfig(parse_timeout=0.3, parse_workers=1))
    assert len(cands) == 2
    assert "timed out after 0.3 s" in cands[0].error
    assert cands[1].atoms is not None


def test_objects_queries_and_hashes(tmp_path):
    from pymatgen.core import Lattice, Structure

    from lamkit.db import CrystalDB

    db = CrystalDB(tmp_path / "db.sqlite").init()
    try:
        db.import_records([(bulk("Au", "fcc", a=4.1), -3.0), (bulk("Cu", "fcc", a=3.6), -3.5)])
        s = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
        cands = collect([bulk("Ni"), s, {"db_query": {"elements": ["Au"]}}, {"lattice": 1}], db=db)
        assert [c.source for c in cands] == ["atoms[0]", "object[1]", "lam-1", "object[2]"]
        assert cands[1].atoms.get_chemical_formula() == "Cu"
        assert cands[2].atoms.get_chemical_formula() == "Au"
        assert cands[3].atoms is None and "unrecognised" in cands[3].error
        with pytest.raises(ScreenError, match="needs a database"):
            collect([{"db_query": {"elements": ["Au"]}}])
        with pytest.raises(ScreenError, match="db_query"):
            collect([{"db_query": {"elements": ["Qq"]}}], db=db)
    finally:
        db.close()
    a, b = bulk("Cu"), bulk("Cu")
    ha, hb = collect([a, b])
    assert ha.input_hash() == hb.input_hash()
    b.positions[0, 0] += 1e-12
    assert collect([b])[0].input_hash() != ha.input_hash()
    assert collect([tmp_path / "missing.cif"])[0].error == "no such file or folder"
    assert not os.path.exists(tmp_path / "evil.cif")


def test_parser_pool_never_hands_out_more_jobs_than_remain(tmp_path):
    """Two parsers that finish together while one file is left must not both take it (a race
    once seen in CI: "pop from an empty deque")."""
    from lamkit.screen.parsing import parse_jobs

    paths = []
    for i in range(3):
        p = tmp_path / f"c{i}.cif"
        p.write_bytes(cif_bytes(bulk("Cu", "fcc", a=3.6 + 0.01 * i)))
        paths.append((str(p), "file"))
    for _ in range(15):
        out = parse_jobs(paths, workers=2)
        assert [len(frames) for frames in out] == [1, 1, 1]
        assert all(err is None for frames in out for _, _, err in frames)
