"""Tools around a running chatapp: the ``chatapp`` command, its API client, and ``doctor``."""
