// WHIP/WHEP in the browser (RFC 9725), shared by the player, OBS view and camera pages. No build step.
//
//   const session = await whep("/live/demo/whep", videoElement, {token, lowLatency: true});
//   const session = await whip("/live/demo/whip", mediaStream, {token});
//   await session.close();   // DELETE the resource, close the peer connection
//   const watcher = watchStream({stream, video, audio, token, state, onState});  // reconnects by itself
//
// The offer is POSTed as soon as it exists; candidates the browser finds later are sent with
// PATCH (application/trickle-ice-sdpfrag), so nobody waits for ICE gathering to finish.
// ICE servers (STUN/TURN) are the engine's: an OPTIONS request to the endpoint answers them as
// `Link: <turn:...>; rel="ice-server"` headers (as the 201 does), used before the offer is made.

"use strict";

function authHeaders(token) {
  return token ? { Authorization: "Bearer " + token } : {};
}

// `<stun:host:3478>; rel="ice-server", <turn:host>; rel="ice-server"; username="u"; credential="c"`
function parseIceLinks(header) {
  const servers = [];
  for (const part of (header || "").split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]+)>(.*)/);
    if (!m || !/rel="?ice-server"?/.test(m[2])) continue;
    const server = { urls: m[1] };
    const user = m[2].match(/username="([^"]*)"/);
    const cred = m[2].match(/credential="([^"]*)"/);
    if (user) server.username = user[1];
    if (cred) server.credential = cred[1];
    servers.push(server);
  }
  return servers;
}

async function iceServersFor(url, token) {
  try {
    const resp = await fetch(url, { method: "OPTIONS", headers: authHeaders(token) });
    return parseIceLinks(resp.headers.get("Link"));
  } catch (e) {
    console.warn("OPTIONS for ICE servers failed", e);
    return [];
  }
}

// Low-latency playback: give the audio m-section its own media stream id, so the browser does
// not hold video back to lip-sync it with audio (Chromium's A/V sync raises the video jitter
// buffer to the audio's ~60 ms); the audio then plays from its own element.
function unsyncAudio(sdp) {
  const sections = sdp.split(/\r\n(?=m=)/);
  return sections
    .map((section) => {
      if (!section.startsWith("m=audio")) return section;
      return section
        .replace(/^a=msid:(\S+)(.*)$/gm, "a=msid:livestream-audio$2")
        .replace(/^(a=ssrc:\d+ msid:)(\S+)(.*)$/gm, "$1livestream-audio$3");
    })
    .join("\r\n");
}

async function negotiate(pc, url, token, { mungeAnswer = null } = {}) {
  const pending = [];
  let location = null;
  let ufrag = null;
  let mids = [];
  const sendCandidates = async (candidates) => {
    if (!candidates.length) return;
    let frag = `a=ice-ufrag:${ufrag}\r\n`;
    const byMid = new Map();
    for (const c of candidates) {
      const mid = c ? c.sdpMid : null;
      if (!byMid.has(mid)) byMid.set(mid, []);
      byMid.get(mid).push(c);
    }
    for (const [mid, list] of byMid) {
      frag += `m=audio 9 RTP/AVP 0\r\na=mid:${mid === null ? mids[0] : mid}\r\n`;
      for (const c of list) frag += c ? `a=${c.candidate}\r\n` : "a=end-of-candidates\r\n";
    }
    try {
      await fetch(location, {
        method: "PATCH",
        headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*", ...authHeaders(token) },
        body: frag,
      });
    } catch (e) {
      console.warn("trickle PATCH failed", e);
    }
  };
  pc.addEventListener("icecandidate", (event) => {
    if (event.candidate && !event.candidate.candidate) return;
    if (location) sendCandidates([event.candidate]);
    else pending.push(event.candidate);
  });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const sdp = pc.localDescription.sdp;
  ufrag = (sdp.match(/a=ice-ufrag:(.*)/) || [])[1];
  mids = [...sdp.matchAll(/a=mid:(.*)/g)].map((m) => m[1].trim());
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...authHeaders(token) },
    body: sdp,
  });
  const text = await resp.text();
  if (resp.status !== 201) {
    let message = text;
    try {
      message = JSON.parse(text).detail.msg;
    } catch (e) {}
    throw new Error(`${resp.status}: ${message}`);
  }
  location = new URL(resp.headers.get("Location"), new URL(url, window.location.href)).href;
  const linked = parseIceLinks(resp.headers.get("Link"));
  if (linked.length && !pc.getConfiguration().iceServers.length) {
    // The OPTIONS request did not give them (a proxy in front?): use them from now on.
    try { pc.setConfiguration({ ...pc.getConfiguration(), iceServers: linked }); } catch (e) { console.warn(e); }
  }
  await pc.setRemoteDescription({ type: "answer", sdp: mungeAnswer ? mungeAnswer(text) : text });
  sendCandidates(pending.splice(0));
  return {
    pc,
    location,
    async close() {
      try {
        await fetch(location, { method: "DELETE", headers: authHeaders(token) });
      } catch (e) {}
      pc.close();
    },
  };
}

