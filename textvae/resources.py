"""The folders textvae ships beside its code: the recipes and the embedded corpus.

pip installs ``recipes/`` as ``textvae.recipes`` and ``data/synthetic/`` as
``textvae.data.synthetic_corpus`` (``pyproject.toml``'s ``package-dir``), and an editable
install maps the two names the same way. A checkout that is only put on ``PYTHONPATH``
(the device machine, whose image cannot install textvae's dependencies from the network,
runs the working tree so) has neither name; there the folders sit at the top of the
checkout, one level above ``textvae/``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from textvae.errors import TextVAEError

CHECKOUT = Path(__file__).resolve().parents[1]


def shipped_directory(package: str, checkout_path: str, what: str) -> Path:
    """The directory of the data package ``package``, or ``checkout_path`` in a bare checkout.

    Args:
        package: The installed name (``textvae.recipes``).
        checkout_path: Where the same folder is in a checkout, relative to its root (``recipes``).
        what: How errors name it (``the shipped recipes``).

    A real directory is needed (recipes name their ``base:`` by a relative path, the corpus
    is read as files), so a zip-imported textvae is refused.
    """
    try:
        root = files(package)
    except ModuleNotFoundError as exc:
        if exc.name is None or not package.startswith(exc.name):  # another module missing, not this name
            raise
        root = CHECKOUT / checkout_path
        if not root.is_dir():
            raise TextVAEError(f"{what}: {package} is not installed and {root} does not exist; "
                               "install textvae with pip") from None
        return root
    if not isinstance(root, Path):
        raise TextVAEError(f"{what} are inside an archive ({root}); install textvae with pip")
    return root
