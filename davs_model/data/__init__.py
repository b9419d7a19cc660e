"""Training data: clips sampled from the HDF5 shards (:mod:`davs_model.data.dataset`)."""
