"""The embedded synthetic corpus, installed as ``textvae.data.synthetic_corpus``.

This file only makes the folder a package, so ``importlib.resources`` finds the corpus in
an editable checkout and in an installed wheel alike.
"""
