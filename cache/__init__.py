"""The feature store: HDF5 shards of per-frame backbone features, a manifest, and the cache key."""
