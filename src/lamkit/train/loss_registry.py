"""The registry of losses: ``LOSSES.get(type)`` is the class of the input's ``loss/type``.

Each loss lives in its own module and registers itself here (:mod:`.loss_energy`,
:mod:`.loss_property`, :mod:`.loss_tensor`, :mod:`.loss_dos`, :mod:`.loss_population`,
:mod:`.loss_spin`); :mod:`lamkit.train.loss` imports them all, so that every type is
registered, and builds the loss of an input (:func:`lamkit.train.loss.build_loss`).

A loss class is called as ``loss(config, start_lr, model_config)`` and gives: ``fitting_types``
(the fitting types it fits), ``requirements()`` (the label files it reads),
``attach(model)`` (once the model exists), ``need`` (which derivatives the model must
produce) and ``loss(pred, batch, lr) -> (loss, metrics)``.
"""

from __future__ import annotations

from ..registry import Registry

LOSSES: Registry = Registry("loss")
