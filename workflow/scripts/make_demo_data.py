# Adapter: make the embedded demo dataset (LRW layout) from the validated `demo:` section.
from pathlib import Path

from davs_model.config import DemoSection
from davs_model.demo.dataset import make_demo_dataset
from davs_model.utils.logging import log_to

with log_to(snakemake.log[0]):
    demo = DemoSection.from_dict(snakemake.params.demo)
    made = make_demo_dataset(demo.dataset_config(), Path(demo.root))
    missing = sorted(set(snakemake.output.videos) - {str(p) for p in made})
    if missing:
        raise RuntimeError(f"the demo generator did not make {missing[:3]} …")
