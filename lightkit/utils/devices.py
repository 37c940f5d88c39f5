"""The forms of ``accelerator`` and ``devices`` (``"auto"``, a count, indices), checked without
looking at the machine: shared by ``TrainerConfig``'s validation and the runtime's connector."""

from __future__ import annotations

from typing import Any

from lightkit.errors import ConfigError, did_you_mean

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def check_accelerator(accelerator: Any) -> str:
    """The accelerator's name, ``"gpu"`` read as ``"cuda"``.

    Raises:
        ConfigError: ``unknown-accelerator``, with the available names and a did-you-mean.
    """
    name = "cuda" if accelerator == "gpu" else accelerator
    if name not in ACCELERATORS:
        raise ConfigError(
            f"accelerator={accelerator!r} is unknown.{did_you_mean(str(accelerator), ACCELERATORS)} "
            f"Available: {', '.join(ACCELERATORS)}.",
            code="unknown-accelerator",
        )
    return str(name)


DEVICES_FORMS = (
    "expected 'auto', a count (1, 2, ...; -1 for all), a list of indices ([0, 1]) or a string "
    "of them ('0,1')"
)


def _bad_devices(devices: Any, why: str = "is not a device setting") -> ConfigError:
    return ConfigError(f"devices={devices!r} {why}: {DEVICES_FORMS}.", code="bad-devices")


def parse_devices(devices: Any) -> int | list[int] | str:
    """The form of a ``devices`` value, checked without looking at the machine.

    ``"auto"`` stays ``"auto"``; ``-1`` and ``"-1"`` (every device) become ``-1``; a count
    (``2``, ``"2"``) becomes an ``int``; indices (``[0, 1]``, ``(0, 1)``, ``"0,1"``, ``"1,"``)
    become a ``list[int]``. Whether the machine has those devices is :func:`resolve_devices`'s
    business.

    Raises:
        ConfigError: ``bad-devices``, naming the value and the accepted forms.
    """
    if isinstance(devices, str):
        text = devices.strip()
        if text.lower() == "auto":
            return "auto"
        if "," in text:
            items = [d.strip() for d in text.split(",")]
            if not all(d.isdecimal() for d in items if d):
                raise _bad_devices(devices, "holds something that is not an index")
            return _check_indices(devices, [int(d) for d in items if d])
        if not text.removeprefix("-").isdecimal():
            raise _bad_devices(devices)
        count = int(text)
    elif isinstance(devices, (list, tuple)):
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
            raise _bad_devices(devices, "holds something that is not an index")
        return _check_indices(devices, list(devices))
    elif isinstance(devices, int) and not isinstance(devices, bool):
        count = devices
    else:
        raise _bad_devices(devices)
    if count == -1:
        return -1
    if count < 1:
        raise _bad_devices(devices, "asks for no device" if count == 0 else "is below -1")
    return count


def _check_indices(devices: Any, indices: list[int]) -> list[int]:
    if not indices:
        raise _bad_devices(devices, "selects no device")
    if any(i < 0 for i in indices):
        raise _bad_devices(devices, "holds a negative index")
    if len(set(indices)) < len(indices):
        raise _bad_devices(devices, "names a device twice")
    return indices
