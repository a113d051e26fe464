"""Orchestrators over the Python API: the online `loop` and the offline `demo`."""
