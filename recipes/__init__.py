"""The shipped training recipes, installed as ``textvae.recipes`` (see ``textvae recipes``).

This file only makes the folder a package, so ``importlib.resources`` finds the YAML files
in an editable checkout and in an installed wheel alike.
"""
