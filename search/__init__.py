"""Search orchestration and the ``search`` command line."""
