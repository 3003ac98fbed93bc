import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
REAL_PRESETS = REPO.parent / "shared" / "real-presets"


@pytest.fixture(scope="session")
def real_presets() -> list[Path]:
    paths = sorted(REAL_PRESETS.glob("*.vital"))
    assert paths, f"the real presets are expected at {REAL_PRESETS}"
    return paths


def pids_with(text: bytes) -> list[int]:
    """Processes whose command line contains ``text`` (Ray names its workers, e.g.
    ``ray::MapWorker(MapBatches(SampleRenderer))``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids
