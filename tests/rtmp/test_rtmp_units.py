"""Sans-IO RTMP parsing on captured and hand-built byte streams (no sockets)."""

from __future__ import annotations

import asyncio
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from livestream.live.testsrc import read_number
from livestream.media.audio_frames import adts_to_raw
from livestream.rtmp import amf0
from livestream.rtmp.chunks import MSG_AUDIO, MSG_VIDEO, ChunkReader, ProtocolError, encode_message
from livestream.rtmp.flv import (
    CODED_FRAMES,
    SEQUENCE_START,
    AudioTag,
    FlvError,
    VideoTag,
    annexb_nals,
    parse_audio,
    parse_video,
)
from livestream.rtmp.ingest import RtmpIngest
from livestream.rtmp.protocol import (
    ClientConnection,
    Connected,
    Media,
    Metadata,
    PublishRequested,
    PublishStarted,
    ServerConnection,
    Unpublished,
)

DATA = Path(__file__).parent / "data"


def _replay(data: bytes, *, seed: int = 1) -> tuple[ServerConnection, list[Any]]:
    """Feed captured client bytes in random-size pieces; accept the publish when asked."""
    rng = random.Random(seed)
    conn, events, pos = ServerConnection(), [], 0
    while pos < len(data):
        n = rng.randint(1, 3000)
        for event in conn.feed(data[pos : pos + n]):
            events.append(event)
            if isinstance(event, PublishRequested):
                conn.accept_publish()
        conn.data_to_send()
        pos += n
    return conn, events


def test_captured_ffmpeg_publish_with_extended_timestamps_and_type3_starts() -> None:
    conn, events = _replay((DATA / "ffmpeg_silent_extts.bin").read_bytes())
    kinds = [type(e) for e in events]
    assert kinds[0] is Connected and events[0].app == "live"
    publish = next(e for e in events if isinstance(e, PublishRequested))
    assert publish.name == "capture" and publish.kind == "live"
    assert any(isinstance(e, Metadata) and e.values.get("width") == 64.0 for e in events)
    assert isinstance(events[-1], Unpublished)
    media = [e for e in events if isinstance(e, Media)]
    video = [e.timestamp for e in media if e.kind == "video"]
    audio = [e.timestamp for e in media if e.kind == "audio"]
    # -output_ts_offset 16800 s: every timestamp is above 0xFFFFFF ms (extended timestamps).
    # (The sequence headers come first, at 0; the AAC priming puts the first audio 21 ms early.)
    assert video[0] == audio[0] == 0
    assert min(video[1:]) == 16_800_000 and min(audio[1:]) == 16_800_000 - 21 > 0xFFFFFF
    # 30 video frames, 33/34 ms apart; audio frames 21/22 ms apart: nothing repeats or jumps,
    # although constant-size audio messages start with type-3 chunks.
    assert len(video) == 32  # the sequence header, 30 frames, the end of sequence
    steps = {b - a for a, b in zip(video[1:-1], video[2:-1])}
    assert steps <= {33, 34}, steps
    audio_steps = {b - a for a, b in zip(audio[1:], audio[2:])}
    assert audio_steps <= {21, 22}, audio_steps
    assert abs(audio[-1] - audio[1] - (len(audio) - 2) * 1024 / 48) < 1  # ms rounding only


def test_the_same_bytes_give_the_same_messages_however_they_are_split() -> None:
    data = (DATA / "ffmpeg_silent_extts.bin").read_bytes()
    one = [e for e in _replay(data, seed=1)[1] if isinstance(e, Media)]
    for seed in (2, 3):
        assert [e for e in _replay(data, seed=seed)[1] if isinstance(e, Media)] == one
    conn, events = ServerConnection(), []
    for i in range(0, 6000):  # byte by byte through the handshake and the first messages
        events += conn.feed(data[i : i + 1])
    assert isinstance(events[0], Connected)


class _Target:
    def __init__(self) -> None:
        self.video: list[av.VideoFrame] = []
        self.audio: list[av.AudioFrame] = []
        self.errors: list[str] = []
        self.source: Any = None

    def put_video(self, frame: av.VideoFrame, arrival: float | None = None) -> None:
        self.video.append(frame)

    def put_audio(self, item: Any) -> None:
        self.audio.append(item)

    def set_audio_source(self, source: Any) -> None:
        self.source = source

    def report_error(self, message: str) -> None:
        self.errors.append(message)

    def on_input(self) -> None:
        pass

    def trace(self, name: str) -> None:
        pass


async def _decode(events: list[Any]) -> _Target:
    ingest, target = RtmpIngest("t"), _Target()
    task = asyncio.create_task(ingest.run(target))
    for e in events:
        if isinstance(e, Media):
            tag = parse_video(e.payload) if e.kind == "video" else parse_audio(e.payload)
            if tag is not None:
                ingest.put(tag, e.timestamp, 0.0)
    ingest.end()
    await asyncio.wait_for(task, 30)
    return target


