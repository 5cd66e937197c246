// The page of `asr serve`: no framework, no CDN, only the server's own /v1 API.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // the last recording or upload: {blob, name}, what Enroll and Identify send

// -- the API ----------------------------------------------------------------------------------

function apiKey() {
  return localStorage.getItem("asr-api-key") || $("api-key").value;
}

async function api(path, options = {}) {
  const key = apiKey();
  const headers = Object.assign({}, options.headers || {});
  if (key) headers["Authorization"] = "Bearer " + key;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) $("key-box").hidden = false;
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { message = (await res.json()).error.message; } catch (e) { /* not our JSON error */ }
    throw new Error(message);
  }
  return res;
}

function setStatus(id, text, isError = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// -- transcription ----------------------------------------------------------------------------

async function transcribe(blob, name) {
  current = { blob, name };
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  const box = $("transcript");
  box.dataset.state = "working";
  box.textContent = "";
  setStatus("status", "transcribing " + name + "…");
  const form = new FormData();
  form.append("file", blob, name);
  form.append("model", $("model").value);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "word");
  try {
    const t0 = performance.now();
    const result = await (await api("/v1/audio/transcriptions", { method: "POST", body: form })).json();
    showWords(result);
    setStatus("status", `${name}: ${result.duration.toFixed(2)} s of audio in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    box.dataset.state = "done";
  } catch (e) {
    setStatus("status", e.message, true);
    box.dataset.state = "error";
  }
}

function showWords(result) {
  const box = $("transcript");
  box.dataset.text = result.text;
  if (!result.words.length) {
    box.textContent = "(no words)";
    return;
  }
  for (const w of result.words) {
    const span = document.createElement("span");
    span.className = "word";
    span.dataset.start = w.start;
    span.dataset.end = w.end;
    span.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s, confidence ${w.confidence.toFixed(2)}`;
    span.textContent = w.word;
    const time = document.createElement("sub");
    time.textContent = w.start.toFixed(2);
    span.appendChild(time);
    span.addEventListener("click", () => playFrom(w.start));
    box.append(span, " ");
  }
}

function playFrom(seconds) {
  const player = $("player");
  player.currentTime = seconds;
  player.play().catch(() => { /* autoplay refused: the position is set all the same */ });
}

$("player").addEventListener("timeupdate", () => {
  const now = $("player").currentTime;
  for (const span of document.querySelectorAll("#transcript .word")) {
    span.classList.toggle("now", now >= +span.dataset.start && now < +span.dataset.end);
  }
});

$("file").addEventListener("change", (e) => {
  const f = e.target.files[0];
  if (f) transcribe(f, f.name);
});

// -- the microphone ---------------------------------------------------------------------------
// MediaRecorder gives webm/opus, which the server's audio reader (libsndfile) does not read: the
// page decodes it with the Web Audio API and sends 16-bit WAV at 16 kHz instead.

let recorder = null;

$("record").addEventListener("click", async () => {
  try {
    // the browser's voice-call processing (echo cancelling, noise suppression, gain riding)
    // changes speech the way no training data did: ask for the plain signal
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const chunks = [];
    recorder = new MediaRecorder(stream, { audioBitsPerSecond: 128000 });
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      try {
        const wav = await toWav(new Blob(chunks, { type: recorder.mimeType }), 16000);
        transcribe(wav, "recording.wav");
      } catch (e) {
        setStatus("status", "could not decode the recording: " + e.message, true);
      }
    };
    recorder.start();
    $("record").classList.add("on");
    $("record").disabled = true;
    $("stop").disabled = false;
    setStatus("status", "recording…");
  } catch (e) {
    setStatus("status", "no microphone: " + e.message, true);
  }
});

$("stop").addEventListener("click", () => {
  if (recorder && recorder.state !== "inactive") recorder.stop();
  if (live) stopLive();
  for (const b of ["record", "live"]) {
    $(b).classList.remove("on");
    $(b).disabled = false;
  }
  $("stop").disabled = true;
});

async function toWav(blob, rate) {
  const decoded = await new OfflineAudioContext(1, 1, rate).decodeAudioData(await blob.arrayBuffer());
  const n = decoded.length, mono = new Float32Array(n);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    const ch = decoded.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += ch[i] / decoded.numberOfChannels;
  }
  return wavBlob(mono, decoded.sampleRate);
}

