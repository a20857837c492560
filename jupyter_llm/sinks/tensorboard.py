"""A dependency-free TensorBoard event-file writer: scalars only, no TensorFlow, tensorboardX or protobuf.

An event file is a sequence of TFRecords::

    uint64 length | uint32 masked CRC-32C of the length | data | uint32 masked CRC-32C of the data

(little-endian), where each `data` is a serialized `tensorflow.Event` protobuf. The few fields needed are encoded by
hand::

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

The first event of a file carries `file_version = "brain.Event:2"`. Writes encode the event and append it to an
in-memory buffer (tens of microseconds); a daemon thread frames the buffer (the CRCs, in pure Python, are the
costly part) and moves it to the file every `flush_secs` seconds, so a live TensorBoard sees the data; `flush()`
and `close()` do so at once. The caller's thread never waits on the disk except in those two.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import struct
import threading
import time
import weakref

FILE_VERSION = "brain.Event:2"
FILE_PREFIX = "events.out.tfevents."

# ---------------------------------------------------------------- CRC-32C (Castagnoli), table driven, reflected


def _make_table(poly: int = 0x82F63B78) -> tuple:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _make_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of `data` (continuing from `crc`); crc32c(b"123456789") == 0xE3069283."""
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC as TFRecord stores it: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord frame around `data`."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), data, struct.pack("<I", masked_crc32c(data))))


# ---------------------------------------------------------------- protobuf wire format, the few pieces needed


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # int64: negatives as 10-byte two's complement, as protobuf does
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _float32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except OverflowError:  # beyond float32's range: what a float32 cast gives
        return struct.pack("<f", math.copysign(math.inf, value))


def encode_value(tag: str, value: float) -> bytes:
    """Summary.Value{tag, simple_value}."""
    return _bytes_field(1, tag.encode("utf-8")) + b"\x15" + _float32(value)  # field 2, wire type 5 (fixed32)


def encode_event(wall_time: float, step: int = 0, *, file_version: str | None = None,
                 values: list[bytes] | None = None) -> bytes:
    """Event{wall_time, step, file_version | summary{value...}}; `values` are `encode_value` outputs."""
    out = b"\x09" + struct.pack("<d", wall_time)  # field 1, wire type 1 (fixed64)
    if step:
        out += b"\x10" + _varint(step)  # field 2, varint
    if file_version is not None:
        out += _bytes_field(3, file_version.encode("utf-8"))
    if values:
        out += _bytes_field(5, b"".join(_bytes_field(1, v) for v in values))
    return out


# ---------------------------------------------------------------- the writer

_LIVE: "weakref.WeakSet[EventWriter]" = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:  # the flusher is a daemon thread: do not lose its last seconds at exit
    for writer in list(_LIVE):
        try:
            writer.close()
        except Exception:  # noqa: BLE001 — never fail interpreter exit
            pass


class EventWriter:
    """Appends scalar summaries to a new `events.out.tfevents.<time>.<hostname>` file in `logdir`.

    >>> w = EventWriter("runs/mlp")          # doctest: +SKIP
    >>> w.scalar("train/loss", 0.25, step=10); w.close()   # doctest: +SKIP

    Errors of the background flush (disk full...) are kept in `error` and stop further writes; `flush()` and
    `close()` raise them.
    """

    def __init__(self, logdir, flush_secs: float = 2.0, filename_suffix: str = ""):
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        self.flush_secs = float(flush_secs)
        self.error: BaseException | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._buffer_lock = threading.Lock()  # held only to append or swap: never while touching the disk
        self._io_lock = threading.Lock()
        self._closed = False
        self._file, self.path = self._open(filename_suffix)
        self._append(encode_event(time.time(), file_version=FILE_VERSION))
        self.flush()  # the file is valid and visible from the start
        self._wake = threading.Event()
        self._thread = threading.Thread(target=_flusher, args=(weakref.ref(self), self._wake, self.flush_secs),
                                        name="jupyter-llm-tfevents", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _open(self, suffix: str):
        host = socket.gethostname().replace(os.sep, "_") or "localhost"
        base = os.path.join(self.logdir, f"{FILE_PREFIX}{int(time.time()):010d}.{host}{suffix}")
        path, n = base, 0
        while True:
            try:
                return open(path, "xb"), path  # never append to (or clobber) another writer's file
            except FileExistsError:
                n += 1
                path = f"{base}.{os.getpid()}.{n}"

    # -- writing

    def scalar(self, tag: str, value, step: int, wall_time: float | None = None) -> None:
        """Record `value` (anything `float()` takes) under `tag` at `step`."""
        self.scalars({tag: value}, step, wall_time)

    def scalars(self, values: dict, step: int, wall_time: float | None = None) -> None:
        """Record several scalars at one step, as one event."""
        if not values:
            return
        encoded = [encode_value(str(tag), float(value)) for tag, value in values.items()]
        self._append(encode_event(time.time() if wall_time is None else float(wall_time), int(step), values=encoded))

    def _append(self, event: bytes) -> None:
        if self._closed:
            raise ValueError(f"EventWriter for {self.path} is closed.")
        if self.error is not None:  # the file is broken: do not grow the buffer without bound
            return
        with self._buffer_lock:  # framed (CRCs) at flush time, mostly on the background thread
            self._buffer.append(event)
            self._buffered += len(event)
            big = self._buffered > (1 << 20)
        if big:
            self._wake.set()

    def flush(self) -> None:
        """Write everything buffered to the file now (and to the OS: a reader sees it)."""
        with self._io_lock:
            if self.error is not None:
                raise self.error
            with self._buffer_lock:
                events, self._buffer, self._buffered = self._buffer, [], 0
            data = b"".join(map(tfrecord, events))
            if data and not self._file.closed:
                try:
                    self._file.write(data)
                    self._file.flush()
                except BaseException as exc:
                    self.error = exc
                    raise

    def close(self) -> None:
        """Flush, stop the background thread and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        wake = getattr(self, "_wake", None)
        if wake is not None:
            wake.set()
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=5)
        try:
            self.flush()
        finally:
            with self._io_lock:
                self._file.close()
            _LIVE.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"EventWriter({self.path!r})"


def _flusher(ref, wake: threading.Event, interval: float) -> None:
    """Background: flush every `interval` seconds (or when woken) until the writer is closed or collected."""
    while True:
        wake.wait(interval)
        wake.clear()
        writer = ref()
        if writer is None or writer._closed:
            return
        try:
            writer.flush()
        except BaseException:  # kept in writer.error; the caller sees it on its next flush or close
            return
        finally:
            del writer
