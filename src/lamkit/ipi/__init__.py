"""i-PI force client for lamkit and DeePMD-kit models (``lam ipi``, ``python -m lamkit.ipi``).

Reads DeePMD-kit's ``dp_ipi`` JSON file unchanged; several models form a committee whose members
i-PI's ``ffcommittee`` (``parse_json="true"``) reads from the extras.
"""

from .config import DriverConfig, load_json
from .driver import IPIDriver

__all__ = ["DriverConfig", "IPIDriver", "load_json"]
