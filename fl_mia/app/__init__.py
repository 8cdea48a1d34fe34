"""The application layer: CLI, experiment runner, sweep, resume and comparison.

The only part of ``fl_mia`` that may import the Flower apps (``clients``, ``server``,
``strategies``); the rest of the library never imports it (tests/test_import_walls.py).
"""
