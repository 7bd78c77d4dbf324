"""The module a pytest-xdist worker's __main__ is specified as (tests/conftest.py): empty, since multiprocessing's
spawned children import it in place of the main script."""
