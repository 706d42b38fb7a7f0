"""Runnable measurements of flask-confirm-mail against its peers: ``python -m benchmarks``.

Each scenario has its own module (``signup_latency``, ``confirm_throughput``,
``delivery_throughput``, ``scale_out``, ``growth``, ``served``, ``memory``) with a
``run(context)`` function returning a :class:`~benchmarks.report.ScenarioReport`;
:mod:`benchmarks.run` runs them, prints a table per scenario and a summary of the
targets, and writes ``benchmarks/results/latest.json``.
"""
