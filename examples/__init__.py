"""Runnable lightkit examples. Each is a module of decorated functions plus a ``main()``.

Run one from the repository root, e.g. ``python examples/digits.py --help``; the functions are
recorded as ``examples.<name>:<function>``, so specs and checkpoints load in other processes.
"""
