"""verl plug-in: AntiSD as a verl v1 trainer (``trainer.v1.trainer_mode=antisd_sync``), no fork of verl.

- :mod:`.batch`: driver-side, framework-light helpers over a verl batch (padded tensors + ``uid``/``raw_prompt``):
  sequence rewards and advantages, the batch as the teacher pass takes it (generation order), the teacher's input rows, and
  the shared :class:`antisd.method.step.AntiSDStep` on the batch. Imports torch and antisd only, so it is unit-tested.
- :mod:`.config`: the ``antisd.*`` config group → :class:`antisd.method.settings.AntiSDSettings` (``antisd.preset``).
- :mod:`.trainer`: ``AntiSDTrainer``, verl's ``PPOTrainerSync`` with ``_compute_advantage`` and the checkpoint
  hooks overridden; registered with ``verl.trainer.ppo.v1.register_trainer``.
- :mod:`.plugin`: the ``verl.plugins`` entry point (``import verl`` loads it on the driver and every worker).

Nothing here is imported by the rest of antisd; the main environment never needs verl (docs/verl.md).
"""
