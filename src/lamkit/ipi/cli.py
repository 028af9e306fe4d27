"""``lam ipi`` / ``python -m lamkit.ipi``: run an i-PI force client.

    lam ipi water.json                        # DeePMD-kit's dp_ipi JSON file, unchanged
    lam ipi -m model.pt -s conf.xyz --unix water          # /tmp/ipi_water
    lam ipi -m m0.pt m1.pt m2.pt -s conf.xyz --host localhost --port 31415   # a committee
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("json", nargs="?", default=None,
                   help="a dp_ipi JSON file (graph_file, coord_file, atom_type, use_unix, host, "
                   "port); command-line options below override its values")
    p.add_argument("-m", "--model", nargs="+", default=None,
                   help="model file(s); several: a committee (mean answered, members in extras)")
    p.add_argument("-s", "--structure", default=None,
                   help="the structure i-PI simulates (XYZ atom names or any ASE-readable file; "
                   "only the atom order and names are used)")
    p.add_argument("--atom-type", default=None,
                   help='JSON mapping of atom names to model types, e.g. \'{"OW": 0, "HW1": 1}\' '
                   "(default: element symbols in the model's type map)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unix", metavar="NAME", default=None,
                       help="UNIX socket NAME (i-PI's <address>; the file /tmp/ipi_NAME)")
    where.add_argument("--host", default=None, help="TCP host (default localhost)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 31415)")
    p.add_argument("--head", default=None, help="branch of a multi-task model")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for i-PI on the socket (default: forever)")
    p.add_argument("--connect-wait", type=float, default=30.0,
                   help="seconds to keep trying to connect while i-PI starts (default 30)")


def config_from_args(a: argparse.Namespace):
    """The driver settings: the JSON file's, with the command line on top."""
    from .config import DriverConfig, load_json, structure_names

    if a.json is None and (a.model is None or a.structure is None):
        raise ConfigError("give a dp_ipi JSON file, or both -m MODEL and -s STRUCTURE")
    base = load_json(a.json) if a.json else None
    atom_type = None
    if a.atom_type is not None:
        try:
            atom_type = json.loads(a.atom_type)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--atom-type: not valid JSON ({exc})") from None
        if not isinstance(atom_type, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in atom_type.values()):
            raise ConfigError("--atom-type: expected a JSON object of name: integer type")
    fields = dict(vars(base)) if base else {"atom_type": None, "source": "<command line>"}
    fields.pop("extra", None)
    if a.model is not None:
        fields["models"] = list(a.model)
    if a.structure is not None:
        fields["atom_names"] = structure_names(a.structure)
    if atom_type is not None:
        fields["atom_type"] = atom_type
    if a.unix is not None:
        fields.update(use_unix=True, host=a.unix)
    elif a.host is not None:
        fields.update(use_unix=False, host=a.host)
    elif base is None:
        fields.update(use_unix=False, host="localhost")
    for key in ("port", "head", "device", "timeout"):
        if getattr(a, key) is not None:
            fields[key] = getattr(a, key)
    return DriverConfig(**fields)


def run(a: argparse.Namespace) -> int:
    from .driver import IPIDriver

    conf = config_from_args(a)
    driver = IPIDriver(conf.models, conf)
    n = driver.serve(retry_s=a.connect_wait)
    print(f"lam ipi: {n} evaluations; i-PI closed the connection")
    return 0
