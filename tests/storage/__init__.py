"""Tests of seqtools.storage against a local S3 server (a package, so that its
conftest is imported as storage.conftest and does not shadow tests/conftest.py,
which other test modules import from)."""
