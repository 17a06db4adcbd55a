// streamrnn browser client: microphone -> AudioWorklet -> WebSocket /v1/recognize,
// events back into the page. Plain JavaScript, no build step.
"use strict";

(() => {
  const SUPPORTED_RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000];
  const FALLBACK_RATE = 48000;
  const FRAME_SECONDS = 0.1;       // audio per binary WebSocket message
  const SUGGESTION_COUNT = 3;
  const LOW_CONFIDENCE = 0.5;      // words below this are underlined
  const BACKLOG_WARN_SECONDS = 3;  // unsent audio that makes the status line warn
  const END_TIMEOUT_MS = 30000;    // how long Stop waits for the server's "end"
  const RECONNECT_FOR_MS = 30000;  // how long a dropped connection is retried (the server keeps the session 30 s)
  const ABNORMAL_CLOSURE = 1006;   // the connection dropped without a close frame: the session can be resumed

  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $("start"), stop: $("stop"), clear: $("clear"), status: $("status"),
    session: $("session"), subscribeHint: $("subscribe-hint"), subscribeUrl: $("subscribe-url"),
    transcript: $("transcript"), finals: $("finals"), partial: $("partial"), suggestions: $("suggestions"),
  };

  let current = null; // the recording in progress, if any

  // ws:// or wss:// (as the page is http:// or https://) URL of a path relative to this page.
  function socketUrl(path) {
    const url = new URL(path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  function setStatus(state, message) {
    ui.status.dataset.state = state;
    ui.status.textContent = message;
  }

  function setRunning(running) {
    ui.start.disabled = running;
    ui.stop.disabled = !running;
  }

  // --- starting ---------------------------------------------------------------

  async function start() {
    if (current) return;
    const rec = {
      stream: null, context: null, source: null, node: null, socket: null,
      frame: null, filled: 0, connected: false, listening: false, stopping: false, ended: false,
      error: null, timer: 0, finals: 0, warned: false,
      // Resuming: the session, the last event seen, and the audio the server has not acknowledged yet.
      sessionId: null, resumeToken: null, lastSeq: 0, sent: 0, unacked: [],
      resuming: false, eofSent: false, retryDelay: 100, retryUntil: 0,
    };
    current = rec;
    setRunning(true);
    ui.partial.textContent = "";
    try {
      checkBrowser();
      rec.context = await openAudioContext();
      checkCancelled(rec);
      await rec.context.audioWorklet.addModule("worklet.js").catch((err) => {
        throw new Error(`Cannot load worklet.js from the server: ${err.message}`);
      });
      checkCancelled(rec);
      setStatus("busy", "Asking for the microphone…");
      rec.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      }).catch((err) => { throw new Error(microphoneProblem(err)); });
      checkCancelled(rec);
      setStatus("busy", "Connecting to the server…");
      await connect(rec);
      checkCancelled(rec);
      rec.socket.send(JSON.stringify({
        type: "config", sample_rate: rec.context.sampleRate, encoding: "f32le",
        interim_results: true, suggestions: SUGGESTION_COUNT,
      }));
      startCapture(rec);
      rec.listening = true;
      setStatus("listening", `Listening (${(rec.context.sampleRate / 1000).toFixed(1)} kHz)… speak now.`);
    } catch (err) {
      if (rec.stopping) { // Stop pressed while starting: quietly let go of what was opened since
        releaseAudio(rec);
        closeSocket(rec);
        return;
      }
      fail(rec, err && err.message ? err.message : String(err));
    }
  }

  function checkBrowser() {
    if (location.protocol === "file:") {
      throw new Error("Open this page from the streamrnn server (http://host:port/), not as a file.");
    }
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("The browser only allows the microphone on https:// pages or on localhost.");
    }
    if (!window.AudioWorkletNode || !window.WebSocket) {
      throw new Error("This browser lacks AudioWorklet or WebSocket; use a current Chrome, Edge, Firefox or Safari.");
    }
  }

  function checkCancelled(rec) {
    if (rec.stopping) throw new Error("cancelled");
  }

  async function openAudioContext() {
    let context = new AudioContext();
    if (!SUPPORTED_RATES.includes(context.sampleRate)) { // e.g. 96 kHz hardware: let the browser resample
      await context.close();
      context = new AudioContext({ sampleRate: FALLBACK_RATE });
    }
    if (context.state === "suspended") await context.resume();
    return context;
  }

  function connect(rec) {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(socketUrl("v1/recognize"));
      let opened = false;
      rec.socket = socket;
      socket.binaryType = "arraybuffer";
      socket.onopen = () => { opened = rec.connected = true; resolve(); };
      socket.onerror = () => {
        if (!opened) reject(new Error(`Cannot connect to the server at ${socket.url}.`));
      };
      socket.onmessage = (event) => { if (rec.socket === socket) onMessage(rec, event); };
      socket.onclose = (event) => { if (opened && rec.socket === socket) onClose(rec, event); };
    });
  }

  function startCapture(rec) {
    const context = rec.context;
    rec.frame = new Float32Array(Math.round(context.sampleRate * FRAME_SECONDS));
    rec.node = new AudioWorkletNode(context, "capture", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers",
    });
    rec.node.port.onmessage = (event) => onAudio(rec, event.data);
    rec.source = context.createMediaStreamSource(rec.stream);
    // The node outputs silence; connecting it to the destination keeps it running in every browser.
    rec.source.connect(rec.node).connect(context.destination);
  }

  // --- audio out --------------------------------------------------------------

  function onAudio(rec, block) {
    if (rec.stopping || !rec.listening) return;
    let offset = 0;
    while (offset < block.length) {
      const count = Math.min(block.length - offset, rec.frame.length - rec.filled);
      rec.frame.set(block.subarray(offset, offset + count), rec.filled);
      rec.filled += count;
      offset += count;
      if (rec.filled === rec.frame.length) sendFrame(rec);
    }
  }

  // Every frame is kept until the server acknowledges it, so that a resumed session gets it
  // again; while the connection is down frames only queue up.
  function sendFrame(rec) {
    if (rec.filled === 0) return;
    // Float32Array bytes are little-endian on every platform browsers run on: f32le.
    const data = rec.frame.slice(0, rec.filled).buffer;
    rec.frame = new Float32Array(rec.frame.length);
    rec.filled = 0;
    rec.unacked.push({ offset: rec.sent, data });
    rec.sent += data.byteLength;
    const socket = rec.socket;
    if (rec.resuming || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(data);
    const backlog = socket.bufferedAmount / (4 * rec.context.sampleRate);
    if (backlog > BACKLOG_WARN_SECONDS && !rec.warned) {
      rec.warned = true;
      setStatus("busy", `The connection is slow: ${backlog.toFixed(1)} s of audio still to send.`);
    } else if (backlog < 1 && rec.warned) {
      rec.warned = false;
      setStatus("listening", "Listening… speak now.");
    }
  }

  function releaseAudio(rec) {
    if (rec.node) {
      rec.node.port.postMessage("stop");
      rec.node.port.onmessage = null;
      rec.node.disconnect();
    }
    if (rec.source) rec.source.disconnect();
    if (rec.stream) rec.stream.getTracks().forEach((track) => track.stop());
    if (rec.context && rec.context.state !== "closed") rec.context.close().catch(() => {});
    rec.node = rec.source = rec.stream = null;
  }

  function closeSocket(rec) {
    const socket = rec.socket;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  }

  // --- stopping ---------------------------------------------------------------

  function stop() {
    const rec = current;
    if (!rec || rec.stopping) return;
    rec.stopping = true;
    ui.stop.disabled = true;
    if (!rec.listening) { // still starting
      releaseAudio(rec);
      closeSocket(rec);
      finish(rec, "idle", "Cancelled. Press Start to try again.");
      return;
    }
    rec.listening = false;
    sendFrame(rec); // the last part-filled frame
    releaseAudio(rec);
    sendEof(rec); // else sent once the connection is back
    setStatus("busy", "Finishing the last sentence…");
    rec.timer = setTimeout(() => fail(rec, "The server did not finish the session in time."), END_TIMEOUT_MS);
  }

  function sendEof(rec) {
    const socket = rec.socket;
    if (rec.eofSent || rec.resuming || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "eof" }));
    rec.eofSent = true;
  }

  // --- resuming after a dropped connection -----------------------------------

  // Retry after 0.1, 0.2, 0.4 ... 2 s, for up to RECONNECT_FOR_MS; audio keeps queueing meanwhile.
  function reconnect(rec) {
    rec.socket = null;
    rec.eofSent = false;
    const now = Date.now();
    rec.retryUntil = rec.retryUntil || now + RECONNECT_FOR_MS;
    if (now + rec.retryDelay > rec.retryUntil) {
      fail(rec, "The connection to the server was lost and could not be restored.");
      return;
    }
    setStatus("busy", "The connection dropped; reconnecting…");
    setTimeout(() => {
      if (current !== rec) return;
      connect(rec).then(() => {
        rec.resuming = true;
        rec.socket.send(JSON.stringify({
          type: "resume", session_id: rec.sessionId, resume_token: rec.resumeToken, last_seq: rec.lastSeq,
        }));
      }, () => reconnect(rec));
    }, rec.retryDelay);
    rec.retryDelay = Math.min(2 * rec.retryDelay, 2000);
  }

  // The server has the audio before byte `ack`: forget it.
  function acknowledge(rec, ack) {
    while (rec.unacked.length && rec.unacked[0].offset + rec.unacked[0].data.byteLength <= ack) {
      rec.unacked.shift();
    }
  }

  // The session is back: send the audio the server lacks, then carry on.
  function onResumed(rec, ack) {
    rec.resuming = false;
    rec.retryDelay = 100;
    rec.retryUntil = 0;
    acknowledge(rec, ack);
    for (const { offset, data } of rec.unacked) {
      rec.socket.send(offset >= ack ? data : data.slice(ack - offset));
    }
    if (rec.stopping) sendEof(rec);
    setStatus(rec.stopping ? "busy" : "listening",
      rec.stopping ? "Reconnected; finishing the last sentence…" : "Reconnected; listening… speak now.");
  }

  // Back to idle; what the transcript holds stays.
  function finish(rec, state, message) {
    if (current !== rec) return;
    current = null;
    clearTimeout(rec.timer);
    ui.partial.textContent = "";
    if (ui.session.textContent !== "none" && !ui.session.textContent.endsWith("(ended)")) {
      ui.session.textContent += " (ended)";
    }
    ui.subscribeHint.hidden = true;
    setRunning(false);
    setStatus(state, message);
  }

  function fail(rec, message) {
    rec.stopping = true;
    releaseAudio(rec);
    closeSocket(rec);
    finish(rec, "error", message);
  }

  // What went wrong with getUserMedia, with the browser's own words in brackets.
  function microphoneProblem(err) {
    const detail = err && err.message ? ` (${err.name}: ${err.message})` : "";
    switch (err && err.name) {
      case "NotAllowedError":
      case "SecurityError":
        return `Microphone access was refused. Allow it for this page and press Start again.${detail}`;
      case "NotFoundError":
      case "OverconstrainedError":
        return `No microphone was found. Connect one and press Start again.${detail}`;
      case "NotReadableError":
      case "AbortError":
        return `The microphone could not be opened. Is another application using it?${detail}`;
      default:
        return `The microphone could not be used${detail || `: ${err}`}.`;
    }
  }

  // --- events in --------------------------------------------------------------

  function onMessage(rec, event) {
    if (current !== rec || typeof event.data !== "string") return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (typeof message.seq === "number") { // after a resume, events seen before come again: skip them
      if (message.seq <= rec.lastSeq) return;
      rec.lastSeq = message.seq;
    }
    switch (message.type) {
      case "session":
        rec.sessionId = message.session_id;
        rec.resumeToken = message.resume_token;
        showSession(message.session_id, message.read_token);
        break;
      case "resumed":
        onResumed(rec, message.ack);
        break;
      case "ack":
        acknowledge(rec, message.bytes);
        break;
      case "partial":
        ui.partial.textContent = message.text;
        scrollToEnd();
        break;
      case "final":
        addFinal(message);
        rec.finals += 1;
        ui.partial.textContent = "";
        break;
      case "suggestions":
        showSuggestions(message.words || []);
        break;
      case "error":
        if (rec.resuming) {
          fail(rec, `The session could not be resumed (${message.code}): ${message.message}`);
          break;
        }
        rec.error = `Server error (${message.code}): ${message.message}`;
        setStatus("error", rec.listening ? `${rec.error} Still listening.` : rec.error);
        break;
      case "end": {
        rec.ended = true;
        const byUser = rec.stopping;
        rec.stopping = true;
        releaseAudio(rec);
        closeSocket(rec);
        const count = `${rec.finals} ${rec.finals === 1 ? "sentence" : "sentences"}`;
        if (byUser && rec.error) finish(rec, "error", `Stopped after ${count}. ${rec.error}`);
        else if (byUser) finish(rec, "idle", `Stopped after ${count}. Press Start to go on.`);
        else if (message.reason === "shutdown") finish(rec, "error", `The server is shutting down; the session ended after ${count}.`);
        else finish(rec, "error", `The server ended the session after ${count}.`);
        break;
      }
    }
  }

  function onClose(rec, event) {
    if (rec.ended || current !== rec) return;
    if (event.code === ABNORMAL_CLOSURE && rec.resumeToken && !rec.resuming) {
      reconnect(rec);
      return;
    }
    const reason = event.reason ? `: ${event.reason}` : "";
    fail(rec, rec.error || `The server closed the connection (code ${event.code}${reason}).`);
  }

  // Anyone given this URL (it holds the session's read token) can follow the transcript.
  function showSession(id, readToken) {
    ui.session.textContent = id;
    ui.subscribeUrl.textContent = socketUrl(`v1/subscribe/${id}?read_token=${encodeURIComponent(readToken)}`);
    ui.subscribeHint.hidden = false;
  }

  function addFinal(message) {
    if (!message.text) return;
    const line = document.createElement("p");
    line.className = "final";
    line.title = `${seconds(message.start)}–${seconds(message.end)}`;
    line.dataset.start = message.start;
    line.dataset.end = message.end;
    const words = message.words || [];
    if (words.length && words.map((w) => w.word).join(" ") === message.text) {
      words.forEach((w, i) => {
        if (i) line.append(" ");
        const span = document.createElement("span");
        span.textContent = w.word;
        span.title = `confidence ${Math.round(100 * w.conf)}%`;
        if (w.conf < LOW_CONFIDENCE) span.className = "low";
        line.append(span);
      });
    } else {
      line.textContent = message.text;
    }
    ui.finals.append(line);
    scrollToEnd();
  }

  function seconds(value) {
    return typeof value === "number" ? `${value.toFixed(2)} s` : "?";
  }

  function showSuggestions(words) {
    ui.suggestions.replaceChildren(...words.map((w) => {
      const item = document.createElement("li");
      const share = document.createElement("small");
      share.textContent = `${Math.round(100 * w.p)}%`;
      item.append(w.word, share);
      return item;
    }));
  }

  function scrollToEnd() {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function clear() {
    ui.finals.replaceChildren();
    ui.partial.textContent = "";
    ui.suggestions.replaceChildren();
  }

  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", stop);
  ui.clear.addEventListener("click", clear);
})();
