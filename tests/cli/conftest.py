"""The data tests' fixtures for the command tests: the in-process CLI, tiny corpora, and the
hermetic environment (no corpus search outside the test's folders, no network)."""

from tests.data.conftest import cli, hermetic, make_corpus  # noqa: F401 -- re-exported fixtures
