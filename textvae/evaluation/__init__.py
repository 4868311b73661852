"""The evaluation layer: every number of a model on a corpus split, and its report.

It owns the corpus evaluation in the protocol of He et al. (2019)
(:mod:`~textvae.evaluation.corpus`), the factor probes, the success of latent edits and
analogies read back by the embedded grammar's parser (:mod:`~textvae.evaluation.latent_edits`),
what users look at (interpolation between test pairs, diversity of prior samples and their
fluency under an independent causal LM: :mod:`~textvae.evaluation.generation_quality`,
:mod:`~textvae.evaluation.fluency`), the figures, and the shipped
Hugging Face ``evaluate`` module (:mod:`~textvae.evaluation.metric`). It uses the data
and models layers and the estimators; training and the CLI use it.
"""
