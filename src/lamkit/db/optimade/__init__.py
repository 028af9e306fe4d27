"""OPTIMADE for the crystal database: the filter language translated to SQL
(:mod:`.filter`), the ``/optimade`` endpoints of the service (:mod:`.routes`), and
``lam db import-optimade`` to pull structures from any OPTIMADE provider (:mod:`.importer`).

The submodules need the ``optimade`` package (in the ``db`` extra); this package itself
imports nothing, so ``lam`` starts fast.
"""
