"""Media building blocks of the live path, with no sessions in them: PyAV and byte formats.

- `packets.py`: `EncodedPacket` (what every output takes) and `AudioSource`.
- `ts_input.py`: MPEG-TS segments in, decoded video and timed audio out (a decode thread).
- `audio_frames.py`: audio frame headers (ADTS, MPEG audio, AC-3): sizes, durations, ADTS framing.
- `sizes.py`: processing sizes and the RGB resize.
- `video_encoder.py`: frames to H.264 packets (x264, zero latency).
- `audio_encoder.py`: input audio to output packets (copied, or transcoded to AAC).
- `ts_mux.py`: packets to standalone MPEG-TS segments, written as they come.
- `threads.py`: a dedicated thread as an awaitable; `drain.py`: the end of an encoder.
"""
