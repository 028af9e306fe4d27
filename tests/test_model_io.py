"""Model files by format (the reader registry of ``lamkit.model.io``) and the one head chooser
of multi-task models (``lamkit.config.multitask.choose_head``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamkit.config.multitask import choose_head
from lamkit.errors import ConfigError, ModelFileError
from lamkit.model import io

SECTION = {"model_dict": {"water": {"model_branch_alias": ["Default", "W"]}, "alloy": {}}}


def test_a_head_by_name_alias_case_or_default():
    assert choose_head(SECTION, "alloy") == "alloy"
    assert choose_head(SECTION, "W") == "water"
    assert choose_head(SECTION, "ALLOY") == "alloy"
    assert choose_head(SECTION, "w") == "water"
    assert choose_head(SECTION, None) == "water"  # the branch aliased Default
    assert choose_head({**SECTION, "default_head": "alloy"}, None) == "alloy"


def test_a_wrong_head_names_the_branches():
    with pytest.raises(ModelFileError, match=r"m.pt has no head 'aloy'.*Did you mean 'alloy'"):
        choose_head(SECTION, "aloy", "m.pt")
    with pytest.raises(ModelFileError, match="choose a head from"):
        choose_head({"model_dict": {"a": {}, "b": {}}}, None, "m.pt")
    with pytest.raises(ConfigError, match="has no branch 'ALLOY'"):
        choose_head(SECTION, "ALLOY", "pre", noun="branch", ignore_case=False, error=ConfigError)


def test_an_unknown_file_is_a_model_file_error():
    assert io.reader_of({"something": "else"}) is None
    with pytest.raises(ModelFileError, match="f.pt: neither a lamkit"):
        io.model_from_payload({"something": "else"}, "f.pt")


def test_a_registered_reader_is_asked(monkeypatch):
    monkeypatch.setattr(io, "_READERS", dict(io._READERS))
    sentinel = object()
    reader = io.ModelReader(
        "toy",
        sniff=lambda obj: isinstance(obj, dict) and "toy" in obj,
        load=lambda obj, where, head: (sentinel, where, head),
        config=lambda obj: obj["toy"],
        step=lambda obj: 7,
    )
    io.register_reader(reader)
    assert io.reader_of({"toy": {}}) is reader
    assert io.model_from_payload({"toy": {}}, "t", head="h") == (sentinel, "t", "h")
    assert [r.name for r in io.model_readers()] == ["lamkit", "deepmd", "toy"]


def test_built_in_readers_register_on_first_use():
    """``load_model`` reads DeePMD-kit checkpoints without the caller importing lamkit.interop,
    and importing lamkit.model does not import it."""
    code = (
        "import sys\nimport lamkit.model.io as io\n"
        "assert 'lamkit.interop.deepmd' not in sys.modules\n"
        "print([r.name for r in io.model_readers()], 'lamkit.interop.deepmd' in sys.modules)\n"
    )
    src = str(Path(io.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "['lamkit', 'deepmd'] True"
