"""Data-quality gates: suites per table read from conf/expectations/*.yml, built in code as Great Expectations
suites; their results turned into ops/quality_results rows and one-line failure messages.

Everything here is pure (no lake, no GX context): `steps/quality.py` runs the suites where each layer is written.
"""
