"""The crystal database's HTTP service, writing: API keys, posted records and uploaded files
landing in the database, malformed records and files, oversized requests, and concurrent
readers with a writer on a real uvicorn server. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
import json
import math
import threading

import pytest
from pymatgen.core import Structure

from lamkit.db.service import create_app

from .db_data import (
    API,
    KEY,
    KINDS,
    api_ids,
    bcc,
    client_for,
    core_ids,
    fails,
    fcc,
    ok,
    running_server,
    same_structure,
    serving,
)


@pytest.fixture(scope="module", params=KINDS)
def served(request):
    with serving(request.param) as s:
        yield s


# ---------------------------------------------------------------------------- writing
def fe_ni(i: int, energy: float | None = None) -> dict:
    """A distinct Fe-Ni cell as a posted record."""
    a = 3.50 + 0.01 * i
    item = {
        "lattice": [[a, 0, 0], [0, a, 0], [0, 0, a]],
        "species": ["Fe", "Ni", "Ni", "Ni"],
        "frac_coords": [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        "model": "toy",
        "tags": ["posted"],
    }
    if energy is not None:
        item["energy"] = energy
    return item


def test_writes_need_a_valid_key(served):
    db, c = served.db, served.client
    before = db.count()
    r = c.post(f"{API}/structures", json=fe_ni(0))
    fails(r, 401, "X-API-Key")
    assert r.headers["www-authenticate"] == "X-API-Key"
    fails(
        c.post(f"{API}/structures", json=fe_ni(0), headers={"X-API-Key": "wrong"}),
        403,
        "not hold a valid key",
    )
    fails(c.post(f"{API}/structures", json=fe_ni(0), headers={"X-API-Key": KEY + "x"}), 403)
    fails(c.post(f"{API}/import", files={"file": ("a.cif", b"data_x\n")}), 401)
    fails(c.delete(f"{API}/structures/1"), 401)
    fails(c.delete(f"{API}/structures/1", headers={"X-API-Key": "wrong"}), 403)
    # a server started without keys refuses every write
    closed = create_app(db, keys_from_environment=False)
    with client_for(closed) as c2:
        fails(
            c2.post(f"{API}/structures", json=fe_ni(0), headers={"X-API-Key": KEY}),
            403,
            "without API keys",
        )
        assert ok(c2.get(API))["writes"] is False
    assert db.count() == before and db.get(1) is not None


def test_posted_records_land_in_the_database(served):
    db, c = served.db, served.client
    key = {"X-API-Key": KEY}
    body = ok(
        c.post(
            f"{API}/structures", json={"records": [fe_ni(1, -30.0), fe_ni(2, -29.0)]}, headers=key
        ),
        201,
    )
    assert body["submitter"] == "bob" and body["duplicates"] == 0 and body["rejected"] == []
    ids = body["added"]
    assert len(ids) == 2
    for rid, energy in zip(ids, (-30.0, -29.0)):
        rec = db.get(rid)
        assert (rec.submitter, rec.energy, rec.model, rec.formula) == (
            "bob",
            energy,
            "toy",
            "FeNi3",
        )
        assert rec.tags == ["posted"]
        assert ok(c.get(f"{API}/structures/{rid}"))["energy"] == energy
    assert api_ids(c, {"submitter": "bob", "chemsys": "Fe-Ni"}) == ids
    # posting the same again stores nothing new
    again = ok(
        c.post(f"{API}/structures", json=[fe_ni(1, -30.0), fe_ni(2, -29.0)], headers=key), 201
    )
    assert again["added"] == [] and again["duplicates"] == 2
    # a bare single record, the record JSON of GET /structures/{id}
    record_json = json.loads(c.get(f"{API}/structures/{ids[0]}/file?format=json").text)
    record_json["structure"]["lattice"][0][0] += 0.2  # a new structure
    record_json["energy"] = -28.0
    one = ok(c.post(f"{API}/structures", json=record_json, headers=key), 201)["added"]
    assert db.get(one[0]).lattice[0][0] == pytest.approx(3.71)
    # delete
    assert ok(c.delete(f"{API}/structures/{one[0]}", headers=key)) == {"deleted": one[0]}
    assert db.get(one[0]) is None
    fails(c.get(f"{API}/structures/{one[0]}"), 404)
    fails(c.delete(f"{API}/structures/{one[0]}", headers=key), 404)


def test_stats_tell_a_model_named_none_from_no_model(served):
    """A model literally named "None" and records without a model are counted apart (the
    core keys the latter by None, which JSON would also spell "None")."""
    c, key = served.client, {"X-API-Key": KEY}

    def fe(a: float, **extra) -> dict:
        return {"lattice": [[a, 0, 0], [0, a, 0], [0, 0, a]], "species": ["Fe", "Fe"]} | {
            "frac_coords": [[0, 0, 0], [0.5, 0.5, 0.5]],
            **extra,
        }

    before = ok(c.get(f"{API}/stats"))
    posted = [fe(2.861, model="None", energy=-16.0), fe(2.862), fe(2.863)]
    body = ok(c.post(f"{API}/structures", json=posted, headers=key), 201)
    assert len(body["added"]) == 3
    after = ok(c.get(f"{API}/stats"))
    assert after["by_model"].get("None", 0) == before["by_model"].get("None", 0) + 1
    assert after["without_model"] == before["without_model"] + 2
    assert after["by_submitter"]["bob"] == before["by_submitter"].get("bob", 0) + 3
    assert after["without_submitter"] == before["without_submitter"] == 0
    assert sum(after["by_model"].values()) + after["without_model"] == after["records"]


def _cif(structure: Structure) -> bytes:
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure)).encode()


def test_uploaded_files_land_in_the_database(served):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Poscar

    db, c = served.db, served.client
    key = {"X-API-Key": KEY}
    fe = bcc("Fe", 2.87)
    body = ok(
        c.post(
            f"{API}/import",
            files={"file": ("fe.cif", _cif(fe), "chemical/x-cif")},
            data={"energy": "-16.6", "model": "toy", "tags": "upload,cif"},
            headers=key,
        ),
        201,
    )
    (rid,) = body["added"]
    rec = db.get(rid)
    assert same_structure(rec.structure, fe)
    assert (rec.energy, rec.model, rec.source, sorted(rec.tags)) == (
        -16.6,
        "toy",
        "fe.cif",
        ["cif", "upload"],
    )
    ni = fcc("Ni", 3.52)
    poscar = Poscar(ni).get_str().encode()
    (rid,) = ok(c.post(f"{API}/import", files={"file": ("POSCAR", poscar)}, headers=key), 201)[
        "added"
    ]
    assert same_structure(db.get(rid).structure, ni)
    frames = []
    for i in range(3):
        atoms = AseAtomsAdaptor.get_atoms(bcc("Fe", 2.80 + 0.02 * i))
        atoms.info["energy"] = -16.0 - i
        frames.append(atoms)
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    added = ok(
        c.post(
            f"{API}/import",
            files={"file": ("fe.extxyz", buf.getvalue().encode())},
            data={"model": "toy"},
            headers=key,
        ),
        201,
    )["added"]
    assert [db.get(i).energy for i in added] == [-16.0, -17.0, -18.0]


BAD_FILES = [
    ("bad.cif", b"data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n", ["bad.cif"]),
    ("empty.cif", b"", ["empty.cif"]),
    ("words.cif", b"this is not a crystal\n" * 20, ["words.cif"]),
    (
        "atoms.cif",
        b"data_x\n_cell_length_a 3\n_cell_length_b 3\n_cell_length_c 3\n"
        b"_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        b"loop_\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        b"_atom_site_fract_z\nQq 0 0 0\n",
        ["atoms.cif"],
    ),
    ("bin.cif", b"\xff\xfe\x00\x01garbage", ["bin.cif", "UTF-8"]),
    ("POSCAR", b"Fe\n1.0\n1 0 0\n0 1 0\n", ["POSCAR"]),
    ("x.json", b"{not json", ["x.json", "JSON"]),
    ("x.exe", b"MZ", ["x.exe", "format"]),
]


@pytest.mark.parametrize("name,content,words", BAD_FILES, ids=[n for n, *_ in BAD_FILES])
def test_bad_files_are_refused(served, name, content, words):
    before = served.db.count()
    fails(
        served.client.post(
            f"{API}/import", files={"file": (name, content)}, headers={"X-API-Key": KEY}
        ),
        422,
        *words,
    )
    assert served.db.count() == before


GOOD = {"lattice": [[3, 0, 0], [0, 3, 0], [0, 0, 3]], "species": ["Co"], "frac_coords": [[0] * 3]}
#: (posted JSON, words of the 422 message)
BAD_RECORDS = [
    (GOOD | {"energy": "NaN"}, ["body.energy", "number"]),
    (GOOD | {"energy": True}, ["body.energy"]),
    (GOOD | {"species": ["Qq"]}, ["body.species[0]", "'Qq'"]),
    (GOOD | {"species": ["Co", "Co"]}, ["body.frac_coords", "2 rows"]),
    (GOOD | {"lattice": [[3, 0, 0], [0, 3, 0], [3, 3, 0]]}, ["body.lattice", "coplanar"]),
    (GOOD | {"lattice": [[3, 0], [0, 3, 0], [0, 0, 3]]}, ["body.lattice[0]", "3 numbers"]),
    (GOOD | {"frac_coords": [["a", 0, 0]]}, ["body.frac_coords[0][0]", "number"]),
    (GOOD | {"species": ["Co", "Co"], "frac_coords": [[0, 0, 0], [0, 0, 0.0001]]}, ["overlapping"]),
    (GOOD | {"tags": "one"}, ["body.tags", "list of strings"]),
    (GOOD | {"model": 5}, ["body.model", "string"]),
    (GOOD | {"model": "a\x00b"}, ["body.model", "control character"]),
    ({"lattice": GOOD["lattice"]}, ["body", "expected 'structure'"]),
    ({"records": [GOOD, GOOD | {"species": ["Xx"]}]}, ["records[1].species[0]", "Xx"]),
    ({"structure": "{oops"}, ["body.structure", "not valid JSON"]),
    ({"structure": {"lattice": GOOD["lattice"], "sites": []}}, ["body.structure.sites"]),
    (GOOD | {"lattice": [[1e300, 0, 0], [0, 3, 0], [0, 0, 3]]}, ["body.lattice[0][0]", "10000"]),
    (GOOD | {"frac_coords": [[0, 0, -1e300]]}, ["body.frac_coords[0][2]", "beyond ±1000"]),
    (GOOD | {"energy": 10**400}, ["body.energy", "finite number"]),
    (GOOD | {"tags": ["\ud800"]}, ["body.tags[0]", "lone surrogate"]),
    ([], ["body", "non-empty"]),
    ("just text", ["body", "JSON object"]),
]


@pytest.mark.parametrize("item,words", BAD_RECORDS, ids=[str(i)[:50] for i, _ in BAD_RECORDS])
def test_bad_records_are_refused(served, item, words):
    before = served.db.count()
    body = json.dumps(item).encode()  # ASCII escapes: a lone surrogate gets through as sent
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    fails(served.client.post(f"{API}/structures", content=body, headers=headers), 422, *words)
    assert served.db.count() == before


def test_invalid_json_body(served):
    c, key = served.client, {"X-API-Key": KEY}
    json_type = {"Content-Type": "application/json"}
    fails(
        c.post(f"{API}/structures", content=b"{not json", headers=key | json_type),
        422,
        "body",
        "not valid JSON",
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    fails(c.post(f"{API}/structures", content=deep, headers=key | json_type), 400, "body")
    fails(
        c.post(f"{API}/structures", content=b"hello", headers=key | {"Content-Type": "text/plain"}),
        415,
        "Content-Type: application/json",
        "text/plain",
    )


def test_oversized_requests_get_413(served):
    db = served.db
    app = create_app(
        db,
        api_keys=[f"bob:{KEY}"],
        keys_from_environment=False,
        max_body_bytes=20_000,
        max_atoms=50,
        max_records_per_post=3,
    )
    key = {"X-API-Key": KEY}
    before = db.count()
    with client_for(app) as c:
        big = {"records": [GOOD | {"source": "x" * 30_000}]}
        fails(c.post(f"{API}/structures", json=big, headers=key), 413, "20000 bytes")
        fails(c.post(f"{API}/structures", json=big), 413)  # refused before the key is read

        def chunks():  # no Content-Length: cut off while streaming
            for _ in range(10):
                yield b" " * 5000

        fails(
            c.post(
                f"{API}/structures",
                content=chunks(),
                headers=key | {"Content-Type": "application/json"},
            ),
            413,
            "20000 bytes",
        )
        fails(c.post(f"{API}/import", files={"file": ("big.cif", b"#" * 30_000)}, headers=key), 413)
        fails(
            c.post(f"{API}/structures", json=[GOOD] * 4, headers=key), 413, "4 records", "at most 3"
        )
        n = 60
        many = {
            "lattice": [[30, 0, 0], [0, 30, 0], [0, 0, 30]],
            "species": ["Co"] * n,
            "frac_coords": [[i / n, 0, 0] for i in range(n)],
        }
        fails(c.post(f"{API}/structures", json=many, headers=key), 413, "60 atoms", "at most 50")
        # within the limits all is well
        assert ok(c.get(f"{API}/structures", params={"limit": 100000}))["limit"] == 500
    assert db.count() == before


# ---------------------------------------------------------------------------- concurrency
def test_concurrent_readers_and_a_writer(served):
    """A real server (uvicorn) with four reading threads and one writing thread: every read
    answers 200 with a consistent page, and every write lands."""
    import httpx

    db = served.db
    app = create_app(db, api_keys=[f"bob:{KEY}"], keys_from_environment=False)
    n_writes = 12
    errors: list[str] = []
    done = threading.Event()
    nacl_ids = core_ids(db, chemsys="Cl-Na")
    hull_stable = {e["id"] for e in db.hull("Cl-Na").to_dict()["entries"] if e["stable"]}

    def writer(base: str) -> None:
        try:
            with httpx.Client(base_url=base, timeout=60) as h:
                for i in range(n_writes):
                    a = 2.40 + 0.01 * i
                    item = {
                        "lattice": [[a, 0, 0], [0, a, 0], [0, 0, a]],
                        "species": ["Co"],
                        "frac_coords": [[0, 0, 0]],
                        "energy": -7.0 - 0.01 * i,
                        "model": "conc",
                    }
                    r = h.post(f"{API}/structures", json=item, headers={"X-API-Key": KEY})
                    if r.status_code != 201 or len(r.json()["added"]) != 1:
                        errors.append(f"write {i}: {r.status_code} {r.text[:200]}")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"writer: {exc!r}")
        finally:
            done.set()

    def reader(base: str, k: int) -> None:
        last = 0
        rounds = 0
        try:
            with httpx.Client(base_url=base, timeout=60) as h:
                while not done.is_set() or rounds < 2:
                    rounds += 1
                    seen, cursor = [], None
                    while True:  # walk the growing Co set page by page
                        params = {"model": "conc", "limit": 3, "order_by": "energy_per_atom"}
                        r = h.get(
                            f"{API}/structures",
                            params=params | ({"cursor": cursor} if cursor else {}),
                        )
                        if r.status_code != 200:
                            errors.append(f"reader {k}: {r.status_code} {r.text[:200]}")
                            return
                        body = r.json()
                        seen += [x["id"] for x in body["records"]]
                        if any(x["chemsys"] != "Co" for x in body["records"]):
                            errors.append(f"reader {k}: a non-Co record in {body['records']}")
                        cursor = body["next_cursor"]
                        if cursor is None:
                            break
                    if len(seen) != len(set(seen)):
                        errors.append(f"reader {k}: a record twice in one walk: {seen}")
                    if len(seen) < last:
                        errors.append(f"reader {k}: records went missing ({last} -> {seen})")
                    last = len(seen)
                    got = [
                        x["id"]
                        for x in h.get(
                            f"{API}/structures", params={"chemsys": "Cl-Na", "limit": 100}
                        ).json()["records"]
                    ]
                    if got != nacl_ids:
                        errors.append(f"reader {k}: Cl-Na changed: {got}")
                    hull = h.get(f"{API}/hull/Cl-Na").json()
                    if {e["id"] for e in hull["stable"]} != hull_stable:
                        errors.append(f"reader {k}: Cl-Na hull changed")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"reader {k}: {exc!r}")

    with running_server(app) as base:
        threads = [threading.Thread(target=reader, args=(base, k)) for k in range(4)]
        threads.append(threading.Thread(target=writer, args=(base,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        assert not errors, "\n".join(errors[:10])
        with httpx.Client(base_url=base) as h:
            body = h.get(f"{API}/structures", params={"model": "conc", "count": "true"}).json()
    assert body["count"] == n_writes == db.count(model="conc")
    # the writes updated the Co hull as they landed: the lowest energy is the reference
    rows = db.query(model="conc", order_by="energy_per_atom", limit=100).records
    assert rows[0].e_above_hull == pytest.approx(0, abs=1e-9)
    assert rows[-1].e_above_hull == pytest.approx(0.01 * (n_writes - 1), abs=1e-9)
    assert math.isclose(rows[-1].energy, -7.0)
