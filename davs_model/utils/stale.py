"""Temporary files that a killed job (kill -9, power loss) left beside its outputs.

Our atomic writers write ``<name>.tmp`` or ``<name>.tmp-<pid>`` (QC tables, shards, indexes) or
``.<name>.<pid>[.<hex>].tmp`` (videos, the demo's .txt files), then rename; a job killed before the rename leaves
that file behind, and a rerun (another pid) would not overwrite it. Snakemake deletes a killed job's outputs on the
rerun (`rerun-incomplete`), but not these.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_PATTERNS = (re.compile(r"(?P<name>.+)\.tmp(-\d+)?"), re.compile(r"\.(?P<name>.+)\.\d+(\.[0-9a-f]+)?\.tmp"))


def remove_stale_temporaries(outputs: Iterable[str | Path]) -> list[Path]:
    """Delete the temporary files of ``outputs`` (the patterns above, nothing else); returns what it deleted.

    Call it at the start of the job that makes these outputs: Snakemake's lock on the folder makes that job the
    only writer of them, so a temporary file of theirs that exists now is a dead job's.
    """
    names: dict[Path, set[str]] = defaultdict(set)
    for out in map(Path, outputs):
        names[out.parent].add(out.name)
    removed = []
    for folder, wanted in names.items():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            matches = (p.fullmatch(path.name) for p in _PATTERNS)
            if any(m and m["name"] in wanted for m in matches) and path.is_file():
                path.unlink(missing_ok=True)
                log.warning("removed %s, left by an interrupted earlier run", path)
                removed.append(path)
    return removed
