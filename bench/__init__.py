"""The benchmark: chatapp against its peers, run by ``bench/run`` (``python -m bench``)."""
