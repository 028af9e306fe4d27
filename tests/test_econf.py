"""The electronic-configuration type embedding input (``use_econf_tebd``) equals the reference's
table for every element, and feeds the type embedding net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit.errors import ConfigError
from lamkit.nn.econf import ECONF_DIM, SYMBOLS, configuration, econf_table, econf_vector
from lamkit.nn.type_embedding import TypeEmbedNet

from .conftest import require_reference


def test_every_element_equals_the_reference_table():
    require_reference()
    from deepmd.utils.econf_embd import electronic_configuration_embedding as ref
    from deepmd.utils.econf_embd import normalized_electronic_configuration_embedding as nref

    assert list(ref) == list(SYMBOLS) and ECONF_DIM == 118
    for sym in SYMBOLS:
        np.testing.assert_array_equal(econf_vector(sym), ref[sym], err_msg=sym)
    np.testing.assert_allclose(econf_table(["O", "H", "Au"]), [nref[s] for s in ("O", "H", "Au")])


@pytest.mark.parametrize(
    "sym, electrons, unpaired",
    [("H", 1, 1), ("O", 8, 2), ("Fe", 26, 4), ("Cr", 24, 6), ("Gd", 64, 8), ("Og", 118, 0)],
)
def test_configurations_hold_the_electrons_and_hunds_rule(sym, electrons, unpaired):
    assert sum(configuration(sym).values()) == electrons
    v = econf_vector(sym).reshape(-1, 2)  # per orbital: (-1,-1) empty, (-1,1) single, (1,1) pair
    assert int(((v[:, 0] == -1) & (v[:, 1] == 1)).sum()) == unpaired


def test_unknown_element_is_a_clear_error():
    with pytest.raises(ConfigError, match="'Xx' is not an element"):
        econf_table(["O", "Xx"])


def test_type_embedding_reads_the_econf_vectors():
    net = TypeEmbedNet(2, 8, econf_type_map=["O", "H"])
    assert net.net.layers[0].matrix.shape == (ECONF_DIM, 8)
    assert "econf_inputs" not in net.state_dict()  # rebuilt from the type map, never saved
    table = net.table()
    inputs = torch.as_tensor(econf_table(["O", "H"]))
    torch.testing.assert_close(table[:2], inputs @ net.net.layers[0].matrix)
    assert torch.all(table[2] == 0)
    # the same weights on another type map: rows follow the elements, nothing to remap
    other = TypeEmbedNet(3, 8, econf_type_map=["H", "C", "O"])
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other.table()[[2, 0]], table[:2])
