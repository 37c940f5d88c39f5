"""Read TensorBoard event files back (the TFRecord framing, parsed with tensorboardX's
protos), so tests check what TensorBoard itself would read."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path: Path) -> list[Event]:
    """Every event of one file, checking each record's CRCs."""
    events = []
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        assert length_crc == _masked(header), f"corrupt length at byte {pos} of {path}"
        body = data[pos + 12 : pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert body_crc == _masked(body), f"corrupt record at byte {pos} of {path}"
        event = Event()
        event.ParseFromString(body)
        events.append(event)
        pos += 16 + length
    return events


def event_files(log_dir: Path) -> list[Path]:
    return sorted(Path(log_dir).glob("events.out.tfevents.*"))


def all_events(log_dir: Path) -> list[Event]:
    return [e for f in event_files(log_dir) for e in read_events(f)]


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value), ...]`` of every scalar, in the order written."""
    out: dict[str, list[tuple[int, float]]] = {}
    for event in all_events(log_dir):
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def hparams_data(log_dir: Path) -> dict[str, Any]:
    """The HParams plugin's records by tag (experiment, session_start_info, ...)."""
    out: dict[str, Any] = {}
    for event in all_events(log_dir):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData()
                data.ParseFromString(value.metadata.plugin_data.content)
                out[value.tag.split("/", 1)[1]] = data
    return out


def has_graph(log_dir: Path) -> bool:
    return any(e.WhichOneof("what") == "graph_def" for e in all_events(log_dir))
