// BACO playground: streams samples from this server's OpenAI-compatible API.
// No build step and no dependency: plain browser JavaScript.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "baco-api-key";
const TOP_LOGPROBS = 3;  // alternatives per token shown when hovering a word
let model = null;
let last = null;        // the last run: settings, groups and their samples (for JSON export)
let controller = null;  // aborts the running streams

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setStatus(text, state) {
  const s = $("status");
  s.textContent = text;
  s.dataset.state = state;
}

async function apiError(resp) {
  try {
    const body = await resp.json();
    return (body.error && body.error.message) || resp.statusText;
  } catch (e) {
    return resp.status + " " + resp.statusText;
  }
}

async function loadModel() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (resp.status === 401) {
    $("model").textContent = "(enter the API key)";
    setStatus("This server needs an API key: enter it below.", "error");
    return false;
  }
  if (!resp.ok) throw new Error(await apiError(resp));
  const card = (await resp.json()).data[0];
  model = card.id;
  $("model").textContent = model;
  $("model").title = card.baco ? "base: " + card.baco.base + "\naligned: " + card.baco.aligned : "";
  return true;
}

function settings() {
  const int = (id, fallback) => {
    const v = parseInt($(id).value, 10);
    return Number.isFinite(v) ? v : fallback;
  };
  if ($("seed").value === "") $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  return {
    mode: document.querySelector("input[name=mode]:checked").value,
    system: $("system").value,
    prompt: $("prompt").value,
    router: $("router").value,
    gamma: parseFloat($("gamma").value),
    use_gamma: $("use-gamma").checked,
    base_share: parseFloat($("base-share").value),
    guard: Math.min(1, Math.max(0, parseFloat($("guard").value) || 0)),
    temperature: parseFloat($("temperature").value),
    n: int("n", 3),
    max_tokens: int("max-tokens", 48),
    seed: int("seed", 0),
    compare: $("compare").checked,
  };
}

// Routers whose pick is a threshold: they take a base share (the others a γ, or nothing).
const THRESHOLD_ROUTERS = ["P", "H", "P-PUNC", "H-PUNC", "P-FC", "H-FC", "nudging", "random"];

// What the group's title says of the router's knob.
function knobLabel(s) {
  if (s.router === "aligned" || s.router === "base") return "";
  let label = THRESHOLD_ROUTERS.includes(s.router) && !s.use_gamma
    ? ", base share " + Math.round(100 * s.base_share) + "%"
    : ", γ " + s.gamma.toFixed(2);
  if (s.guard > 0) label += ", guard " + s.guard.toFixed(2);
  return label;
}

// A log-prob as the page shows it: two decimals, a true minus sign.
function fmtLogprob(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return "n/a";
  return (x < 0 ? "\u2212" : "") + Math.abs(x).toFixed(2);
}

function requestOf(s, router) {
  const body = {
    model, stream: true, n: s.n, temperature: s.temperature, max_tokens: s.max_tokens,
    seed: s.seed, router,
  };
  if (THRESHOLD_ROUTERS.includes(router) && !s.use_gamma) body.base_share = s.base_share;
  else if (router !== "aligned" && router !== "base") body.gamma = s.gamma;
  if (router !== "aligned" && s.guard > 0) body.guard = s.guard;
  if (s.mode === "chat") {
    body.messages = [];
    if (s.system.trim()) body.messages.push({ role: "system", content: s.system });
    body.messages.push({ role: "user", content: s.prompt });
    body.logprobs = true;
    body.top_logprobs = TOP_LOGPROBS;
    return { endpoint: "/v1/chat/completions", body };
  }
  body.prompt = s.prompt;
  body.logprobs = TOP_LOGPROBS;  // the legacy endpoint: k alternatives per token
  if (s.system.trim()) body.system_prompt = s.system;
  return { endpoint: "/v1/completions", body };
}

