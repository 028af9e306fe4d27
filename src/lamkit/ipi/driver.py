"""An i-PI force client: i-PI sends positions and the cell, lamkit answers energy, forces and
virial (and, for a committee of models, every member's values in i-PI's committee extras).

The socket protocol is i-PI's (ASE's :class:`~ase.calculators.socketio.IPIProtocol` speaks it,
including the unit conversion to Hartree and Bohr). A committee answers the mean energy, forces
and virial, and in the extras a JSON object with ``committee_pot`` (Hartree),
``committee_force`` (Hartree/Bohr, one flat list per member) and ``committee_virial`` (Hartree,
nine values per member), which an i-PI ``<ffcommittee>`` with ``<parse_json>true</parse_json>``
reads (it computes the mean, the ``committee_uncertainty`` and any rescaling itself).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Sequence

import numpy as np
from ase import units

from ..errors import ConfigError, LamkitError
from ..infer.deep_pot import DeepPot
from .config import DriverConfig

log = logging.getLogger("lamkit.ipi")


class IPIDriver:
    """Energy, forces and virial of the atoms i-PI sends, from one model or a committee.

    Args:
        models: model files (anything :class:`DeepPot` reads) or ``DeepPot`` objects; with more
            than one, the committee's mean is the answer and its members go to the extras.
        config: atom names and their types (see :class:`DriverConfig`).
    """

    def __init__(self, models: Sequence, config: DriverConfig):
        self.config = config
        self.pots = [m if isinstance(m, DeepPot) else DeepPot(m, head=config.head,
                                                             device=config.device)
                     for m in models]
        names = [str(m) for m in models]
        self.types = config.types_for(self.pots[0].get_type_map(), names[0])
        for pot, name in zip(self.pots[1:], names[1:]):
            types = config.types_for(pot.get_type_map(), name)
            if not np.array_equal(types, self.types) or pot.get_type_map() != \
                    self.pots[0].get_type_map():
                raise ConfigError(
                    f"committee models disagree on the type map: {names[0]} has "
                    f"{self.pots[0].get_type_map()}, {name} has {pot.get_type_map()}")
        self.natoms = len(self.types)
        self.calls = 0

    def compute(self, cell: np.ndarray, positions: np.ndarray) -> tuple:
        """Energy (eV), forces [natoms, 3] (eV/Å), virial [3, 3] (eV) and the extras bytes for
        ``positions`` (Å) in ``cell`` (rows, Å)."""
        if positions.shape != (self.natoms, 3):
            raise LamkitError(
                f"i-PI sent {positions.shape[0]} atoms but the structure file has "
                f"{self.natoms}")
        es, fs, vs = [], [], []
        for pot in self.pots:
            e, f, v = pot.eval(positions[None], np.asarray(cell, float).reshape(1, 9),
                               self.types)
            es.append(float(e.reshape(-1)[0]))
            fs.append(f.reshape(self.natoms, 3))
            vs.append(v.reshape(3, 3))
        self.calls += 1
        energy, forces, virial = float(np.mean(es)), np.mean(fs, 0), np.mean(vs, 0)
        if len(self.pots) == 1:
            return energy, forces, virial, b"\0"
        extras = {
            "committee_pot": [e / units.Ha for e in es],
            "committee_force": [(f * units.Bohr / units.Ha).reshape(-1).tolist() for f in fs],
            "committee_virial": [(v / units.Ha).reshape(-1).tolist() for v in vs],
        }
        return energy, forces, virial, json.dumps(extras).encode()

    def serve(self, retry_s: float = 30.0) -> int:
        """Connect to i-PI and answer until it says EXIT or closes the socket. Returns the
        number of evaluations. Waits up to ``retry_s`` for the server to come up."""
        from ase.calculators.socketio import IPIProtocol, SocketClosed, actualunixsocketname

        c = self.config
        deadline = time.monotonic() + retry_s
        while True:
            try:
                if c.use_unix:
                    sock = socket.socket(socket.AF_UNIX)
                    target = actualunixsocketname(c.host)
                else:
                    sock = socket.socket(socket.AF_INET)
                    target = (c.host, c.port)
                sock.connect(target)
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise LamkitError(f"cannot connect to i-PI at {target}: {exc}") from None
                time.sleep(0.2)
        sock.settimeout(c.timeout)
        log.info("connected to i-PI at %s (%d atoms, %d model(s))", target, self.natoms,
                 len(self.pots))
        proto = IPIProtocol(sock)
        state, result, t0 = "READY", None, time.perf_counter()
        try:
            while True:
                try:
                    msg = proto.recvmsg()
                except SocketClosed:
                    break
                if msg == "EXIT":
                    break
                if msg == "STATUS":
                    proto.sendmsg(state)
                elif msg == "INIT":
                    proto.recvinit()
                    state = "READY"
                elif msg == "POSDATA":
                    cell, _icell, positions = proto.recvposdata()
                    result = self.compute(cell, positions)
                    state = "HAVEDATA"
                elif msg == "GETFORCE":
                    if result is None:
                        raise LamkitError("i-PI asked for forces before sending positions")
                    energy, forces, virial, extras = result
                    proto.sendforce(energy, forces, virial,
                                    morebytes=np.frombuffer(extras, dtype=np.byte))
                    state, result = "READY", None
                    if c.verbose or self.calls % 1000 == 0:
                        rate = self.calls / max(time.perf_counter() - t0, 1e-9)
                        log.info("%d evaluations, %.1f/s, energy %.6f eV", self.calls, rate,
                                 energy)
                else:
                    raise LamkitError(f"i-PI sent an unknown message {msg!r}")
        except (ConnectionError, TimeoutError) as exc:
            raise LamkitError(f"the connection to i-PI broke: {exc}") from None
        finally:
            sock.close()
        log.info("i-PI closed the connection after %d evaluations", self.calls)
        return self.calls
