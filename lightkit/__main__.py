"""``python -m lightkit ...``: the same as the ``lightkit`` command (and works under torchrun:
``torchrun --nproc-per-node 2 -m lightkit fit examples/digits.py``)."""

from lightkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
