"""What the job modules' ``main()`` functions share."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_job(job: Callable[[], object], expected: tuple[type[BaseException], ...]) -> int:
    """Run a job's body; an expected error is one clear line on stderr and exit code 2."""
    try:
        job()
        return 0
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
