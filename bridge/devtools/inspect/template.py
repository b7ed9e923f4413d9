"""The inspector page's HTML, CSS and JavaScript (vanilla, no library, nothing fetched).

`__TITLE__` and `__DATA__` are filled in by `page.render_html`. The script reads the one JSON
block (`#call-data`), draws the waveforms on canvases from the precomputed min/max buckets (a
pyramid of coarser levels is built once, so a column costs a few reads at any zoom), the events,
spans and transcript as SVG (only what is in view), and plays the two lanes as one stereo
WebAudio stream (left: caller, right: agent as heard), decoded from μ-law 20 s at a time.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; media-src data: blob:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:8px 12px;background:#263238;color:#eceff1}
header h1{font-size:15px;margin:0 0 4px}
header dl{display:flex;flex-wrap:wrap;gap:2px 16px;margin:0}
header dt{opacity:.7}header dd{margin:0 0 0 4px;font-weight:600}
header .pair{display:flex}
#controls{display:flex;gap:6px;align-items:center;padding:6px 12px;background:#eceff1;position:sticky;top:0;z-index:2}
#controls button{font:inherit;padding:2px 10px}
#controls input[type=range]{flex:1}
#clock{font-variant-numeric:tabular-nums;min-width:130px}
#timeline{position:relative;margin:0 12px;user-select:none}
.lane{display:flex;border-bottom:1px solid #ddd;background:#fff}
.lane .name{width:110px;flex:none;padding:4px;font-weight:600;font-size:12px;background:#f3f3f3;border-right:1px solid #ddd}
.lane canvas,.lane svg{display:block;flex:1;min-width:0}
#lanes .lane:has(#events) .name{position:relative;font-weight:400;color:#777}
.row-name{position:absolute;left:4px;font-size:10px;line-height:14px}
.lane.noaudio .body{flex:1;padding:8px;color:#777;font-style:italic}
#cursor{position:absolute;top:0;bottom:0;width:1px;background:#d32f2f;pointer-events:none}
svg text{font-size:10px;fill:#333}
.ev line{stroke:#546e7a}.ev.problems line{stroke:#d32f2f;stroke-width:2}
.ev.clear line,.ev.truncate line{stroke:#e65100;stroke-width:2}
.span rect{fill:#90caf9;opacity:.6}.span.tools rect{fill:#a5d6a7}.span.caller rect{fill:#ffe082}
.said rect{fill:#e1f5fe;stroke:#81d4fa}.said.caller rect{fill:#fff8e1;stroke:#ffe082}
section{margin:12px;background:#fff;border:1px solid #ddd;padding:8px}
section h2{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
td.l,th.l{text-align:left}
.bar{display:flex;height:10px;width:240px;background:#f5f5f5}
.bar span{display:block;height:10px}.s0{background:#7986cb}.s1{background:#4db6ac}.s2{background:#ffb74d}
.legend span{display:inline-block;width:10px;height:10px;margin:0 3px 0 10px}
#transcript p{margin:3px 0}#transcript .t{color:#1565c0;cursor:pointer;font-variant-numeric:tabular-nums}
#transcript .unheard{color:#999;text-decoration:line-through}
#transcript .role{font-weight:600;display:inline-block;width:50px}
.note{color:#777}
#events-table{max-height:300px;overflow:auto;display:block}
#events-table tr{cursor:pointer}
</style></head>
<body>
<header><h1 id="title"></h1><dl id="header"></dl></header>
<div id="controls">
<button id="play" type="button">▶ play</button>
<span id="clock">0.00 s</span>
<button id="zoom-out" type="button" title="zoom out (ctrl+wheel)">−</button>
<button id="zoom-in" type="button" title="zoom in (ctrl+wheel)">+</button>
<button id="zoom-fit" type="button">whole call</button>
<input id="scroll" type="range" min="0" max="0" step="any" value="0" aria-label="scroll">
</div>
<div id="timeline"><div id="lanes"></div><div id="cursor"></div></div>
<section><h2>Turns: latency from the caller's end of speech</h2>
<p class="legend note">the caller stopped → <span class="s0"></span>model's first audio <span class="s1"></span>first audio sent to Twilio <span class="s2"></span>first audio heard (mark echoed); the greeting is timed from the stream's start</p>
<table id="turns"><thead><tr><th class="l">turn</th><th>at (s)</th><th>model audio (ms)</th><th>sent (ms)</th><th>heard (ms)</th><th class="l">bar</th><th class="l"></th></tr></thead><tbody></tbody></table></section>
<section><h2>Barge-ins</h2><table id="barge-ins"><thead><tr><th>clear at (s)</th><th class="l">item</th><th>bridge claimed heard (ms)</th><th>recording shows heard (ms)</th><th>model sent (ms)</th></tr></thead><tbody></tbody></table></section>
<section><h2>Transcript</h2><div id="transcript"></div></section>
<section><h2>Events</h2><table id="events-table"><thead><tr><th>t (s)</th><th class="l">row</th><th class="l">event</th><th class="l">where</th><th class="l">detail</th></tr></thead><tbody></tbody></table></section>
<script type="application/json" id="call-data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("call-data").textContent);
const SVGNS = "http://www.w3.org/2000/svg";
const H = D.header, dur = Math.max(D.duration_s, 0.1);
const view = {t0: 0, pps: 100, now: 0};
const el = (tag, attrs, text) => { const e = document.createElement(tag); Object.assign(e, attrs || {}); if (text !== undefined) e.textContent = text; return e; };
const sv = (tag, attrs) => { const e = document.createElementNS(SVGNS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); return e; };
const fmt = (t) => t.toFixed(t < 100 ? 2 : 1);

function headerBlock() {
  document.getElementById("title").textContent = "Call " + (H.call_sid || "?") + " — " + (H.source || "");
  const dl = document.getElementById("header");
  const v = H.versions || {};
  const items = [["call", H.call_sid], ["profile", H.profile], ["upstream", H.upstream + " (" + H.dialect + ")"], ["audio", H.audio_mode],
    ["started", H.started_at], ["duration", fmt(H.duration_s) + " s"], ["outcome", H.outcome],
    ["transcripts", H.transcripts_redacted ? "[redacted]" : "recorded"], ["audio recorded", H.audio_recorded ? "yes" : "no"],
    ["versions", Object.keys(v).map((k) => k + " " + v[k]).join(", ")]];
  for (const [k, val] of items) { const p = el("div", {className: "pair"}); p.append(el("dt", {}, k), el("dd", {}, String(val ?? "—"))); dl.append(p); }
}

function decodeB64(s) { const b = atob(s), a = new Uint8Array(b.length); for (let i = 0; i < b.length; i++) a[i] = b.charCodeAt(i); return a; }

function pyramid(b64) {  // level 0: [min,max] int8 per bucket; each level above halves
  const raw = new Int8Array(decodeB64(b64).buffer), levels = [raw];
  for (let cur = raw; cur.length > 4; ) {
    const n = cur.length >> 2, next = new Int8Array(n * 2);
    for (let i = 0; i < n; i++) { next[2*i] = Math.min(cur[4*i], cur[4*i+2]); next[2*i+1] = Math.max(cur[4*i+1], cur[4*i+3]); }
    levels.push(next); cur = next;
  }
  return levels;
}

const laneDefs = [];
function addLane(name, id, kind) {
  const lane = el("div", {className: "lane"}); lane.append(el("div", {className: "name"}, name));
  const body = kind === "canvas" ? el("canvas", {id: id, height: 70}) : sv("svg", {id: id, height: 20});
  lane.append(body); document.getElementById("lanes").append(lane); return body;
}

function buildLanes() {
  if (D.waveform) {
    laneDefs.push({canvas: addLane("caller", "lane-caller", "canvas"), levels: pyramid(D.waveform.caller), color: "#f9a825"});
    laneDefs.push({canvas: addLane("agent (as heard)", "lane-heard", "canvas"), levels: pyramid(D.waveform.heard), color: "#1e88e5"});
  } else {
    for (const [name, id] of [["caller", "lane-caller"], ["agent (as heard)", "lane-heard"]]) {
      const lane = el("div", {className: "lane noaudio", id: id}); lane.append(el("div", {className: "name"}, name), el("div", {className: "body"}, "no audio in this recording"));
      document.getElementById("lanes").append(lane);
    }
  }
  view.said = addLane("transcript", "lane-said", "svg");
  view.events = addLane("events", "events", "svg");
  view.axis = addLane("time (s)", "axis", "svg");
}

function width() { return laneDefs.length ? laneDefs[0].canvas.clientWidth : view.events.clientWidth; }
const x = (t) => (t - view.t0) * view.pps;

function drawWave(d, w) {
  const c = d.canvas, ctx = c.getContext("2d"), h = c.height, mid = h / 2, bs = D.waveform.bucket_s;
  if (c.width !== w) c.width = w;
  ctx.clearRect(0, 0, w, h); ctx.fillStyle = d.color;
  const perPx = 1 / (view.pps * bs), lvl = Math.max(0, Math.min(d.levels.length - 1, Math.floor(Math.log2(Math.max(perPx, 1)))));
  const arr = d.levels[lvl], scale = 2 ** lvl, n = arr.length / 2;
  for (let px = 0; px < w; px++) {
    const a = Math.floor((view.t0 + px / view.pps) / bs / scale), b = Math.max(a + 1, Math.floor((view.t0 + (px + 1) / view.pps) / bs / scale));
    if (a >= n) break;
    let lo = 127, hi = -128;
    for (let i = a; i < Math.min(b, n); i++) { if (arr[2*i] < lo) lo = arr[2*i]; if (arr[2*i+1] > hi) hi = arr[2*i+1]; }
    ctx.fillRect(px, mid - (hi / 128) * mid, 1, Math.max(1, ((hi - lo) / 128) * mid));
  }
  ctx.fillStyle = "#e65100";
  for (const b of D.barge_ins) if (b.clear_t !== null) ctx.fillRect(x(b.clear_t), 0, 1, h);
}

function visible(t, end) { const w = width(); return x(end ?? t) >= -50 && x(t) <= w + 50; }

function drawSaid(w) {
  const s = view.said; s.replaceChildren(); s.setAttribute("height", 34);
  for (const line of D.transcript) {
    if (!visible(line.t, line.end)) continue;
    const g = sv("g", {class: "said " + line.role}), y = line.role === "caller" ? 18 : 2;
    g.append(sv("rect", {x: x(line.t), y: y, width: Math.max(2, (line.end - line.t) * view.pps), height: 14}));
    const t = sv("text", {x: x(line.t) + 2, y: y + 11}); t.textContent = line.heard_text ?? line.text;
    const title = sv("title", {}); title.textContent = line.role + ": " + line.text;
    g.append(t, title); s.append(g);
  }
}

function drawEvents(w) {
  const s = view.events, rows = D.rows.filter((r) => D.events.some((e) => e.row === r) || D.spans.some((p) => p.row === r));
  s.replaceChildren(); s.setAttribute("height", rows.length * 16 + 4);
  const names = s.previousSibling; names.replaceChildren();
  rows.forEach((r, i) => { names.append(el("div", {className: "row-name", style: "top:" + (i * 16 + 2) + "px"}, r)); if (i) s.append(sv("line", {x1: 0, x2: w, y1: i * 16 + 1, y2: i * 16 + 1, stroke: "#f0f0f0"})); });
  for (const p of D.spans) {
    if (!visible(p.t, p.end)) continue;
    const g = sv("g", {class: "span " + p.row}), y = rows.indexOf(p.row) * 16 + 3;
    g.append(sv("rect", {x: x(p.t), y: y, width: Math.max(2, (p.end - p.t) * view.pps), height: 12}));
    const title = sv("title", {}); title.textContent = p.label + " " + fmt(p.t) + "–" + fmt(p.end) + " s (" + Math.round((p.end - p.t) * 1000) + " ms)";
    g.append(title); s.append(g);
  }
  let lastX = {};
  for (const e of D.events) {
    if (!visible(e.t)) continue;
    const y = rows.indexOf(e.row) * 16 + 2, px = x(e.t);
    const g = sv("g", {class: "ev " + e.row + " " + e.label.split(" ")[0]});
    g.append(sv("line", {x1: px, x2: px, y1: y, y2: y + 14}));
    if (px - (lastX[e.row] ?? -1e9) > 60) { const t = sv("text", {x: px + 2, y: y + 11}); t.textContent = e.label; g.append(t); lastX[e.row] = px; }
    const title = sv("title", {}); title.textContent = fmt(e.t) + " s " + e.kind + " (" + e.where + ") " + e.detail;
    g.append(title); g.addEventListener("click", () => seek(e.t)); s.append(g);
  }
}

function drawAxis(w) {
  const s = view.axis; s.replaceChildren(); s.setAttribute("height", 18);
  const span = w / view.pps, steps = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800];
  const step = steps.find((st) => span / st <= 12) || 3600;
  for (let t = Math.ceil(view.t0 / step) * step; t <= view.t0 + span; t += step) {
    s.append(sv("line", {x1: x(t), x2: x(t), y1: 0, y2: 5, stroke: "#555"}));
    const label = sv("text", {x: x(t) + 2, y: 15}); label.textContent = +t.toFixed(2); s.append(label);
  }
}

function draw() {
  const w = width(), maxT0 = Math.max(0, dur - w / view.pps);
  view.t0 = Math.min(Math.max(0, view.t0), maxT0);
  const sc = document.getElementById("scroll"); sc.max = maxT0; sc.value = view.t0;
  for (const d of laneDefs) drawWave(d, w);
  drawSaid(w); drawEvents(w); drawAxis(w);
  moveCursor();
}

function moveCursor() {
  const lanes = document.getElementById("lanes"), first = lanes.querySelector(".lane > :nth-child(2)");
  const left = first ? first.offsetLeft : 110, px = x(view.now);
  const c = document.getElementById("cursor"); c.style.left = (left + px) + "px"; c.style.display = px < 0 || px > width() ? "none" : "block";
  document.getElementById("clock").textContent = fmt(view.now) + " / " + fmt(dur) + " s";
}

function zoom(f, at) { const t = at ?? view.t0 + width() / view.pps / 2; view.pps = Math.min(20000, Math.max(width() / dur / 2, view.pps * f)); view.t0 = t - (t - view.t0) * 1 / f; draw(); }

// --- playback: both lanes as one stereo stream, decoded 20 s at a time --------------------------
const player = {ctx: null, sources: [], startedAt: 0, from: 0, playing: false, timer: null, next: 0};
const ULAW = (() => { const t = new Float32Array(256); for (let i = 0; i < 256; i++) { const u = ~i & 255, sign = u & 128, exp = (u >> 4) & 7, man = u & 15;
  const m = (((man << 3) + 132) << exp) - 132; t[i] = (sign ? -m : m) / 32768; } return t; })();
const SEG = 20, rate = D.audio ? D.audio.rate : 8000, B64SEG = SEG * rate / 3 * 4;

function segment(k) {
  const buf = player.ctx.createBuffer(2, SEG * rate, rate);
  ["caller", "heard"].forEach((lane, ch) => {
    const part = D.audio[lane].substr(k * B64SEG, B64SEG); if (!part) return;
    const bytes = decodeB64(part), out = buf.getChannelData(ch);
    for (let i = 0; i < bytes.length; i++) out[i] = ULAW[bytes[i]];
  });
  return buf;
}

function schedule() {  // keep 10 s of audio scheduled ahead
  const ctx = player.ctx;
  while (player.playing && player.next * SEG < dur && player.startedAt + player.next * SEG - player.from < ctx.currentTime + 10) {
    const src = ctx.createBufferSource(); src.buffer = segment(player.next); src.connect(ctx.destination);
    const when = player.startedAt + player.next * SEG - player.from, offset = Math.max(0, player.from - player.next * SEG);
    src.start(Math.max(ctx.currentTime, when + offset), offset); player.sources.push(src); player.next++;
  }
}

function play() {
  if (!D.audio) return;
  player.ctx = player.ctx || new AudioContext();
  player.from = view.now >= dur ? 0 : view.now; player.startedAt = player.ctx.currentTime + 0.05;
  player.next = Math.floor(player.from / SEG); player.playing = true; schedule();
  player.timer = setInterval(() => { schedule(); tick(); }, 50);
  document.getElementById("play").textContent = "❚❚ pause";
}

function pause() {
  player.playing = false; clearInterval(player.timer);
  for (const s of player.sources) { try { s.stop(); } catch (e) { /* already ended */ } }
  player.sources = []; document.getElementById("play").textContent = "▶ play";
}

function tick() {
  view.now = player.from + Math.max(0, player.ctx.currentTime - player.startedAt);
  if (view.now >= dur) { view.now = dur; pause(); }
  const w = width(); if (x(view.now) > w || x(view.now) < 0) { view.t0 = view.now - 0.1 * w / view.pps; draw(); } else moveCursor();
}

function seek(t) { const was = player.playing; if (was) pause(); view.now = Math.max(0, Math.min(dur, t)); if (was) play(); moveCursor(); }

// --- tables -----------------------------------------------------------------------------------
function tables() {
  const tb = document.querySelector("#turns tbody"), most = Math.max(0.001, ...D.turns.map((t) => Math.max(0, ...Object.values(t.stages))));
  const ms = (v) => v === undefined ? "—" : Math.round(v * 1000);
  for (const t of D.turns) {
    const s = t.stages, tr = el("tr", {className: "turn"});
    tr.append(el("td", {className: "l"}, t.kind === "greeting" ? "greeting" : "turn " + t.n), el("td", {}, fmt(t.t)), el("td", {}, ms(s.model_audio)), el("td", {}, ms(s.media_sent)), el("td", {}, ms(s.heard)));
    const bar = el("div", {className: "bar"}); let prev = 0;
    ["model_audio", "media_sent", "heard"].forEach((k, i) => { if (s[k] === undefined) return; bar.append(el("span", {className: "s" + i, style: "width:" + (100 * (s[k] - prev) / most) + "%"})); prev = s[k]; });
    const td = el("td", {className: "l"}); td.append(bar);
    tr.append(td, el("td", {className: "l"}, t.interrupted ? "interrupted" : (s.heard === undefined ? "not heard" : "")));
    tr.addEventListener("click", () => seek(t.t)); tb.append(tr);
  }
  const bb = document.querySelector("#barge-ins tbody");
  if (!D.barge_ins.length) { const tr = el("tr", {}); tr.append(el("td", {className: "l note", colSpan: 5}, "no barge-in")); bb.append(tr); }
  for (const b of D.barge_ins) { const tr = el("tr", {}); tr.append(el("td", {}, b.clear_t === null ? "—" : fmt(b.clear_t)), el("td", {className: "l"}, b.item_id), el("td", {}, b.claimed_ms), el("td", {}, b.heard_ms), el("td", {}, b.received_ms)); bb.append(tr); }
  const tx = document.getElementById("transcript");
  if (!D.transcript.length) tx.append(el("p", {className: "note"}, "no transcript in this recording"));
  for (const line of D.transcript) {
    const p = el("p", {className: "line " + line.role}), t = el("span", {className: "t"}, fmt(line.t) + " ");
    t.addEventListener("click", () => seek(line.t));
    p.append(t, el("span", {className: "role"}, line.role));
    if (line.heard_text !== undefined) { p.append(el("span", {}, line.heard_text + " "), el("span", {className: "unheard", title: "not heard: the caller interrupted"}, line.text.slice(line.heard_text.length).trim()), el("span", {className: "note"}, " (interrupted)")); }
    else p.append(el("span", {}, line.text + (line.cut ? " (interrupted)" : "")));
    tx.append(p);
  }
  const eb = document.querySelector("#events-table tbody");
  for (const e of D.events) { const tr = el("tr", {}); tr.append(el("td", {}, fmt(e.t)), el("td", {className: "l"}, e.row), el("td", {className: "l"}, e.kind), el("td", {className: "l"}, e.where), el("td", {className: "l"}, e.detail)); tr.addEventListener("click", () => seek(e.t)); eb.append(tr); }
}

function wire() {
  document.getElementById("play").addEventListener("click", () => player.playing ? pause() : play());
  if (!D.audio) { const b = document.getElementById("play"); b.disabled = true; b.title = "no audio in this page"; }
  document.getElementById("zoom-in").addEventListener("click", () => zoom(2));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(0.5));
  document.getElementById("zoom-fit").addEventListener("click", () => { view.pps = width() / dur; view.t0 = 0; draw(); });
  document.getElementById("scroll").addEventListener("input", (ev) => { view.t0 = +ev.target.value; draw(); });
  const tl = document.getElementById("timeline");
  tl.addEventListener("wheel", (ev) => { ev.preventDefault(); const box = tl.querySelector(".lane > :nth-child(2)").getBoundingClientRect();
    if (ev.ctrlKey) zoom(ev.deltaY < 0 ? 1.25 : 0.8, view.t0 + (ev.clientX - box.left) / view.pps); else { view.t0 += (ev.deltaX || ev.deltaY) / view.pps; draw(); } }, {passive: false});
  tl.addEventListener("click", (ev) => { const box = tl.querySelector(".lane > :nth-child(2)").getBoundingClientRect();
    if (ev.clientX >= box.left) seek(view.t0 + (ev.clientX - box.left) / view.pps); });
  window.addEventListener("resize", draw);
}

headerBlock(); buildLanes(); tables(); wire();
view.pps = width() / dur; draw();
</script>
</body></html>
"""
