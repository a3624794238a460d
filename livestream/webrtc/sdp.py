"""Sans-IO SDP checks and edits for WHIP/WHEP (RFC 9725): offers, answers, trickle fragments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiortc import RTCIceCandidate
from aiortc.sdp import SessionDescription, candidate_from_sdp, parse_h264_profile_level_id

__all__ = [
    "OfferError",
    "OfferInfo",
    "SdpFragment",
    "add_bitrate_hints",
    "check_offer",
    "parse_sdpfrag",
]

#: Chromium starts its bandwidth estimate near 300 kbps and aiortc sends only REMB, no
#: transport-cc: without these hints a camera publishes 480x360 for ~20 s (findings §3).
BITRATE_HINTS = "x-google-start-bitrate=1500;x-google-min-bitrate=750;x-google-max-bitrate=4000"


class OfferError(ValueError):
    """The offer cannot be answered; the message says why (400 to the client)."""


@dataclass(frozen=True)
class OfferInfo:
    """What an offer carries that decides how to answer it."""

    video: bool
    audio: bool
    #: The video m-line offers H.264 packetization-mode 1 in (constrained) baseline.
    h264: bool
    vp8: bool
    video_direction: str
    ice_ufrag: str | None
    #: The mid whose ICE transport takes every candidate: the BUNDLE group's first, else the
    #: first m-line's (aiortc ignores candidates given to a bundled m-line).
    transport_mid: str | None = None


def check_offer(text: str, *, publishing: bool) -> OfferInfo:
    """Parse and check an offer; raises `OfferError` with a message for the client.

    `publishing`: a WHIP offer (the client sends video), else WHEP (the client receives).
    """
    if not text.lstrip().startswith("v=0"):
        raise OfferError("The body is not an SDP offer (it must start with v=0).")
    try:
        desc = SessionDescription.parse(text)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError, AssertionError, StopIteration) as exc:
        # aiortc's parser checks lines with `assert` (and an a=fmtp/a=rtcp-fb for a payload type
        # without an a=rtpmap ends its `next()` with StopIteration): on untrusted input, a bad offer.
        raise OfferError(f"Malformed SDP offer: {type(exc).__name__} {exc}".rstrip()) from None
    video = [m for m in desc.media if m.kind == "video" and m.port != 0]
    audio = [m for m in desc.media if m.kind == "audio" and m.port != 0]
    if not video:
        raise OfferError("The offer has no video (an m=video section is required).")
    v = video[0]
    ice = v.ice
    if ice is None or not ice.usernameFragment or not ice.password:
        # aiortc needs ICE credentials; an offer without them cannot connect.
        raise OfferError("The offer has no ICE credentials (a=ice-ufrag, a=ice-pwd).")
    if v.dtls is None or not v.dtls.fingerprints:
        raise OfferError("The offer has no DTLS fingerprint (a=fingerprint).")
    direction = v.direction or "sendrecv"
    wanted = ("sendonly", "sendrecv") if publishing else ("recvonly", "sendrecv")
    if direction not in wanted:
        verb = "send" if publishing else "receive"
        raise OfferError(f"The offer's video is {direction}: a {'WHIP' if publishing else 'WHEP'} client must {verb} video.")
    names = {c.mimeType.lower() for c in v.rtp.codecs}
    h264 = any(_baseline_h264(c.parameters) for c in v.rtp.codecs if c.mimeType.lower() == "video/h264")
    vp8 = "video/vp8" in names
    if not (h264 or vp8):
        raise OfferError(f"No supported video codec in the offer (need H.264 baseline packetization-mode 1 or VP8; got {sorted(names)}).")
    bundle = next((g.items for g in desc.group if g.semantic == "BUNDLE" and g.items), None)
    transport_mid = str(bundle[0]) if bundle else (desc.media[0].rtp.muxId or None)
    return OfferInfo(
        video=True,
        audio=bool(audio),
        h264=h264,
        vp8=vp8,
        video_direction=direction,
        ice_ufrag=ice.usernameFragment,
        transport_mid=transport_mid,
    )


def _baseline_h264(params: Mapping[str, object]) -> bool:
    if str(params.get("packetization-mode", "0")) != "1":
        return False
    try:
        profile, _ = parse_h264_profile_level_id(str(params.get("profile-level-id", "42e01f")))
    except ValueError:
        return False
    return profile.name in ("PROFILE_CONSTRAINED_BASELINE", "PROFILE_BASELINE")


def add_bitrate_hints(sdp: str, hints: str = BITRATE_HINTS) -> str:
    """Append Chromium's x-google bitrate hints to the video fmtp lines of an answer."""
    out: list[str] = []
    video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video")
        if video and line.startswith("a=fmtp:") and "apt=" not in line and "x-google" not in line:
            line = f"{line};{hints}"
        out.append(line)
    return "\r\n".join(out) + "\r\n"


@dataclass
class SdpFragment:
    """An `application/trickle-ice-sdpfrag` body (RFC 8840)."""

    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[RTCIceCandidate] = field(default_factory=list)
    end_of_candidates: bool = False


def parse_sdpfrag(text: str) -> SdpFragment:
    """Candidates with their m-line's mid (or index); raises `OfferError` on a bad line."""
    frag = SdpFragment()
    mid: str | None = None
    index = -1
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=ice-ufrag:"):
            frag.ice_ufrag = line[12:]
        elif line.startswith("a=ice-pwd:"):
            frag.ice_pwd = line[10:]
        elif line.startswith("a=end-of-candidates"):
            frag.end_of_candidates = True
        elif line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[12:])
            except (ValueError, IndexError, AssertionError) as exc:
                raise OfferError(f"Malformed ICE candidate {line!r}: {type(exc).__name__} {exc}".rstrip()) from None
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = max(index, 0)
            frag.candidates.append(candidate)
    return frag
