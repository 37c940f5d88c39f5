"""Callbacks of the kinds a config file must write and read back."""

import lightkit as lk


class Counting(lk.Callback):
    """A plain subclass keeping its arguments under their own names."""

    def __init__(self, every: int = 1, label: str = "n") -> None:
        self.every = every
        self.label = label


class Hidden(lk.Callback):
    """Keeps its argument under another name: it cannot be read back."""

    def __init__(self, every: int = 1) -> None:
        self._every = every
