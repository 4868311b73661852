"""The evaluation layer: every number of a model on a corpus split, and its report.

It owns the corpus evaluation in the protocol of He et al. (2019)
(:mod:`~textvae.evaluation.corpus`), the factor probes, the figures, and the shipped
Hugging Face ``evaluate`` module (:mod:`~textvae.evaluation.metric`). It uses the data
and models layers and the estimators; training and the CLI use it.
"""
