"""Recording: a session output that remuxes the shared encode into fragmented MP4 files.

    recordings = Recordings(Path("recordings"))           # one per engine (the session manager's)
    recording = recordings.start(session)                 # POST /live/{stream}/record
    await recordings.stop(stream)                         # DELETE /live/{stream}/record
    recordings.list(stream)                               # GET /live/{stream}/recordings

`RecordingSink` is a `QueuedSink`: it takes the session's encoded packets (no second encode)
and writes them, unchanged, into `movflags=frag_keyframe+empty_moov+default_base_moof` MP4:
the header goes first and every keyframe starts a fragment that is complete on disk once
written, so a file cut short (a crash, a power cut) plays up to its last fragment.

- A file starts at the first video keyframe (the sink asks for one when it attaches); its
  timestamps start at 0. Audio is included when it arrives within `AUDIO_WAIT` of that
  keyframe (it follows the video by at most a frame); audio starting later is left out.
- Video is H.264 as encoded (SPS/PPS in front of every IDR); audio is AAC (raw or ADTS,
  stored raw with its AudioSpecificConfig) or the copied input's MP3/MP2/AC-3/E-AC-3.
- Writes run on a worker thread, a batch at a time, never on the loop. A write error (disk
  full, file removed, permissions) ends the recording, reported as an `error` event on the
  session; the stream and its other outputs go on.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
from av.container import InputContainer, OutputContainer
from av.stream import Stream

from ..media.audio_frames import adts_header, adts_to_raw
from ..media.packets import OUTPUT_TIME_BASE, EncodedPacket
from . import PacketSink, QueuedSink, SinkFanout

__all__ = [
    "DEFAULT_RECORDINGS_DIR",
    "MP4_FLAGS",
    "Mp4Writer",
    "Recording",
    "RecordingError",
    "RecordingSink",
    "Recordings",
]

log = logging.getLogger(__name__)

#: Where recordings go without `--record DIR` (relative to the engine's working directory).
DEFAULT_RECORDINGS_DIR = Path("recordings")
#: Fragmented MP4: header first, one self-contained fragment per keyframe.
MP4_FLAGS = "frag_keyframe+empty_moov+default_base_moof"
#: How long (90 kHz ticks) a file waits after its first keyframe for audio to show up.
AUDIO_WAIT = 90_000
#: One frame at 30 fps (90 kHz ticks): the gap left where the input's clock jumps back.
_FRAME_TICKS = 3000
#: Packets written per worker-thread call at most.
_BATCH = 64
#: Demuxer names for the copied audio codecs (a template stream is probed from one frame).
_AUDIO_FORMATS = {"aac": "aac", "mp3": "mp3", "mp2": "mp3", "ac3": "ac3", "eac3": "eac3"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


class RecordingError(Exception):
    """A recording cannot start (already recording, folder not writable, stream not live)."""


class _Attachable(Protocol):
    """What a recording needs of a session (`livestream.live.session.Session`)."""

    stream_id: str
    @property
    def ingest(self) -> object:
        """Its input (`livestream.ingest.Ingest`); one with `input_sinks` can record the input too."""

    def attach_sink(self, sink: PacketSink) -> None: ...

    async def detach_sink(self, sink: PacketSink, timeout: float = 0.0) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Recording:
    """One recorded file and what is known about it (`GET /live/{stream}/recordings`)."""

    stream: str
    path: Path
    #: Unix time in ms (as the status events' times).
    started: int = field(default_factory=_now_ms)
    ended: int | None = None
    #: Why the recording ended early (a write error), if it did.
    error: str | None = None
    #: "output" (the processed stream) or "input" (the publisher's stream as sent).
    source: str = "output"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def recording(self) -> bool:
        return self.ended is None

    def info(self) -> dict[str, Any]:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return {
            "stream": self.stream,
            "source": self.source,
            "name": self.name,
            "path": str(self.path),
            "bytes": size,
            "started": self.started,
            "ended": self.ended,
            "recording": self.recording,
            "error": self.error,
        }


def _parameter_sets(annexb: bytes) -> bool:
    """Whether an Annex B access unit carries an SPS (so it can stand alone as a template)."""
    for match in re.finditer(b"\x00\x00\x01", annexb):
        end = match.end()
        if end < len(annexb) and annexb[end] & 0x1F == 7:
            return True
    return False


class Mp4Writer:
    """Remuxes `EncodedPacket`s into one fragmented MP4 file. One thread at a time (a lock)."""

    def __init__(self, path: Path, *, audio_wait: int = AUDIO_WAIT) -> None:
        self.path = path
        self.audio_wait = audio_wait
        self._lock = threading.Lock()
        self._out: OutputContainer | None = None
        self._video: Stream | None = None
        self._audio: Stream | None = None
        self._audio_adts = False
        self._origin: int | None = None
        #: Added to every timestamp after the input's clock jumped (see `_mux`).
        self._shift = 0
        self._last_dts: dict[str, int] = {}
        #: Packets left out because their time went backwards (a clock jump's stragglers).
        self.out_of_order = 0
        self._held: list[EncodedPacket] = []
        self._closed = False
        self.video_packets = 0
        self.audio_packets = 0
        #: Audio packets left out (started too late, or a codec the file could not take).
        self.audio_skipped = 0
        #: The last written timestamp (90 kHz, from the file's start).
        self.last_pts = 0

    def write(self, packets: list[EncodedPacket]) -> None:
        """Write packets (raises `OSError`/`av.FFmpegError` on a write error)."""
        with self._lock:
            if self._closed:
                return
            for packet in packets:
                self._write(packet)

    def close(self) -> None:
        """Write what is held and finish the file. Idempotent; raises on a write error."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._out is None and self._held:
                    self._open()
                    for packet in self._held:
                        self._mux(packet)
                self._held.clear()
            finally:
                out, self._out = self._out, None
                if out is not None:
                    out.close()

    # --- under the lock -------------------------------------------------------------------

    def _write(self, packet: EncodedPacket) -> None:
        if self._out is not None:
            self._mux(packet)
            return
        if self._origin is None:
            if not (packet.kind == "video" and packet.keyframe and _parameter_sets(packet.data)):
                return  # a file starts at a keyframe
            self._origin = packet.dts
        self._held.append(packet)
        if packet.kind == "audio" or packet.dts - self._origin >= self.audio_wait:
            self._open()
            held, self._held = self._held, []
            for item in held:
                self._mux(item)

    def _open(self) -> None:
        first_video = next(p for p in self._held if p.kind == "video")
        first_audio = next((p for p in self._held if p.kind == "audio"), None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        out = av.open(str(self.path), "w", format="mp4", options={"movflags": MP4_FLAGS})
        try:
            # Stream parameters are probed by FFmpeg from one real frame of each: exact for
            # any profile or layout, and no encoder is opened (remux only).
            with _Probe(first_video.data, "h264") as template:
                self._video = out.add_stream_from_template(template.streams.video[0])
            self._video.time_base = OUTPUT_TIME_BASE
            if first_audio is not None:
                self._audio = self._add_audio(out, first_audio)
        except BaseException:
            out.close()
            raise
        self._out = out

    def _add_audio(self, out: OutputContainer, first: EncodedPacket) -> Stream | None:
        fmt = _AUDIO_FORMATS.get(first.codec)
        if fmt is None:
            log.warning("recording %s: audio codec %s cannot go into MP4; recording video only", self.path, first.codec)
            return None
        sample = first.data * 4  # a demuxer probe looks for frames in a row
        config = first.extradata
        if first.codec == "aac":
            if first.adts:
                _, config = adts_to_raw(first.data)
            elif config is not None:
                sample = (adts_header(config, len(first.data)) + first.data) * 4
            else:
                log.warning("recording %s: raw AAC without its config; recording video only", self.path)
                return None
        try:
            with _Probe(sample, fmt) as template:
                stream = out.add_stream_from_template(template.streams.audio[0])
        except (av.FFmpegError, ValueError, IndexError) as exc:
            log.warning("recording %s: audio %s not recordable (%s); recording video only", self.path, first.codec, exc)
            return None
        if config is not None:
            stream.codec_context.extradata = config
        self._audio_adts = first.adts
        stream.time_base = Fraction(1, first.sample_rate) if first.sample_rate else OUTPUT_TIME_BASE
        return stream

    def _mux(self, packet: EncodedPacket) -> None:
        assert self._out is not None and self._origin is not None
        stream = self._video if packet.kind == "video" else self._audio
        if stream is None:
            self.audio_skipped += 1
            return
        offset = self._shift - self._origin
        last = self._last_dts.get(packet.kind)
        if last is not None and packet.dts + offset <= last:
            if not (packet.kind == "video" and packet.keyframe):
                self.out_of_order += 1
                return
            # The encoder restarted on a new input clock (a new source behind the same stream):
            # the file goes on one frame after its last one instead of going back in time.
            self._shift += last + _FRAME_TICKS - (packet.dts + offset)
            offset = self._shift - self._origin
            log.info("recording %s: the stream's clock jumped back; timestamps continue", self.path)
        pts, dts = packet.pts + offset, packet.dts + offset
        if dts < 0:
            self.audio_skipped += 1  # audio from before the first keyframe
            return
        self._last_dts[packet.kind] = dts
        data = packet.data
        if packet.kind == "audio" and self._audio_adts:
            data, _ = adts_to_raw(data)
        out = av.Packet(data)
        out.stream = stream
        out.pts, out.dts, out.time_base = pts, dts, packet.time_base
        if packet.kind == "video":
            out.is_keyframe = packet.keyframe
            self.video_packets += 1
        else:
            if packet.duration:
                out.duration = packet.duration
            self.audio_packets += 1
        self._out.mux_one(out)
        self.last_pts = max(self.last_pts, pts)


class _Probe:
    """An in-memory one-frame input, opened to take its stream as a template (then closed)."""

    def __init__(self, data: bytes, fmt: str) -> None:
        self._data, self._fmt = data, fmt
        self._container: InputContainer | None = None

    def __enter__(self) -> InputContainer:
        self._container = av.open(io.BytesIO(self._data), "r", format=self._fmt)
        return self._container

    def __exit__(self, *exc_info: object) -> None:
        if self._container is not None:
            self._container.close()


class RecordingSink(QueuedSink):
    """Writes the session's output to `recording.path` (see the module docstring)."""

    def __init__(
        self,
        recording: Recording,
        *,
        on_end: Callable[[Recording], None] | None = None,
        max_packets: int = 1024,
    ) -> None:
        super().__init__("recording", max_packets=max_packets)
        self.recording = recording
        self.writer = Mp4Writer(recording.path)
        self._on_end = on_end

    def status(self) -> dict[str, Any]:
        return {
            "path": str(self.recording.path),
            "video_packets": self.writer.video_packets,
            "audio_packets": self.writer.audio_packets,
            "seconds": round(self.writer.last_pts / 90000, 3),
        }

    async def consume(self) -> None:
        try:
            while (packet := await self.get()) is not None:
                batch = [packet]
                while self.depth and len(batch) < _BATCH:
                    more = await self.get()  # returns at once: something is queued
                    if more is None:
                        break
                    batch.append(more)
                await asyncio.to_thread(self.writer.write, batch)
        except Exception as exc:  # disk full, file gone, a packet the muxer refuses: this recording ends
            log.debug("recording %s failed", self.recording.path, exc_info=True)
            self._failed(exc)
        finally:
            await self._close()

    async def _close(self) -> None:
        try:
            # Cancelled here, the worker thread still finishes the file (it holds the lock).
            await asyncio.to_thread(self.writer.close)
        except Exception as exc:
            self._failed(exc)
        finally:
            recording = self.recording
            if recording.error is None and self.writer.video_packets == 0:
                recording.error = "nothing was recorded: the stream sent no video keyframe while recording"
            if recording.ended is None:
                recording.ended = _now_ms()
            log.info("recording %s ended (%s)", recording.path, recording.error or "ok")
            if self._on_end is not None:
                self._on_end(recording)

    def _failed(self, exc: BaseException) -> None:
        recording = self.recording
        if recording.error is None:
            recording.error = f"{type(exc).__name__}: {exc}"
            recording.ended = _now_ms()
            self.report(f"recording of {recording.stream} to {recording.path} stopped: {recording.error}")


class Recordings:
    """An engine's recordings: the folder, the live ones per stream, and what was written.

    A stream's input can be recorded as well (`start(..., input=True)`) when its ingest hands
    over the publisher's encoded stream as it is: an ingest with `input_sinks`, a `SinkFanout`
    (RTMP: `livestream.rtmp.input_tap`). That file is `{stream}-{UTC time}-input.mp4`, starts at
    the publisher's next keyframe and is a remux too.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = (folder or DEFAULT_RECORDINGS_DIR).expanduser().resolve()
        #: stream -> its live recordings: the output's, then the input's if asked for.
        self._active: dict[str, list[tuple[RecordingSink, SinkFanout | None]]] = {}
        self._done: dict[str, list[Recording]] = {}

    def active(self, stream: str) -> list[Recording]:
        return [sink.recording for sink, _ in self._active.get(stream, [])]

    def path_for(self, stream: str, source: str = "output") -> Path:
        """A new file name: `{stream}-{UTC time}.mp4` (`-input` before `.mp4` for the input), made unique."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = f"{_file_prefix(stream)}{stamp}{'-input' if source == 'input' else ''}"
        path = self.folder / f"{base}.mp4"
        n = 1
        while path.exists():
            n += 1
            path = self.folder / f"{base}-{n}.mp4"
        return path

    def start(self, session: _Attachable, *, input: bool = False) -> list[Recording]:
        """Start recording a running session (and its input); raises `RecordingError`."""
        stream = session.stream_id
        active = self._active.get(stream)
        if active:
            raise RecordingError(f"Stream {stream!r} is already being recorded to {active[0][0].recording.path}.")
        taps = getattr(session.ingest, "input_sinks", None) if input else None
        if input and not isinstance(taps, SinkFanout):
            kind = getattr(session.ingest, "name", "this")
            raise RecordingError(f"The {kind} input of {stream!r} cannot be recorded as sent (RTMP and RTMPS inputs can).")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"Cannot create the recordings folder {self.folder}: {exc.strerror or exc}.") from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise RecordingError(f"The recordings folder {self.folder} is not writable.")
        entries: list[tuple[RecordingSink, SinkFanout | None]] = []
        for source, fanout in (("output", None), ("input", taps)) if input else (("output", None),):
            recording = Recording(stream, self.path_for(stream, source), source=source)
            sink = RecordingSink(recording, on_end=self._ended)
            entries.append((sink, fanout))
            self._done.setdefault(stream, []).append(recording)
        self._active[stream] = entries
        for sink, fanout in entries:
            if fanout is None:
                session.attach_sink(sink)
            else:
                fanout.attach(sink)
            log.info("recording the %s of stream %s to %s", sink.recording.source, stream, sink.recording.path)
        return [sink.recording for sink, _ in entries]

    async def stop(self, session: _Attachable, timeout: float = 5.0) -> list[Recording]:
        """Stop recording `session` (the files are finished); [] when it was not recording."""
        entries = self._active.pop(session.stream_id, [])
        for sink, fanout in entries:
            if fanout is None:
                await session.detach_sink(sink, timeout)
            else:
                await fanout.detach(sink, timeout)
        return [sink.recording for sink, _ in entries]

    def _ended(self, recording: Recording) -> None:
        """A recording ended by itself (its stream ended, a write error): the others go on."""
        entries = self._active.get(recording.stream)
        if entries is None:
            return
        left = [(sink, fanout) for sink, fanout in entries if sink.recording is not recording]
        if left:
            self._active[recording.stream] = left
        else:
            del self._active[recording.stream]

    def list(self, stream: str) -> list[Recording]:
        """This engine's recordings of `stream`, and older `{stream}-*.mp4` files in the folder."""
        known = list(self._done.get(stream, []))
        seen = {r.path for r in known}
        prefix = _file_prefix(stream)
        try:
            entries = sorted(self.folder.glob(f"{_glob_escape(prefix)}*.mp4"))
        except OSError as exc:
            log.warning("cannot list the recordings folder %s: %s", self.folder, exc)
            entries = []
        for path in entries:
            match = re.fullmatch(re.escape(prefix) + r"(\d{8}T\d{6}Z)(-input)?(-\d+)?\.mp4", path.name)
            if path in seen or match is None:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            source = "input" if match.group(2) else "output"
            # The start is in the name (UTC, to the second); the end is the last write.
            stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            started, ended = int(stamp.timestamp() * 1000), int(stat.st_mtime * 1000)
            known.append(Recording(stream, path, started=started, ended=ended, source=source))
        known.sort(key=lambda r: (r.started, r.source != "output"))
        return known

    def find(self, stream: str, name: str) -> Recording | None:
        """The recording of `stream` whose file is called `name` (never a path outside the folder)."""
        return next((r for r in self.list(stream) if r.name == name), None)


def _file_prefix(stream: str) -> str:
    return f"{_UNSAFE.sub('_', stream).strip('.') or 'stream'}-"


def _glob_escape(text: str) -> str:
    """`text` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)