// One group of n samples (BACO, or the aligned model alone): its DOM and its data.
function makeGroup(parent, title, kind, n) {
  const section = document.createElement("section");
  section.className = "group";
  section.dataset.kind = kind;
  const h = document.createElement("h2");
  h.textContent = title;
  const figures = document.createElement("p");
  figures.className = "figures";
  figures.textContent = "Diversity: waiting for the samples…";
  const grid = document.createElement("div");
  grid.className = "samples";
  section.append(h, figures, grid);
  parent.append(section);
  const samples = [];
  for (let i = 0; i < n; i++) {
    const card = document.createElement("article");
    card.className = "sample";
    card.dataset.index = String(i);
    card.setAttribute("aria-label", title + ", sample " + (i + 1));
    const head = document.createElement("header");
    head.innerHTML = "<span>#" + (i + 1) + "</span><span class=\"share\">base share <strong>…</strong></span>" +
      "<span class=\"lp\" title=\"the aligned model's mean log-prob per token of this sample " +
      "(higher: the aligned model finds the text more natural)\">aligned log-prob <strong>…</strong>/token</span>" +
      "<span class=\"finish\"></span>";
    const text = document.createElement("p");
    text.className = "text";
    card.append(head, text);
    grid.append(card);
    samples.push({
      index: i, text: "", spans: [], base_fraction: null, finish_reason: null, card, el: text,
      aligned_mean_logprob: null, base_mean_logprob: null,
      entries: [], decoder: new TextDecoder(), decoded: 0,
    });
  }
  return { kind, title, section, figures, samples, request: null, diversity: null };
}

function addText(sample, text, source) {
  if (!text) return;
  sample.text += text;
  const spans = sample.spans;
  if (spans.length && spans[spans.length - 1].source === source) {
    spans[spans.length - 1].text += text;
    spans[spans.length - 1].node.textContent += text;
  } else {
    const node = document.createElement("span");
    node.className = "w " + source;
    node.title = "written by the " + source + " model";
    node.textContent = text;
    sample.el.append(node);
    spans.push({ text, source, node });
  }
}

// The log-probs of a chunk's tokens, in either of OpenAI's shapes, kept with where each token
// starts in the sample's text (UTF-16 units for chat, from its bytes; code points for the
// legacy endpoint's text_offset, turned into UTF-16 units once the text is known).
function addEntries(sample, logprobs) {
  if (!logprobs) return;
  if (Array.isArray(logprobs.content)) {  // chat
    for (const e of logprobs.content) {
      const start = sample.decoded;
      const text = Array.isArray(e.bytes)
        ? sample.decoder.decode(new Uint8Array(e.bytes), { stream: true })
        : e.token;
      sample.decoded += text.length;
      const top = (e.top_logprobs || []).map((t) => [t.token, t.logprob]);
      sample.entries.push({ token: e.token, logprob: e.logprob, start, top });
    }
  } else if (Array.isArray(logprobs.tokens)) {  // legacy completions
    logprobs.tokens.forEach((token, i) => {
      const top = Object.entries((logprobs.top_logprobs || [])[i] || {})
        .filter(([t]) => t !== token)
        .sort((a, b) => b[1] - a[1]);
      sample.entries.push({
        token, logprob: logprobs.token_logprobs[i], codepoint: logprobs.text_offset[i], top,
      });
    });
  }
}

// UTF-16 offset of each code point offset of `text` (the legacy endpoint counts code points).
function unitOffsets(text) {
  const units = [0];
  for (const ch of text) units.push(units[units.length - 1] + ch.length);
  return units;
}

function quoted(token) {
  return "\u201c" + token.replace(/\n/g, "\\n") + "\u201d";
}

function tokenTitle(entries, source) {
  const lines = entries.map((e) => {
    let line = quoted(e.token) + ": log-prob " + fmtLogprob(e.logprob);
    if (e.top.length) line += " (top: " + e.top.map(([t, lp]) => quoted(t) + " " + fmtLogprob(lp)).join(", ") + ")";
    if (typeof e.aligned === "number" || typeof e.base === "number") {
      line += "\n  aligned model " + fmtLogprob(e.aligned) + ", base model " + fmtLogprob(e.base);
    }
    return line;
  });
  lines.push("written by the " + (entries[0].source || source) + " model");
  return lines.join("\n");
}

// The finished sample drawn again with one node per token (cut at span edges too), each with a
// title that gives its log-prob and its writer.
function renderTokens(sample) {
  const text = sample.text;
  const units = unitOffsets(text);
  const starts = sample.entries.map((e) =>
    Math.min(text.length, "start" in e ? e.start : units[Math.min(e.codepoint, units.length - 1)]));
  const spanEdges = [];
  let at = 0;
  for (const span of sample.spans) { spanEdges.push([at, span]); at += span.text.length; }
  const cuts = [...new Set([0, text.length, ...starts, ...spanEdges.map(([a]) => a)])]
    .filter((x) => x >= 0 && x <= text.length).sort((a, b) => a - b);
  sample.el.textContent = "";
  let spanIndex = 0;
  let entryIndex = 0;
  for (let c = 0; c + 1 < cuts.length; c++) {
    const a = cuts[c], b = cuts[c + 1];
    if (a === b) continue;
    while (spanIndex + 1 < spanEdges.length && spanEdges[spanIndex + 1][0] <= a) spanIndex++;
    const span = spanEdges[spanIndex][1];
    while (entryIndex < starts.length && starts[entryIndex] < a) entryIndex++;
    let tokens = [];
    for (let k = entryIndex; k < starts.length && starts[k] < b; k++) tokens.push(sample.entries[k]);
    if (!tokens.length && entryIndex > 0) tokens = [sample.entries[entryIndex - 1]];  // a token cut by a span edge
    const node = document.createElement("span");
    node.className = "w " + span.source;
    node.textContent = text.slice(a, b);
    if (tokens.length) {
      node.classList.add("tok");
      node.dataset.logprob = String(tokens[0].logprob);
      node.title = tokenTitle(tokens, span.source);
    } else {
      node.title = "written by the " + span.source + " model";
    }
    sample.el.append(node);
  }
}

