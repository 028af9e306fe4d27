"""Smooth switching function and the DeePMD environment matrix (PyTorch, differentiable)."""

from __future__ import annotations

import torch

from ..nn.rows import take_rows


def smooth_switch(r: torch.Tensor, rmin: float, rmax: float) -> torch.Tensor:
    """``u^3 (-6u^2 + 15u - 10) + 1`` with ``u = (clamp(r, rmin, rmax) - rmin)/(rmax - rmin)``:
    1 below ``rmin``, 0 above ``rmax``, twice continuously differentiable."""
    u = (torch.clamp(r, rmin, rmax) - rmin) / (rmax - rmin)
    # The reference's operation order, to the last bit: just inside rmax the value is a
    # difference of numbers near 1, and DPA-1's ``attn_dotr`` normalises the tiny env-matrix
    # rows that carry it (F.normalize's eps 1e-12), so rounding there shows in the forces.
    u2 = u * u
    return u2 * u * (-6 * u2 + 15 * u - 10) + 1


def gather_rows(ext: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``ext[f, index[f, ...]]`` for ext [nf, nall, d] and index [nf, ...] (-1 -> row 0):
    shape ``[nf, ..., d]``.

    Rows are taken from the frames stacked into one ``[nf * nall, d]`` matrix
    (:func:`lamkit.nn.rows.take_rows`): its backward (``index_add_``) is several times faster
    on CPU than the ``scatter_add_`` behind ``torch.gather`` along a middle axis.
    """
    nf, nall, d = ext.shape
    idx = index.clamp(min=0)
    if nf > 1:
        offset = torch.arange(0, nf * nall, nall, device=idx.device)
        idx = idx + offset.view((nf,) + (1,) * (idx.dim() - 1))
    rows = take_rows(ext.reshape(nf * nall, d), idx.reshape(-1))
    return rows.view(*index.shape, d)


def environment_matrix(
    ext_coord: torch.Tensor,
    nlist: torch.Tensor,
    rcut: float,
    rcut_smth: float,
    protection: float = 0.0,
    radial_only: bool = False,
    start: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Un-normalised environment matrix of every neighbour slot.

    Args:
        ext_coord: [nf, nall, 3] extended coordinates (locals first), Å.
        nlist: [nf, nloc, nnei] extended neighbour indices, -1 for an empty slot. Row ``i``
            belongs to centre atom ``start + i`` (``start`` > 0 when evaluating a chunk of
            centre atoms, see :mod:`lamkit.nn.chunking`).
    Returns:
        env [nf, nloc, nnei, 4] (or 1 if radial_only) ``[1/r, x/r^2, y/r^2, z/r^2] * sw``,
        diff [nf, nloc, nnei, 3] ``R_j - R_i`` (0 in empty slots), sw [nf, nloc, nnei, 1],
        mask [nf, nloc, nnei] bool.
    """
    nrow = nlist.shape[1]
    mask = nlist >= 0
    fmask = mask.unsqueeze(-1).to(ext_coord.dtype)
    centre = ext_coord[:, start : start + nrow, None, :]
    diff = (gather_rows(ext_coord, nlist) - centre) * fmask
    # torch.linalg.norm as the reference (bitwise: see smooth_switch); empty slots get
    # length 1 and a non-zero vector under the norm, so that its gradient stays finite
    safe = torch.where(mask.unsqueeze(-1), diff, torch.ones_like(diff))
    length = torch.where(mask.unsqueeze(-1), torch.linalg.norm(safe, dim=-1, keepdim=True), 1.0)
    sw = smooth_switch(length, rcut_smth, rcut) * fmask
    inv = 1 / (length + protection)
    if radial_only:
        env = inv * sw
    else:
        env = torch.cat([inv, diff / (length + protection) ** 2], dim=-1) * sw
    return env, diff, sw, mask
