"""Send a job's logging, warnings and uncaught traceback into its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | Path, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Route ``logging`` and ``warnings`` (and stderr, where tqdm writes its progress bars) to ``path``.

    An exception is written to the log with its traceback and re-raised, so a failed job tells its own story.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(path, "a", encoding="utf-8", errors="replace", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        old_level, root.level = root.level, level
        logging.captureWarnings(True)
        old_stderr, sys.stderr = sys.stderr, fh
        try:
            yield root
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            sys.stderr = old_stderr
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.level = old_level