function wavBlob(mono, sampleRate) {
  const n = mono.length;
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) view.setUint8(at + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, mono[i])) * 32767, true);
  return new Blob([view], { type: "audio/wav" });
}

// -- live transcription -----------------------------------------------------------------------
// The microphone goes to WS /v1/audio/transcriptions/live as 16-bit PCM, 100 ms a message, at
// the AudioContext's own rate (the server resamples). Final words and the guess at the word being
// said show as they come; at the end the recording is kept, as a recorded one is, so its words can
// be clicked and its speaker enrolled.

let live = null; // {ws, context, stream, rate, pending, kept, words, ready, ended}
const streamingModels = new Set();

function pcm16(chunks) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0), out = new Int16Array(n);
  let k = 0;
  for (const c of chunks) for (let i = 0; i < c.length; i++) out[k++] = Math.max(-1, Math.min(1, c[i])) * 32767;
  return out.buffer;
}

function sendPending(s, all = false) {
  const n = s.pending.reduce((sum, c) => sum + c.length, 0);
  if (!s.ready || !n || (!all && n < s.rate / 10)) return;
  s.ws.send(pcm16(s.pending));
  s.pending = [];
}

function showLive(session) {
  const box = $("transcript");
  box.textContent = "";
  for (const w of session.words) {
    const span = document.createElement("span");
    span.className = "final";
    span.textContent = w.word;
    box.append(span, " ");
  }
  const guess = document.createElement("span");
  guess.className = "partial";
  guess.textContent = session.partial;
  box.append(guess);
}

$("live").addEventListener("click", async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const context = new AudioContext();
    await context.audioWorklet.addModule("/static/pcm-tap.js");
    const tap = new AudioWorkletNode(context, "pcm-tap");
    context.createMediaStreamSource(stream).connect(tap);
    tap.connect(context.destination); // pulled by the graph; its output is silence
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/audio/transcriptions/live";
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    live = { ws, context, stream, rate: context.sampleRate, pending: [], kept: [], words: [], partial: "",
             ready: false, ended: false, failed: false };
    const session = live;
    tap.port.onmessage = (e) => {
      if (session.ended) return;
      session.pending.push(e.data);
      session.kept.push(e.data);
      sendPending(session);
    };
    const start = { type: "start", sample_rate: context.sampleRate };
    if (streamingModels.has($("model").value)) start.model = $("model").value; // else the server's own
    if (apiKey()) start.api_key = apiKey(); // a browser's WebSocket cannot send the header
    ws.onopen = () => ws.send(JSON.stringify(start));
    ws.onmessage = (e) => onLiveMessage(session, JSON.parse(e.data));
    ws.onclose = (e) => {
      release(session);
      if (!session.failed && e.code !== 1000) {
        setStatus("status", `live: connection closed (${e.code}${e.reason ? " " + e.reason : ""})`, true);
        $("transcript").dataset.state = "error";
      }
      $("stop").click();
    };
    current = null;
    const box = $("transcript");
    box.dataset.state = "live";
    box.textContent = "";
    $("live").classList.add("on");
    $("live").disabled = $("record").disabled = true;
    $("stop").disabled = false;
    setStatus("status", "live: connecting…");
  } catch (e) {
    setStatus("status", "no microphone: " + e.message, true);
  }
});

function onLiveMessage(session, m) {
  if (m.type === "ready") {
    session.ready = true;
    setStatus("status", `live: listening (${m.model}, ${session.rate} Hz)`);
    sendPending(session);
  } else if (m.type === "final") {
    session.words.push(...m.words);
    showLive(session);
  } else if (m.type === "partial") {
    session.partial = m.text;
    showLive(session);
  } else if (m.type === "done") {
    const n = session.kept.reduce((sum, c) => sum + c.length, 0), mono = new Float32Array(n);
    let k = 0;
    for (const c of session.kept) { mono.set(c, k); k += c.length; }
    const blob = wavBlob(mono, session.rate);
    current = { blob, name: "live.wav" };
    const player = $("player");
    if (player.src) URL.revokeObjectURL(player.src);
    player.src = URL.createObjectURL(blob);
    $("transcript").textContent = "";
    showWords({ text: m.text, words: session.words });
    setStatus("status", `live.wav: ${m.duration.toFixed(2)} s, ${session.words.length} words`);
    $("transcript").dataset.state = "done";
  } else if (m.type === "error") {
    session.failed = true;
    setStatus("status", "live: " + m.error.message, true);
    $("transcript").dataset.state = "error";
    if (m.error.code === "invalid_api_key") $("key-box").hidden = false;
  }
}

