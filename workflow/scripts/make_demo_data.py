# Adapter: make the embedded demo dataset (LRW layout) from the validated `demo:` section.
from pathlib import Path

from davs_model.config import DemoSection
from davs_model.demo.dataset import make_demo_dataset
from davs_model.utils.logging import log_to
from davs_model.utils.stale import remove_stale_temporaries

with log_to(snakemake.log[0]):
    videos = [Path(v) for v in snakemake.output.videos]
    remove_stale_temporaries([*videos, *(v.with_suffix(".txt") for v in videos)])  # a killed run's, if any
    demo = DemoSection.from_dict(snakemake.params.demo)
    made = make_demo_dataset(demo.dataset_config(), Path(demo.root))
    missing = sorted(set(snakemake.output.videos) - {str(p) for p in made})
    if missing:
        raise RuntimeError(f"the demo generator did not make {missing[:3]} …")
