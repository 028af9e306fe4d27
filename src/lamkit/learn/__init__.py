"""Property-driven fine-tuning by concurrent learning (``lam learn``): an ensemble fine-tuned
from a pretrained model explores the property structures by MD, frames where the members
disagree are labelled with an ASE calculator, and the loop stops when the properties are
within tolerance. See :mod:`lamkit.learn.loop` and docs/active-learning.md."""

from .config import LearnConfig, load_config, parse_config, parse_quantity
from .loop import run_learn
from .select import Selection, select
from .state import LearnState, load_state

__all__ = [
    "LearnConfig",
    "LearnState",
    "Selection",
    "load_config",
    "load_state",
    "parse_config",
    "parse_quantity",
    "run_learn",
    "select",
]
