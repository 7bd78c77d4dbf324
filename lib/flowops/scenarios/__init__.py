"""Scenario engine (pure logic): templates, product fit, contact policy and routing, messages, export checks.

A scenario has the seed's seven elements (004, 2.1): target rule, product, incentive, channel, timing, strategy
and evaluation. Templates are data (`conf/scenarios/*.yml`), channels and the contact policy are data
(`conf/channels.yml`); `steps/target.py` reads the lake, calls these transforms and writes the results.
"""