function finishSample(sample, choice) {
  const baco = choice.baco || {};
  sample.finish_reason = choice.finish_reason;
  if (Array.isArray(baco.spans)) {  // the server's spans are authoritative
    sample.el.textContent = "";
    sample.spans = [];
    sample.text = "";
    for (const span of baco.spans) addText(sample, span.text, span.source);
  }
  if (Array.isArray(baco.token_logprobs) && baco.token_logprobs.length === sample.entries.length) {
    baco.token_logprobs.forEach((both, i) => Object.assign(sample.entries[i], both));
  }
  if (sample.entries.length && sample.spans.length) renderTokens(sample);
  if (typeof baco.base_fraction === "number") sample.base_fraction = baco.base_fraction;
  const share = sample.base_fraction === null ? "?" : Math.round(100 * sample.base_fraction) + "%";
  sample.card.querySelector(".share strong").textContent = share;
  for (const name of ["aligned_mean_logprob", "base_mean_logprob"]) {
    if (typeof baco[name] === "number") sample[name] = baco[name];
  }
  const lp = sample.card.querySelector(".lp");
  lp.querySelector("strong").textContent = fmtLogprob(sample.aligned_mean_logprob);
  if (typeof sample.base_mean_logprob === "number") {
    lp.title += "; the base model's: " + fmtLogprob(sample.base_mean_logprob) + "/token";
  }
  sample.card.querySelector(".finish").textContent = choice.finish_reason || "";
  sample.card.dataset.done = "true";
}

async function stream(group, s, router, signal) {
  const { endpoint, body } = requestOf(s, router);
  group.request = { endpoint, body };
  const resp = await fetch(endpoint, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!resp.ok) throw new Error(await apiError(resp));
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          const sample = group.samples[choice.index];
          if (!sample) continue;
          const text = choice.delta ? choice.delta.content : choice.text;
          const source = (choice.baco && choice.baco.source) || "aligned";
          addEntries(sample, choice.logprobs);
          if (text && !(choice.baco && choice.baco.spans)) addText(sample, text, source);
          if (choice.finish_reason) finishSample(sample, choice);
        }
      }
    }
  }
  throw new Error("the stream ended without [DONE]");
}

async function score(group) {
  const resp = await fetch("/v1/baco/diversity", {
    method: "POST", headers: headers(), body: JSON.stringify({ samples: group.samples.map((x) => x.text) }),
  });
  if (!resp.ok) throw new Error(await apiError(resp));
  const d = await resp.json();
  group.diversity = d;
  const fmt = (x) => x.toFixed(3);
  const shares = group.samples.map((x) => x.base_fraction || 0);
  const meanShare = shares.reduce((a, b) => a + b, 0) / shares.length;
  const scored = group.samples.map((x) => x.aligned_mean_logprob).filter((x) => typeof x === "number");
  const meanLogprob = scored.length ? scored.reduce((a, b) => a + b, 0) / scored.length : null;
  group.figures.innerHTML = "";
  const parts = [
    ["distinct-2", fmt(d.distinct_2), "unique word pairs / word pairs, pooled (higher: more diverse)"],
    ["distinct-1", fmt(d.distinct_1), "unique words / words"],
    ["mean pairwise similarity", fmt(d.pairwise_similarity), "mean Jaccard overlap of word pairs between two samples (lower: more diverse)"],
    ["mean base share", Math.round(100 * meanShare) + "%", "share of the tokens written by the base model"],
    ["mean aligned log-prob", fmtLogprob(meanLogprob) + "/token",
      "the aligned model's mean log-prob per token, averaged over the samples (higher: more natural to the aligned model)"],
  ];
  parts.forEach(([name, value, help], i) => {
    const span = document.createElement("span");
    span.className = "figure";
    span.dataset.name = name;
    span.title = help;
    span.textContent = name + " " + value;
    group.figures.append(span);
    if (i < parts.length - 1) group.figures.append(" · ");
  });
}

