// WHIP/WHEP in the browser (RFC 9725), shared by the player and camera pages. No build step.
//
//   const session = await whep("/live/demo/whep", videoElement, {token});
//   const session = await whip("/live/demo/whip", mediaStream, {token});
//   await session.close();   // DELETE the resource, close the peer connection
//
// The offer is POSTed as soon as it exists; candidates the browser finds later are sent with
// PATCH (application/trickle-ice-sdpfrag), so nobody waits for ICE gathering to finish.

"use strict";

function authHeaders(token) {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function negotiate(pc, url, token) {
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
  await pc.setRemoteDescription({ type: "answer", sdp: text });
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

async function whep(url, video, { token = "", audio = true } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  if (audio) pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    stream.addTrack(event.track);
    video.srcObject = stream;
  });
  return negotiate(pc, url, token);
}

async function whip(url, media, { token = "" } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
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
