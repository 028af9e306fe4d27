"""On a CPU the inference budget fits the frames per call to the memory still available,
measured on a first one-frame call: the kernel kills a process that runs out of memory, so the
halving retry after an error cannot protect it."""

from __future__ import annotations

import numpy as np

from lamkit.infer import budget as budget_mod
from lamkit.infer import deep_eval
from lamkit.infer.budget import AtomBudget
from lamkit.testing.factories import make_dpa1


def test_fit_host_memory_caps_at_half_the_available_memory():
    b = AtomBudget(1024)
    b.fit_host_memory(bytes_per_atom=25e6, available=10 * 2**30)  # 25 MB/atom, 10 GiB free
    assert b.atoms == int(0.5 * 10 * 2**30 / 25e6) and not b.needs_host_check
    b = AtomBudget(1024)
    b.fit_host_memory(bytes_per_atom=1e3, available=10 * 2**30)  # plenty: unchanged
    assert b.atoms == 1024
    b = AtomBudget(1024)
    b.fit_host_memory(bytes_per_atom=1e6, available=None)  # unknown: unchanged
    assert b.atoms == 1024


def test_deep_pot_probes_one_frame_then_fits(monkeypatch, tmp_path):
    from lamkit.infer import DeepPot

    model = make_dpa1()
    dp = DeepPot(model)
    calls = []
    real = dp._eval_chunk

    def spy(coords, *args, **kw):
        calls.append(len(coords))
        return real(coords, *args, **kw)

    monkeypatch.setattr(dp, "_eval_chunk", spy)
    grow = iter([0, 10**9])  # the peak rises by 1 GB during the probe
    monkeypatch.setattr(deep_eval, "peak_resident_bytes", lambda: next(grow))
    monkeypatch.setattr(deep_eval, "resident_bytes", lambda: 0)
    monkeypatch.setattr(deep_eval, "available_bytes", lambda: 6 * 10**9)
    rng = np.random.default_rng(0)
    natoms = 5
    coord = rng.uniform(0, 4, (7, natoms * 3))
    atype = np.array([0, 1, 0, 1, 1])[:natoms] % len(dp.get_type_map())
    dp.eval(coord, None, atype)
    per_atom = 10**9 / natoms
    cap = int(0.5 * 6 * 10**9 / per_atom)  # 15 atoms: 3 frames per call
    assert dp.budget.atoms == cap and calls == [1, 3, 3]
    assert budget_mod.AtomBudget(8).needs_host_check