// `audioElement`: play the audio there (its own MediaStream), not in `video`.
// `lowLatency`: jitterBufferTarget 0 on both receivers and no A/V sync (see `unsyncAudio`).
async function whep(url, video, { token = "", audio = true, audioElement = null, lowLatency = false, iceServers = null } = {}) {
  const servers = iceServers || (await iceServersFor(url, token));
  const pc = new RTCPeerConnection({ iceServers: servers });
  const receivers = [pc.addTransceiver("video", { direction: "recvonly" }).receiver];
  if (audio) receivers.push(pc.addTransceiver("audio", { direction: "recvonly" }).receiver);
  if (lowLatency) {
    for (const receiver of receivers) {
      if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = 0;
      else if ("playoutDelayHint" in receiver) receiver.playoutDelayHint = 0;
    }
  }
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    if (event.track.kind === "audio" && audioElement) {
      audioElement.srcObject = new MediaStream([event.track]);
      return;
    }
    stream.addTrack(event.track);
    video.srcObject = stream;
  });
  const session = await negotiate(pc, url, token, { mungeAnswer: lowLatency && audio ? unsyncAudio : null });
  session.lowLatency = lowLatency;
  return session;
}

// Play a stream and keep playing it: reconnect when the connection fails or closes, when no
// frame has been shown for `stallSeconds`, or when the stream is not live yet (404: offline).
// `onState(kind, text)`: kind is "connecting", "offline", "waiting", "playing" or "error".
function watchStream({ stream, video, audioElement = null, token = "", audio = true, lowLatency = false, state, onState = () => {}, stallSeconds = 4 }) {
  const url = `/live/${encodeURIComponent(stream)}/whep`;
  let session = null, stopped = false, timer = null, lastFrames = -1, stalledFor = 0, backoff = 500;
  // A stream that is up but sends nothing (its pipeline still loading a model) is retried less
  // and less often: 4, 8, 16, 30 s; frames reset it.
  let stallLimit = stallSeconds;
  state.connects = 0;
  const report = (kind, text) => {
    state.view = kind;
    if (kind === "error" || kind === "offline") state.error = text;
    onState(kind, text);
  };
  const schedule = (ms) => {
    clearTimeout(timer);
    timer = setTimeout(connect, ms);
  };
  const drop = () => {
    if (session) {
      const old = session;
      session = null;
      state.connected = false;
      old.close();
    }
  };
  async function connect() {
    if (stopped) return;
    drop();
    report("connecting", "connecting…");
    try {
      const s = await whep(url, video, { token, audio, audioElement, lowLatency });
      if (stopped) { s.close(); return; }
      session = s;
      state.connects += 1;
      state.error = null;
      backoff = 500;
      lastFrames = state.frames;
      stalledFor = 0;
      report("waiting", "waiting for the first frame…");
      s.pc.addEventListener("connectionstatechange", () => {
        if (session !== s) return;
        const c = s.pc.connectionState;
        state.connected = c === "connected";
        if (c === "failed" || c === "closed") { report("connecting", `connection ${c}; reconnecting…`); schedule(backoff); }
      });
    } catch (e) {
      const text = String(e.message || e);
      if (text.startsWith("404")) report("offline", "The stream is offline: waiting for it to start.");
      else report("error", text);
      backoff = Math.min(backoff * 2, 4000);
      schedule(backoff);
    }
  }
  // Frames shown decide: a live stream advances; one that stops for stallSeconds is reconnected.
  const watchdog = setInterval(() => {
    if (!session) return;
    if (state.frames !== lastFrames) {
      if (state.view !== "playing") report("playing", "");
      lastFrames = state.frames;
      stalledFor = 0;
      stallLimit = stallSeconds;
    } else if ((stalledFor += 1) >= stallLimit && session.pc.connectionState !== "connecting") {
      stallLimit = Math.min(stallLimit * 2, 30);
      report("connecting", "no frames; reconnecting…");
      connect();
    }
  }, 1000);
  connect();
  return {
    get session() { return session; },
    reconnect: connect,
    stop() { stopped = true; clearInterval(watchdog); clearTimeout(timer); drop(); },
  };
}

async function whip(url, media, { token = "", iceServers = null } = {}) {
  const pc = new RTCPeerConnection({ iceServers: iceServers || (await iceServersFor(url, token)) });
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
  return negotiate(pc, url, token);
}

// Frames shown and a not-black check, for people and for the tests.
function watchFrames(video, state) {
  state.frames = 0;
  const tick = () => {
    state.frames += 1;
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

function brightness(video) {
  if (!video.videoWidth) return 0;
  const canvas = document.createElement("canvas");
  canvas.width = 64;
  canvas.height = 64;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, 64, 64);
  const data = ctx.getImageData(0, 0, 64, 64).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += (data[i] + data[i + 1] + data[i + 2]) / 3;
  return sum / (data.length / 4);
}

function streamName() {
  const parts = window.location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[1] || "");
}

function pageToken() {
  const params = new URLSearchParams(window.location.search);
  const given = params.get("token") || sessionStorage.getItem("livestream-token") || "";
  if (given) sessionStorage.setItem("livestream-token", given);
  return given;
}

// Browser-side receive figures: jitter buffer delay (ms, over the last interval) and frames decoded.
async function receiveStats(pc, last = {}) {
  const out = { jitterMs: null, rttMs: null, decoded: null };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      const delay = s.jitterBufferDelay, count = s.jitterBufferEmittedCount;
      if (last.delay !== undefined && count > last.count) out.jitterMs = (1000 * (delay - last.delay)) / (count - last.count);
      last.delay = delay; last.count = count;
      out.decoded = s.framesDecoded;
    }
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) out.rttMs = 1000 * s.currentRoundTripTime;
  });
  return out;
}

// The frame shown now, as a PNG data URL (the snapshot button; tests read it back).
function snapshotPng(video) {
  if (!video.videoWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return canvas.toDataURL("image/png");
}