async def test_captured_h264_aac_decodes_with_pts_on_the_publisher_clock() -> None:
    _, events = _replay((DATA / "ffmpeg_silent_extts.bin").read_bytes())
    target = await _decode(events)
    assert len(target.video) == 30 and not target.errors
    assert target.video[0].pts >= 16_800_000 and target.video[0].time_base == Fraction(1, 1000)
    assert target.source is not None and target.source.codec == "aac" and target.source.sample_rate == 48000
    assert len(target.audio) >= 45


async def test_captured_enhanced_rtmp_hevc_decodes() -> None:
    _, events = _replay((DATA / "pyav_hevc_enhanced.bin").read_bytes())
    tags = [parse_video(e.payload) for e in events if isinstance(e, Media) and e.kind == "video"]
    assert tags[0] is not None and tags[0].codec == "hevc" and tags[0].kind == SEQUENCE_START
    target = await _decode(events)
    assert [read_number(f.to_ndarray(format="rgb24")) for f in target.video] == list(range(15))


def _chunk(fmt: int, csid: int, ts: int | None = None, length: int | None = None, type_id: int | None = None) -> bytes:
    head = bytes([fmt << 6 | csid])
    if fmt <= 2:
        head += min(ts or 0, 0xFFFFFF).to_bytes(3, "big")
    if fmt <= 1:
        head += (length or 0).to_bytes(3, "big") + bytes([type_id or 0])
    if fmt == 0:
        head += (1).to_bytes(4, "little")
    return head


def test_type3_chunk_starting_a_message_adds_the_previous_delta() -> None:
    r = ChunkReader(chunk_size=128)
    stream = _chunk(0, 4, 1000, 3, MSG_AUDIO) + b"abc"
    stream += _chunk(2, 4, 21) + b"def"  # delta 21
    stream += _chunk(3, 4) + b"ghi"  # a new message: +21 again (pyrtmp: +0)
    stream += _chunk(3, 4) + b"jkl"
    msgs = r.feed(stream)
    assert [(m.timestamp, m.payload) for m in msgs] == [(1000, b"abc"), (1021, b"def"), (1042, b"ghi"), (1063, b"jkl")]


def test_extended_timestamp_is_read_on_type3_continuations() -> None:
    """OBS >= 30.1 and FFmpeg repeat the extended timestamp on type-3 continuation chunks."""
    payload = bytes(range(200))
    data = encode_message(6, MSG_VIDEO, 1, 0x1234567, payload, 64)
    assert data.count((0x1234567).to_bytes(4, "big")) == 4  # one per chunk
    msgs = ChunkReader(chunk_size=64).feed(data)
    assert len(msgs) == 1 and msgs[0].timestamp == 0x1234567 and msgs[0].payload == payload
    # And a type-3 chunk starting the next message carries it too (its delta).
    r = ChunkReader(chunk_size=64)
    first = _chunk(1, 6, 0xFFFFFF, 2, MSG_VIDEO) + (0x1000000).to_bytes(4, "big") + b"xy"
    nxt = _chunk(3, 6) + (0x1000000).to_bytes(4, "big") + b"zw"
    msgs = r.feed(first + nxt)
    assert [m.timestamp for m in msgs] == [0x1000000, 0x2000000]


def test_set_chunk_size_abort_and_aggregate() -> None:
    r = ChunkReader()
    big = bytes(300)
    data = encode_message(2, 1, 0, 0, (4096).to_bytes(4, "big"), 128)
    data += encode_message(6, MSG_VIDEO, 1, 5, big, 4096)
    msgs = r.feed(data)
    assert r.chunk_size == 4096 and msgs[-1].payload == big
    # Abort drops a partial message on chunk stream 6.
    partial = encode_message(6, MSG_VIDEO, 1, 6, bytes(5000), 4096)[: 4096 + 12]
    r.feed(partial)
    msgs = r.feed(encode_message(2, 2, 0, 0, (6).to_bytes(4, "big"), 4096) + encode_message(6, MSG_VIDEO, 1, 7, b"ok", 4096))
    assert [m.payload for m in msgs if m.type_id == MSG_VIDEO] == [b"ok"]
    # Aggregate: two FLV tags in one message, timestamps rebased on the message's.
    def tag(t: int, ts: int, body: bytes) -> bytes:
        return bytes([t]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24]) + b"\0\0\0" + body + (11 + len(body)).to_bytes(4, "big")
    agg = tag(9, 100, b"v1") + tag(8, 120, b"a1")
    msgs = ChunkReader().feed(encode_message(6, 22, 1, 5000, agg, 128))
    assert [(m.type_id, m.timestamp, m.payload) for m in msgs] == [(9, 5000, b"v1"), (8, 5020, b"a1")]


