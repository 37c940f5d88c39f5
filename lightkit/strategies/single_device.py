"""``SingleDevice``: one process on one device; the strategy for every non-distributed run."""

from __future__ import annotations

import attrs

from lightkit.strategies.base import Strategy


@attrs.define
class SingleDevice(Strategy):
    """Run in this process on ``device`` (``"cpu"``, ``"cuda:0"``, ``"mps"``).

    Example::

        lk.Trainer(strategy=SingleDevice("cuda:1"))
    """