function release(session) {
  session.ended = true;
  session.stream.getTracks().forEach((t) => t.stop());
  if (session.context.state !== "closed") session.context.close();
}

function stopLive() {
  const session = live;
  live = null;
  release(session);
  if (session.ws.readyState === WebSocket.OPEN && session.ready) {
    sendPending(session, true);
    session.ws.send(JSON.stringify({ type: "end" })); // the server answers "done", then closes
  } else if (session.ws.readyState <= WebSocket.OPEN) {
    session.failed = true; // stopped before the server was ready: nothing to report
    session.ws.close();
    setStatus("status", "live: stopped");
  }
}

// -- speech -----------------------------------------------------------------------------------

$("speak").addEventListener("click", async () => {
  const body = { model: $("voice").dataset.model, input: $("tts-text").value, voice: $("voice").value,
                 response_format: "wav" };
  setStatus("tts-status", "synthesizing…");
  try {
    const blob = await (await api("/v1/audio/speech", { method: "POST", body: JSON.stringify(body),
                                                       headers: { "Content-Type": "application/json" } })).blob();
    const audio = $("tts-audio");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(blob);
    audio.play().catch(() => {});
    setStatus("tts-status", `${(blob.size / 1024).toFixed(0)} KB of WAV`);
  } catch (e) {
    setStatus("tts-status", e.message, true);
  }
});

// -- speakers ---------------------------------------------------------------------------------

function speakerForm() {
  if (!current) throw new Error("upload or record something first");
  const form = new FormData();
  form.append("file", current.blob, current.name);
  return form;
}

$("enroll").addEventListener("click", async () => {
  try {
    const form = speakerForm();
    form.append("name", $("spk-name").value.trim());
    const r = await (await api("/v1/speakers/enroll", { method: "POST", body: form })).json();
    setStatus("spk-result", `enrolled ${r.name} (${r.count} recording${r.count > 1 ? "s" : ""})`);
    listSpeakers();
  } catch (e) {
    setStatus("spk-result", e.message, true);
  }
});

$("identify").addEventListener("click", async () => {
  try {
    const r = await (await api("/v1/speakers/identify", { method: "POST", body: speakerForm() })).json();
    setStatus("spk-result", `${r.speaker} (score ${r.score.toFixed(2)})`);
  } catch (e) {
    setStatus("spk-result", e.message, true);
  }
});

async function listSpeakers() {
  try {
    const r = await (await api("/v1/speakers")).json();
    $("spk-list").textContent = r.data.length
      ? "Enrolled: " + r.data.map((s) => `${s.name} (${s.count})`).join(", ") : "No speakers enrolled yet.";
  } catch (e) { /* shown by the other calls */ }
}

// -- start ------------------------------------------------------------------------------------

function option(select, value, label, selected) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  o.selected = !!selected;
  select.appendChild(o);
}

async function loadModels() {
  const models = (await (await api("/v1/models")).json()).data;
  $("model").textContent = "";
  $("voice").textContent = "";
  streamingModels.clear();
  for (const m of models.filter((m) => m.task === "transcription")) {
    option($("model"), m.id, m.id + (m.streaming ? " (live)" : ""), m.default);
    if (m.streaming) streamingModels.add(m.id);
  }
  $("live").hidden = !models.some((m) => m.streaming) || !window.AudioWorkletNode;
  const tts = models.find((m) => m.task === "speech" && m.default) || models.find((m) => m.task === "speech");
  if (tts) {
    $("voice").dataset.model = tts.id;
    for (const v of tts.voices || []) option($("voice"), v, `${tts.id}: ${v}`);
  }
  document.body.dataset.ready = "true";
}

async function start() {
  try {
    const h = await (await fetch("/health")).json();
    $("health").textContent = `v${h.version}, ${h.workers} worker${h.workers > 1 ? "s" : ""}`;
    if (h.auth && !localStorage.getItem("asr-api-key")) $("key-box").hidden = false;
    await loadModels();
    listSpeakers();
  } catch (e) {
    $("health").textContent = e.message;
  }
}

$("api-key").addEventListener("change", () => {
  localStorage.setItem("asr-api-key", $("api-key").value);
  start();
});

start();