def test_garbage_and_limits_raise_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="not an RTMP handshake"):
        ServerConnection().feed(b"GET / HTTP/1.1\r\n")
    conn = ServerConnection()
    client = ClientConnection("live", "k", "rtmp://h/live")
    conn.feed(client.data_to_send())
    client.feed(conn.data_to_send())
    conn.feed(client.data_to_send())
    with pytest.raises(ProtocolError):
        conn.feed(bytes([0x03]) + b"\xff\xff\xff" + (0xFFFFFF).to_bytes(3, "big") + b"\x14" + bytes(4) + bytes(100))
    with pytest.raises(ProtocolError, match="bad AMF0"):
        ServerConnection_after_handshake().feed(encode_message(3, 20, 0, 0, b"\x02\x00\x10abc", 128))


def ServerConnection_after_handshake() -> ServerConnection:  # noqa: N802
    conn = ServerConnection()
    conn.feed(b"\x03" + bytes(1536) + bytes(1536))
    conn.data_to_send()
    return conn


def test_client_and_server_protocols_talk_to_each_other() -> None:
    server, client = ServerConnection(), ClientConnection("live/sub", "key?token=1", "rtmp://h:1935/live/sub")
    events: list[Any] = []
    client_events: list[Any] = []
    for _ in range(10):
        for e in server.feed(client.data_to_send()):
            events.append(e)
            if isinstance(e, PublishRequested):
                server.accept_publish()
        client_events += client.feed(server.data_to_send())
    assert any(isinstance(e, PublishStarted) for e in client_events)
    req = next(e for e in events if isinstance(e, PublishRequested))
    assert (req.name, req.app) == ("key?token=1", "live/sub")
    client.send_media("video", 40, b"\x17\x01\x00\x00\x00data")
    client.send_media("video", 0x1FFFFFF, b"\x27\x01\x00\x00\x00more")
    media = [e for e in server.feed(client.data_to_send()) if isinstance(e, Media)]
    assert [(m.timestamp, m.payload[-4:]) for m in media] == [(40, b"data"), (0x1FFFFFF, b"more")]
    # A refused publish answers an error status, never Publish.Start.
    server2, client2 = ServerConnection(), ClientConnection("live", "dup", "rtmp://h/live")
    with pytest.raises(ProtocolError, match="BadName"):
        for _ in range(10):
            for e in server2.feed(client2.data_to_send()):
                if isinstance(e, PublishRequested):
                    server2.reject_publish("NetStream.Publish.BadName", "in use")
            client2.feed(server2.data_to_send())
    assert not client2.published


def test_amf0_round_trip_and_ffmpeg_71_connect_types() -> None:
    values = ["connect", 1.0, {"app": "live", "fourCcList": ["hvc1", "av01"], "n": None, "ok": True}]
    assert amf0.decode_all(amf0.encode_all(*values)) == values
    date = b"\x0b" + bytes(8) + b"\x00\x00"
    long_string = b"\x0c" + (3).to_bytes(4, "big") + b"abc"
    ecma = b"\x08" + (1).to_bytes(4, "big") + b"\x00\x01k" + b"\x00" + bytes(8) + b"\x00\x00\x09"
    assert amf0.decode_all(date + long_string + ecma) == [0.0, "abc", {"k": 0.0}]
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(b"\x11")
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(b"\x0a\xff\xff\xff\xff")


def test_flv_tags() -> None:
    tag = parse_video(b"\x17\x00\x00\x00\x00config")
    assert tag == VideoTag("h264", SEQUENCE_START, True, 0, b"config")
    tag = parse_video(b"\x27\x01\xff\xff\xfeframe")  # negative composition time
    assert tag is not None and tag.kind == CODED_FRAMES and tag.cts == -2 and not tag.keyframe
    tag = parse_video(b"\x91hvc1\x00\x00\x10data")  # Enhanced RTMP: keyframe, CodedFrames
    assert tag == VideoTag("hevc", CODED_FRAMES, True, 16, b"data")
    assert parse_video(b"\x93av01obu") == VideoTag("av1", CODED_FRAMES, True, 0, b"obu")
    assert parse_video(b"\x96hvc1....") is None  # multitrack: skipped
    with pytest.raises(FlvError, match="Sorenson"):
        parse_video(b"\x22\x00")
    with pytest.raises(FlvError, match="unsupported video codec 'vvc1'"):
        parse_video(b"\x90vvc1")
    assert parse_audio(b"\xaf\x00\x11\x90") == AudioTag("aac", True, b"\x11\x90")
    with pytest.raises(FlvError, match="MP3"):
        parse_audio(b"\x2f\x00")
    assert annexb_nals(b"\x00\x00\x00\x01\x67ab\x00\x00\x01\x68c\x00\x00\x00\x01\x65def") == [b"\x67ab", b"\x68c", b"\x65def"]
    raw, asc = adts_to_raw(b"\xff\xf1\x4c\x80\x01\x3f\xfc" + b"aac")
    assert raw == b"aac" and asc == b"\x11\x90"  # AAC LC, 48 kHz, stereo
