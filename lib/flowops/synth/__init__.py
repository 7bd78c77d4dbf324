"""Synthetic landing data for flowops, with planted truth for tests.

``generate()`` writes a directory shaped like the operator's landing zone (xDR usage logs, CRM
snapshots, bills, organic orders) plus ``_truth/`` (archetypes, expected usage aggregates,
propensities, handsets, dirty-data counts). See ``generator.py`` for the contract and
``dirty.py`` / ``archetypes.py`` for the planted rules.
"""

from flowops.synth.generator import GenerateResult, generate

__all__ = ["GenerateResult", "generate"]
