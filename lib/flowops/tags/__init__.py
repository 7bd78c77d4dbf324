"""Subscriber tags: base aggregates from silver, a declarative library from conf/tags, and the engine."""
