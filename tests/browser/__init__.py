"""Browser tests of the playground (a package, so its conftest does not shadow tests/conftest.py)."""
