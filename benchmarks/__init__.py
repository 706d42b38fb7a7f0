"""Measurements a user of flask-confirm-mail would ask for: ``python -m benchmarks``.

See ``benchmarks/README.md`` for what each scenario measures and what each guard means.
"""
