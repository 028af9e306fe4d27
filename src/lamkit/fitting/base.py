"""Fitting nets: per-atom outputs from descriptors, and their registry.

    forward(descriptor [nf, nloc, d], atype [nf, nloc], fparam [nf, nfp], aparam [nf, nloc, nap])
        -> {var_name: [nf, nloc, dim_out]}

Types with their own networks (``mixed_types=False``, used with se_e2_a) evaluate each net on
the atoms of its type only; mixed-type descriptors share one net among all types.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config.schema import Arg, normalize
from ..errors import ConfigError
from ..nn.mlp import FittingNet, make_generator, to_dtype
from ..nn.params import NETWORK_ALIASES, RefNames, TypeRows
from ..registry import Registry
from .output_def import OutputDef

FITTINGS: Registry = Registry("fitting_net")

COMMON_ARGS = (
    Arg("neuron", (list,), [120, 120, 120], aliases=("n_neuron",)),
    Arg("activation_function", (str,), "tanh"),
    Arg("resnet_dt", (bool,), True),
    Arg("precision", (str,), "default"),
    Arg("numb_fparam", (int,), 0),
    Arg("numb_aparam", (int,), 0),
    Arg("default_fparam", (list, type(None)), None),
    Arg("dim_case_embd", (int,), 0),
    Arg("trainable", (bool, list), True),
    Arg("rcond", (float, type(None)), None),
    Arg("seed", (int, type(None)), None),
    Arg("use_aparam_as_mask", (bool,), False),
    Arg("exclude_types", (list,), []),
)


class InvariantFitting(nn.Module):
    """Per-atom invariant output ``y_i = FittingNet_{t_i}([D_i, fparam, aparam])``."""

    ARGS: tuple[Arg, ...] = COMMON_ARGS
    var_name = "out"
    uses_rot_mat = False  # equivariant fittings (dipole, polar) take the descriptor's rot_mat

    def output_def(self) -> OutputDef:
        """What this fitting predicts and how the model reduces it (:mod:`.output_def`)."""
        name = self.var_name
        return OutputDef(name, (self.dim_out,), f"atom_{name}", name, name)

    def apply_out_stat(self, atom, atype, out_bias, out_std):
        """Per-atom outputs ``[nf, nloc, size]`` plus the model's per-type ``out_bias``
        ``[ntypes, size]`` (DeePMD-kit's default; ``out_std`` is not applied)."""
        return atom + out_bias[atype.clamp(min=0)]

    @classmethod
    def normalize_config(cls, config: dict, path: str = "model/fitting_net") -> dict:
        return normalize(config, cls.ARGS, path, allow_extra=("type",))

    def __init__(
        self,
        ntypes: int,
        dim_descrpt: int,
        dim_out: int,
        mixed_types: bool,
        neuron=(120, 120, 120),
        activation_function="tanh",
        resnet_dt=True,
        precision="default",
        numb_fparam=0,
        numb_aparam=0,
        default_fparam=None,
        dim_case_embd=0,
        trainable=True,
        rcond=None,
        seed=None,
        use_aparam_as_mask=False,
        exclude_types=(),
    ):
        super().__init__()
        if dim_case_embd < 0:
            raise ConfigError(
                f"model/fitting_net/dim_case_embd: expected >= 0; found {dim_case_embd}"
            )
        self.ntypes, self.dim_descrpt, self.dim_out = ntypes, dim_descrpt, dim_out
        self.mixed_types = mixed_types
        self.numb_fparam, self.numb_aparam = numb_fparam, numb_aparam
        self.use_aparam_as_mask = use_aparam_as_mask
        self.rcond = rcond
        self.exclude_types = list(exclude_types)
        self.dtype = to_dtype(precision)
        dim_in = dim_descrpt + numb_fparam + (0 if use_aparam_as_mask else numb_aparam)
        # case embedding (multi-task with one shared fitting): a one-hot task id appended to the
        # input; a buffer per branch, set by the trainer (set_case_embd), zero until then
        self.dim_case_embd = dim_case_embd
        dim_in += dim_case_embd
        nnets = 1 if mixed_types else ntypes
        self.nets = nn.ModuleList(
            FittingNet(
                dim_in,
                dim_out,
                list(neuron),
                activation_function,
                resnet_dt,
                self.dtype,
                make_generator(seed, 1, k),
            )
            for k in range(nnets)
        )
        self.register_buffer("bias_atom", torch.zeros(ntypes, dim_out, dtype=self.dtype))
        self.register_buffer("fparam_avg", torch.zeros(numb_fparam, dtype=self.dtype))
        self.register_buffer("fparam_inv_std", torch.ones(numb_fparam, dtype=self.dtype))
        self.register_buffer("aparam_avg", torch.zeros(numb_aparam, dtype=self.dtype))
        self.register_buffer("aparam_inv_std", torch.ones(numb_aparam, dtype=self.dtype))
        case = torch.zeros(dim_case_embd, dtype=self.dtype) if dim_case_embd else None
        self.register_buffer("case_embd", case)
        self.default_fparam = default_fparam
        trainable_flags = trainable if isinstance(trainable, list) else [trainable]
        if not all(trainable_flags):
            for p in self.parameters():
                p.requires_grad_(False)

    def set_case_embd(self, index: int) -> None:
        """Make this branch's case embedding the one-hot vector of task ``index``."""
        if not 0 <= index < self.dim_case_embd:
            raise ConfigError(
                f"model/fitting_net/dim_case_embd: {self.dim_case_embd} is too small for task "
                f"number {index + 1}"
            )
        with torch.no_grad():
            self.case_embd.zero_()
            self.case_embd[index] = 1.0

    def _inputs(self, desc, fparam, aparam):
        nf, nloc, _ = desc.shape
        parts = [desc.to(self.dtype)]
        if self.numb_fparam:
            if fparam is None:
                if self.default_fparam is None:
                    raise ValueError(f"this model needs fparam with {self.numb_fparam} values")
                fparam = torch.as_tensor(self.default_fparam, dtype=self.dtype).expand(nf, -1)
            fp = (fparam.reshape(nf, -1).to(self.dtype) - self.fparam_avg) * self.fparam_inv_std
            parts.append(fp.unsqueeze(1).expand(-1, nloc, -1))
        if self.numb_aparam and not self.use_aparam_as_mask:
            if aparam is None:
                raise ValueError(f"this model needs aparam with {self.numb_aparam} values per atom")
            ap = aparam.reshape(nf, nloc, -1).to(self.dtype)
            parts.append((ap - self.aparam_avg) * self.aparam_inv_std)
        if self.dim_case_embd:
            parts.append(self.case_embd.expand(nf, nloc, -1))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def forward(self, desc, atype, fparam=None, aparam=None) -> dict[str, torch.Tensor]:
        nf, nloc, _ = desc.shape
        x = self._inputs(desc, fparam, aparam)
        if self.mixed_types:
            out = self.nets[0](x)
        else:
            flat_x = x.reshape(nf * nloc, -1)
            flat_t = atype.reshape(-1)
            out = flat_x.new_zeros(nf * nloc, self.dim_out)
            for t, net in enumerate(self.nets):
                idx = torch.nonzero(flat_t == t).squeeze(-1)
                if idx.numel():
                    out = out.index_put((idx,), net(flat_x[idx]))
            out = out.reshape(nf, nloc, self.dim_out)
        at = atype.clamp(min=0)
        out = out + self.bias_atom[at]
        keep = atype >= 0
        for t in self.exclude_types:
            keep = keep & (atype != t)
        out = out * keep.unsqueeze(-1).to(out.dtype)
        return {self.var_name: out}

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = (TypeRows("bias_atom"),)
    REF_NAMES = RefNames(
        names=(
            ("nets.*.layers.*.*", "filter_layers.networks.*.layers.*.*"),
            ("bias_atom", "bias_atom_e"),
            *(
                (name, name)
                for name in ("fparam_avg", "fparam_inv_std", "aparam_avg", "aparam_inv_std")
            ),
            ("case_embd", "case_embd"),
        ),
        ignore=NETWORK_ALIASES,
    )


def build_fitting(
    config: dict,
    ntypes: int,
    dim_descrpt: int,
    mixed_types: bool,
    embedding_width: int | None = None,
):
    """A fitting from its config; ``embedding_width`` is the width M1 of the descriptor's
    ``rot_mat`` [nf, nloc, M1, 3], needed by the equivariant fittings (dipole, polar)."""
    ftype = config.get("type", "ener")
    cls = FITTINGS.get(ftype)
    conf = cls.normalize_config(config)
    conf.pop("type", None)
    if cls.uses_rot_mat:
        if embedding_width is None:
            raise ConfigError(
                f"model/fitting_net/type: '{ftype}' fitting needs a descriptor with a rotation "
                "matrix (se_e2_a, dpa1/se_atten, dpa2); this descriptor has none"
            )
        conf["embedding_width"] = embedding_width
    return cls(
        ntypes=ntypes,
        dim_descrpt=dim_descrpt,
        mixed_types=mixed_types,
        **{k: v for k, v in conf.items() if not k.startswith("_")},
    )
