"""Imports lightkit but decorates nothing."""

import lightkit as lk


def helper(x: int = 1) -> int:
    return x + len(lk.__all__)
