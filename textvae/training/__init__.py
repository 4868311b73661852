"""The training layer: recipes, the objective and the loop that turns them into a model.

It owns the recipe schema and its YAML loading (:mod:`~textvae.training.recipe`), the
builders of model, optimiser and LR schedule, the objective (KL/L schedules, free bits),
aggressive inference, resumable checkpoints with their manifests, the run directory's rules
(one training at a time, exact or refused resumes: :mod:`~textvae.training.resume`), and the
loop (:func:`textvae.training.loop.train`).
It uses the data, models and evaluation layers; nothing below imports it.

Modules are imported by name (``textvae.training.loop``): importing this package does
not import torch or Accelerate.
"""
