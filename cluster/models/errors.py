"""What can be wrong with a spec's model, found before anything is written (exit 2)."""


class ModelNotFoundError(ValueError):
    """A spec names a model that cannot be found: a name of no known form, a hub repo not in
    the cache while offline, a URL folder that does not exist or holds no config.json."""


class ModelChangedError(ValueError):
    """The weights at a model's name or path are not the ones the run was planned with."""
