"""The scripted module that ``lam freeze --format pth`` writes (:mod:`.export_pth`): DeePMD-kit's
method names (``forward_lower``, ``forward``, the getters) around the traced graphs."""

from __future__ import annotations

import json

import torch


class Frozen(torch.nn.Module):
    """The scripted wrapper: DeePMD-kit's method names around the traced graphs."""

    def __init__(self, plain, atomic, info: dict):
        super().__init__()
        self.plain = plain
        self.atomic = atomic
        self.rcut = float(info["rcut"])
        self.type_map = list(info["type_map"])
        self.sel = list(info["sel"])
        self.dim_fparam = int(info["dim_fparam"])
        self.dim_aparam = int(info["dim_aparam"])
        self.model_def_script = json.dumps(info["model_def_script"])

    def _lower(
        self,
        ext_coord: torch.Tensor,
        ext_atype: torch.Tensor,
        nlist: torch.Tensor,
        mapping: torch.Tensor | None,
        fparam: torch.Tensor | None,
        aparam: torch.Tensor | None,
        do_atomic_virial: bool,
        comm_dict: dict[str, torch.Tensor] | None,
    ) -> list[torch.Tensor]:
        nf = ext_atype.shape[0]
        nloc = nlist.shape[1]
        coord = ext_coord.reshape(nf, -1, 3).to(torch.float64)
        if self.dim_fparam > 0:
            if fparam is None:
                raise RuntimeError("this model needs fparam")
            fp = fparam.reshape(nf, self.dim_fparam).to(torch.float64)
        else:
            fp = coord.new_zeros(nf, 0)
        if self.dim_aparam > 0:
            if aparam is None:
                raise RuntimeError("this model needs aparam")
            ap = aparam.reshape(nf, nloc, self.dim_aparam).to(torch.float64)
        else:
            ap = coord.new_zeros(nf, nloc, 0)
        if mapping is not None:
            mapping = mapping.reshape(nf, -1)
        parts: list[list[torch.Tensor]] = [[], [], [], [], []]
        for i in range(nf):  # the graphs are traced for one frame
            one = (coord[i : i + 1], ext_atype[i : i + 1], nlist[i : i + 1])
            mi = None if mapping is None else mapping[i : i + 1]
            out = self._frame(
                one[0],
                one[1],
                one[2],
                mi,
                fp[i : i + 1],
                ap[i : i + 1],
                do_atomic_virial,
                comm_dict,
            )
            for k in range(5):
                parts[k].append(out[k])
        if nf == 1:
            return [p[0] for p in parts]
        return [torch.cat(p, dim=0) for p in parts]

    def _frame(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        nlist: torch.Tensor,
        mapping: torch.Tensor | None,
        fp: torch.Tensor,
        ap: torch.Tensor,
        do_atomic_virial: bool,
        comm_dict: dict[str, torch.Tensor] | None,
    ) -> list[torch.Tensor]:
        """One frame; no message passing: the ghosts' mapping and comm_dict are not needed."""
        if do_atomic_virial:
            out = self.atomic(coord, atype, nlist, fp, ap)
        else:
            out = self.plain(coord, atype, nlist, fp, ap)
        return [out[0], out[1], out[2], out[3], out[4]]

    @torch.jit.export
    def forward_lower(
        self,
        extended_coord: torch.Tensor,
        extended_atype: torch.Tensor,
        nlist: torch.Tensor,
        mapping: torch.Tensor | None = None,
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        do_atomic_virial: bool = False,
        comm_dict: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        dtype = extended_coord.dtype
        out = self._lower(
            extended_coord,
            extended_atype,
            nlist,
            mapping,
            fparam,
            aparam,
            do_atomic_virial,
            comm_dict,
        )
        result: dict[str, torch.Tensor] = {
            "energy": out[0],
            "atom_energy": out[1].to(dtype),
            "extended_force": out[2].to(dtype),
            "virial": out[3].to(dtype),
        }
        if do_atomic_virial:
            result["extended_virial"] = out[4].to(dtype)
        return result

    def forward(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None = None,
        do_atomic_virial: bool = False,
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        charge_spin: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        dtype = coord.dtype
        nf, nloc = atype.shape[0], atype.shape[1]
        coord = coord.reshape(nf, nloc, 3).to(torch.float64)
        ext, ext_atype, mapping = self._extend(coord, atype, box)
        nall = ext.shape[1]
        dist = torch.linalg.vector_norm(ext.unsqueeze(1) - ext[:, :nloc].unsqueeze(2), dim=-1)
        idx = torch.arange(nall).reshape(1, 1, nall).expand(nf, nloc, nall)
        self_pair = idx == torch.arange(nloc).reshape(1, nloc, 1)
        nlist = torch.where((dist <= self.rcut) & ~self_pair, idx, -1)
        out = self._lower(ext, ext_atype, nlist, mapping, fparam, aparam, do_atomic_virial, None)
        idx3 = mapping.unsqueeze(-1).expand(nf, nall, 3)
        force = out[2].new_zeros(nf, nloc, 3).scatter_add(1, idx3, out[2])
        result: dict[str, torch.Tensor] = {
            "energy": out[0].to(dtype),
            "atom_energy": out[1].to(dtype),
            "force": force.to(dtype),
            "virial": out[3].to(dtype),
        }
        if do_atomic_virial:
            idx9 = mapping.unsqueeze(-1).expand(nf, nall, 9)
            atom_virial = out[4].new_zeros(nf, nloc, 9).scatter_add(1, idx9, out[4])
            result["atom_virial"] = atom_virial.to(dtype)
        return result

    def _extend(
        self, coord: torch.Tensor, atype: torch.Tensor, box: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atoms wrapped into the cell and all periodic images within ``rcut`` of the cell."""
        nf, nloc = atype.shape[0], atype.shape[1]
        local = torch.arange(nloc).unsqueeze(0).expand(nf, nloc)
        if box is None:
            return coord, atype, local
        cell = box.reshape(nf, 3, 3).to(torch.float64)
        frac = torch.matmul(coord, torch.linalg.inv(cell))
        coord = torch.matmul(frac - torch.floor(frac), cell)
        a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
        vol = torch.abs((a * torch.linalg.cross(b, c)).sum(-1))
        areas = torch.stack(
            [
                torch.linalg.vector_norm(torch.linalg.cross(b, c), dim=-1),
                torch.linalg.vector_norm(torch.linalg.cross(c, a), dim=-1),
                torch.linalg.vector_norm(torch.linalg.cross(a, b), dim=-1),
            ],
            dim=-1,
        )
        reach = torch.ceil(self.rcut * areas / vol.unsqueeze(-1)).amax(0).to(torch.int64)
        ranges = [torch.arange(-int(reach[d]), int(reach[d]) + 1) for d in range(3)]
        shifts = torch.cartesian_prod(ranges[0], ranges[1], ranges[2]).to(torch.float64)
        # the zero translation first: the local atoms come first in the extended list
        order = torch.argsort((shifts != 0).any(-1).to(torch.int64), stable=True)
        shifts = shifts[order]
        nimg = shifts.shape[0]
        trans = torch.matmul(shifts.unsqueeze(0), cell)  # [nf, nimg, 3]
        ext = (coord.unsqueeze(1) + trans.unsqueeze(2)).reshape(nf, nimg * nloc, 3)
        return ext, atype.repeat(1, nimg), local.repeat(1, nimg)

    @torch.jit.export
    def get_rcut(self) -> float:
        return self.rcut

    @torch.jit.export
    def get_type_map(self) -> list[str]:
        return self.type_map

    @torch.jit.export
    def get_ntypes(self) -> int:
        return len(self.type_map)

    @torch.jit.export
    def get_sel(self) -> list[int]:
        return self.sel

    @torch.jit.export
    def get_nsel(self) -> int:
        return sum(self.sel)

    @torch.jit.export
    def get_nnei(self) -> int:
        return sum(self.sel)

    @torch.jit.export
    def get_dim_fparam(self) -> int:
        return self.dim_fparam

    @torch.jit.export
    def get_dim_aparam(self) -> int:
        return self.dim_aparam

    @torch.jit.export
    def has_default_fparam(self) -> bool:
        return False

    @torch.jit.export
    def is_aparam_nall(self) -> bool:
        return False

    @torch.jit.export
    def has_message_passing(self) -> bool:
        return False

    @torch.jit.export
    def get_sel_type(self) -> list[int]:
        return []

    @torch.jit.export
    def model_output_type(self) -> list[str]:
        return ["energy"]

    @torch.jit.export
    def get_model_def_script(self) -> str:
        return self.model_def_script

    @torch.jit.export
    def use_self_built_nlist(self) -> bool:
        """``forward`` builds its own neighbour list (DeePMD-kit's Python DeepPot then calls
        it instead of an external neighbour-list strategy)."""
        return True


class FrozenMessagePassing(Frozen):
    """A model with message passing (DPA-2): given DeePMD-kit's ``comm_dict`` (its C++ side
    always passes one to such a model, on any number of MPI ranks) the graphs exchange the
    features of ghost atoms through ``deepmd::border_op``; otherwise (a Python caller) they
    gather them through the ghost atoms' ``mapping``. With a ``comm_dict`` the ``mapping`` is
    ignored, as the reference's models do: deepmd-kit 3.2.0's C++ side (CPU) hands over a
    mapping whose memory has been freed."""

    def __init__(self, plain, atomic, plain_comm, atomic_comm, lists, info: dict):
        super().__init__(plain, atomic, info)
        self.plain_comm = plain_comm
        self.atomic_comm = atomic_comm
        self.lists = lists
        self.trim = list(info["trim"])

    def _trimmed(self, nlist: torch.Tensor, trim: bool) -> torch.Tensor:
        """``nlist`` without the slots past its widest used row (where that is exact): the
        work follows the neighbours present, not ``sel``."""
        width = nlist.shape[-1]
        if not trim or width <= 1 or nlist.numel() == 0:
            return nlist
        slot = torch.arange(1, width + 1, device=nlist.device)
        used = int(torch.where(nlist >= 0, slot, 0).amax())
        if 0 < used < width:
            return nlist[..., :used]
        return nlist

    def _frame(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        nlist: torch.Tensor,
        mapping: torch.Tensor | None,
        fp: torch.Tensor,
        ap: torch.Tensor,
        do_atomic_virial: bool,
        comm_dict: dict[str, torch.Tensor] | None,
    ) -> list[torch.Tensor]:
        nloc, nall = nlist.shape[1], coord.shape[1]
        full = self.lists(coord, atype, nlist)  # repinit, repformer, three-body; full widths
        l0 = self._trimmed(full[0], self.trim[0])
        l1 = self._trimmed(full[1], self.trim[1])
        l2 = self._trimmed(full[2], self.trim[2])
        if comm_dict is None:
            if mapping is None:
                if nall != nloc:
                    raise RuntimeError(
                        "a message-passing model needs the ghost atoms' mapping or comm_dict"
                    )
                mapping = torch.arange(nloc, device=coord.device).reshape(1, nloc)
            if do_atomic_virial:
                out = self.atomic(coord, atype, l0, l1, l2, fp, ap, mapping)
            else:
                out = self.plain(coord, atype, l0, l1, l2, fp, ap, mapping)
            return [out[0], out[1], out[2], out[3], out[4]]
        nlocal = torch.tensor(nloc, dtype=torch.int32)
        nghost = torch.tensor(nall - nloc, dtype=torch.int32)
        send_list, send_proc = comm_dict["send_list"], comm_dict["send_proc"]
        recv_proc, send_num = comm_dict["recv_proc"], comm_dict["send_num"]
        recv_num, communicator = comm_dict["recv_num"], comm_dict["communicator"]
        if do_atomic_virial:
            out = self.atomic_comm(
                coord,
                atype,
                l0,
                l1,
                l2,
                fp,
                ap,
                send_list,
                send_proc,
                recv_proc,
                send_num,
                recv_num,
                communicator,
                nlocal,
                nghost,
            )
        else:
            out = self.plain_comm(
                coord,
                atype,
                l0,
                l1,
                l2,
                fp,
                ap,
                send_list,
                send_proc,
                recv_proc,
                send_num,
                recv_num,
                communicator,
                nlocal,
                nghost,
            )
        return [out[0], out[1], out[2], out[3], out[4]]

    @torch.jit.export
    def has_message_passing(self) -> bool:
        return True
