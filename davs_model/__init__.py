"""DAVS talking-face generation: preprocessing, model, training, evaluation, rendering.

Kept free of heavy imports (torch, cv2, dlib): the Snakefile imports parts of this package while it builds the DAG.
"""

__version__ = "0.1.0"

# Bump when the HDF5 shard layout changes: Snakemake's params trigger rebuilds exactly the shards.
SHARD_FORMAT_VERSION = 1

# Bump when the model file format changes: Snakemake's params trigger retrains exactly what depends on it.
CHECKPOINT_FORMAT_VERSION = 1