async function run() {
  if (controller) controller.abort();
  if (!model && !(await loadModel().catch((e) => { setStatus(e.message, "error"); return false; }))) return;
  const s = settings();
  if (!s.prompt.trim()) { setStatus("Type a prompt first.", "error"); $("prompt").focus(); return; }
  controller = new AbortController();
  const signal = controller.signal;
  const results = $("results");
  results.textContent = "";
  const groups = [makeGroup(results, "BACO (" + s.router + knobLabel(s) + ")", "baco", s.n)];
  if (s.compare) groups.push(makeGroup(results, "Aligned model alone (same n, sampling and seed)", "aligned", s.n));
  last = { settings: s, groups, started: new Date().toISOString() };
  $("run").disabled = true; $("stop").disabled = false;
  $("copy").disabled = true; $("download").disabled = true;
  setStatus("Streaming " + s.n + (s.compare ? " + " + s.n : "") + " samples…", "running");
  try {
    await Promise.all(groups.map((g) => stream(g, s, g.kind === "baco" ? s.router : "aligned", signal)));
    await Promise.all(groups.map(score));
    setStatus("Done: " + groups.map((g) => g.samples.length).reduce((a, b) => a + b) + " samples (seed " + s.seed + ").", "done");
  } catch (e) {
    setStatus(e.name === "AbortError" ? "Stopped." : "Error: " + e.message, e.name === "AbortError" ? "stopped" : "error");
  } finally {
    controller = null;
    $("run").disabled = false; $("stop").disabled = true;
    $("copy").disabled = false; $("download").disabled = false;
  }
}

function exported() {
  if (!last) return null;
  return {
    model,
    created: last.started,
    settings: last.settings,
    groups: last.groups.map((g) => ({
      kind: g.kind,
      title: g.title,
      request: g.request,
      diversity: g.diversity,
      samples: g.samples.map((x) => ({
        index: x.index, text: x.text, base_fraction: x.base_fraction, finish_reason: x.finish_reason,
        aligned_mean_logprob: x.aligned_mean_logprob, base_mean_logprob: x.base_mean_logprob,
        spans: x.spans.map((sp) => ({ text: sp.text, source: sp.source })),
        logprobs: x.entries.map((e) => ({
          token: e.token, logprob: e.logprob, top_logprobs: e.top.map(([token, logprob]) => ({ token, logprob })),
        })),
      })),
    })),
  };
}

function json() { return JSON.stringify(exported(), null, 2); }

async function copy() {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(json());
    } else {  // plain http on another host: the older way
      const area = document.createElement("textarea");
      area.value = json();
      document.body.append(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      if (!ok) throw new Error("the browser refused");
    }
    setStatus("Copied the samples as JSON.", "done");
  } catch (e) {
    setStatus("Copy failed (" + e.message + "): use Download.", "error");
  }
}

function download() {
  const url = URL.createObjectURL(new Blob([json()], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = "baco-samples-seed" + (last ? last.settings.seed : "") + ".json";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function init() {
  const stored = sessionStorage.getItem(KEY_STORE);
  if (stored) $("api-key").value = stored;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
    model = null;
    loadModel().then((ok) => ok && setStatus("Ready.", "idle")).catch((e) => setStatus(e.message, "error"));
  });
  const showGamma = () => { $("gamma-value").textContent = parseFloat($("gamma").value).toFixed(2); };
  const showShare = () => {
    $("base-share-value").textContent = Math.round(100 * parseFloat($("base-share").value)) + "%";
  };
  $("gamma").addEventListener("input", showGamma);
  $("base-share").addEventListener("input", showShare);
  // The knob alone changes: the same settings and seed, re-run once the slider is released.
  $("gamma").addEventListener("change", () => { showGamma(); if (last) run(); });
  $("base-share").addEventListener("change", () => { showShare(); if (last) run(); });
  const syncMode = () => {
    const chat = document.querySelector("input[name=mode]:checked").value === "chat";
    $("system-label").textContent = chat ? "System prompt (optional)" : "System prompt for the aligned model (optional)";
  };
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", syncMode));
  $("form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("copy").addEventListener("click", copy);
  $("download").addEventListener("click", download);
  showGamma();
  loadModel().catch((e) => setStatus("Error: " + e.message, "error"));
}

init();
