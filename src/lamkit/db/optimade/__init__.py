"""OPTIMADE for the crystal database: the filter language translated to SQL
(:mod:`.filter`), the ``/optimade`` endpoints of the service (:mod:`.routes`), and
``lam db import-optimade`` to pull structures from any OPTIMADE provider (:mod:`.client`).

Needs the ``optimade`` package (``pip install 'lamkit[db]'``).
"""

from .fields import API_VERSION, PREFIX, PROPERTIES

__all__ = ["API_VERSION", "PREFIX", "PROPERTIES"]
