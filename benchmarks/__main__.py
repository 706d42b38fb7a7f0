"""``python -m benchmarks [--quick] [--only NAME ...] [--json PATH]``."""

from __future__ import annotations

from benchmarks.run import main

raise SystemExit(main())
