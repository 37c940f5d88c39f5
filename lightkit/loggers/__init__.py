"""Loggers: ``TensorBoardLogger`` and ``CSVLogger``; ``logger=True`` uses both."""

from typing import TYPE_CHECKING, Any

from lightkit.loggers.base import Logger
from lightkit.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from lightkit.loggers.csv import CSVLogger
    from lightkit.loggers.tensorboard import TensorBoardLogger

# Imported when first used: a run with logger=False loads neither.
__getattr__ = lazy_attributes(
    __name__,
    {"CSVLogger": "lightkit.loggers.csv", "TensorBoardLogger": "lightkit.loggers.tensorboard"},
    globals(),
)

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]


def default_loggers(config: Any) -> list[Logger]:
    """``logger=True``: TensorBoard and CSV; ``False``: none; a logger or a list as given."""
    value = config.logger
    if value is True:
        from lightkit.loggers.csv import CSVLogger
        from lightkit.loggers.tensorboard import TensorBoardLogger

        return [TensorBoardLogger(), CSVLogger()]
    return check_loggers(value)


def check_loggers(value: Any) -> list[Logger]:
    """The loggers a ``logger`` flag other than ``True`` names; a clear error for anything that
    is not a :class:`Logger`."""
    if value is False or value is None:
        return []
    loggers = list(value) if isinstance(value, (list, tuple)) else [value]
    for logger in loggers:
        if not isinstance(logger, Logger):
            from lightkit.errors import ConfigError

            named = (
                " A name such as 'csv' chooses a logger on the command line only."
                if isinstance(logger, str)
                else ""
            )
            raise ConfigError(
                f"logger={logger!r}: {type(logger).__name__} is not a lk.Logger. Pass True, "
                f"False, a Logger (TensorBoardLogger, CSVLogger, your own subclass) or a "
                f"list.{named}",
                code="not-a-logger",
            )
    return loggers
