"""The ``verl.plugins`` entry point: ``import verl`` imports this module on the driver and on every Ray worker,
which registers ``AntiSDTrainer`` as ``trainer.v1.trainer_mode=antisd_sync``.

verl swallows a plug-in's import error into a debug log; this module reports it as a warning instead, so a broken
environment says why ``antisd_sync`` is missing rather than failing later with "unknown trainer mode".
"""

import logging

try:
    from antisd.integrations.verl import trainer  # noqa: F401  (registers the trainer)
except Exception as error:  # noqa: BLE001 - reported, then verl carries on without the plug-in
    logging.getLogger("antisd").warning("antisd verl plug-in not loaded (trainer_mode=antisd_sync unavailable): %r", error)
