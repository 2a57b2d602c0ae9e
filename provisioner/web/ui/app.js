// provisioner console: plain JavaScript, no framework, nothing fetched from
// elsewhere. State comes from JSON polls of /api/v1/console; events from
// /api/v1/events, then live from the Server-Sent Events feed
// /api/v1/events/stream (the browser resumes with Last-Event-ID).
"use strict";

const MAX_EVENTS = 2000;       // events kept in the page
const SHOWN_EVENTS = 200;      // events listed
const SPARK_SAMPLES = 40;      // throughput samples per transfer
const TIMELINE_EVENTS = 40;    // events per host timeline

const state = { console: null, events: [], seq: 0, samples: new Map(), dirty: false,
  feedOpen: false, pollTimer: null, operator: null, csrf: null, profiles: [], images: [],
  imagecast: false };

// host states a redeploy applies to
const REDEPLOYABLE = ["deployed", "failed", "deploying"];

function $(id) { return document.getElementById(id); }

function esc(value) {
  return String(value === null || value === undefined ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function rate(n) { return n === null || n === undefined ? "" : bytes(Math.round(n)) + "/s"; }

function clock(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 8);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.floor(seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}

function bar(fraction, label, cls) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return '<div class="bar ' + (cls || "") + '" data-progress="' + pct.toFixed(1) + '">' +
    '<div class="fill" style="width:' + pct.toFixed(1) + '%"></div><span>' + esc(label) +
    "</span></div>";
}

function sparkline(values, width, height) {
  width = width || 120; height = height || 20;
  if (values.length < 2) return '<svg class="spark" width="' + width + '" height="' + height + '"></svg>';
  const max = (Math.max.apply(null, values) || 1) * 1.2;
  const step = width / (SPARK_SAMPLES - 1);
  const start = width - step * (values.length - 1);
  const pts = values.map((v, i) => (start + i * step).toFixed(1) + "," +
    (height - 1 - (v / max) * (height - 2)).toFixed(1)).join(" ");
  return '<svg class="spark" width="' + width + '" height="' + height + '" viewBox="0 0 ' +
    width + " " + height + '"><polyline fill="none" stroke="#2b6cb0" stroke-width="1.5" points="' +
    pts + '"/></svg>';
}

// -- events

const KIND_COLOURS = { dhcp: "#805ad5", tftp: "#2b6cb0", http: "#0987a0", menu: "#d69e2e",
  host: "#1f8a4c", imagecast: "#dd6b20", config: "#4a5568" };

function describe(e) {
  switch (e.kind) {
    case "dhcp.boot": return "arch " + e.arch + (e.vendor ? " " + e.vendor : "") + " → " +
      (e.boot_file || "nothing") + (e.reason ? " (" + e.reason + ")" : "");
    case "tftp.start": case "http.start": return e.path + (e.size ? " (" + bytes(e.size) + ")" : "");
    case "tftp.end": case "http.end": return e.path + ": " + e.outcome + ", " + bytes(e.bytes) +
      (e.rate ? " at " + rate(e.rate) : "") + (e.retransmits ? ", " + e.retransmits +
      " retransmits" : "") + (e.detail ? " (" + e.detail + ")" : "");
    case "tftp.refused": return e.path + ": " + e.reason;
    case "http.error": return e.method + " " + e.path + ": " + e.code;
    case "menu.render": return e.path + " from template " + e.template;
    case "menu.error": return e.message;
    case "host.state": return (e.source || "new") + " → " + e.target + ": " + e.why;
    case "config.reload": return e.result + (e.error ? ": " + e.error : "");
    case "operator.action": return e.operator + ": " + e.action + " " + e.target + " " + e.result +
      (e.error ? " (" + e.error + ")" : "");
    case "operator.login": return e.operator + " from " + e.peer + ": " + e.result;
    case "operator.logout": return e.operator + " from " + e.peer;
    case "imagecast.session": return "session " + e.session + ": " + e.name + " (" + bytes(e.size) + ")";
    case "imagecast.round": return "session " + e.session + " round " + e.round + ": " +
      bytes(e.bytes) + " in " + e.ranges + " ranges";
    case "imagecast.receiver": return "session " + e.session + ": " + e.client + " " + e.verdict +
      (e.reason ? " (" + e.reason + ")" : "");
    case "imagecast.done": return "session " + e.session + " done after " + e.rounds +
      " rounds, " + e.complete + " of " + e.receivers + " complete";
    default: return Object.keys(e).filter(k => !["seq", "time", "kind", "host", "mac", "level"]
      .includes(k)).map(k => k + "=" + e[k]).join(" ");
  }
}

function who(e) { return e.host || e.mac || e.ip || e.client || ""; }

function addEvent(e) {
  if (e.seq <= state.seq) return;
  state.seq = e.seq;
  state.events.push(e);
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  if (/^(tftp|http)\.(start|end)$|^host\.|^imagecast\.|^config\./.test(e.kind)) schedulePoll(150);
  state.dirty = true;
}

function renderEvents() {
  const onlyProblems = $("only-problems").checked;
  const out = [];
  for (let i = state.events.length - 1; i >= 0 && out.length < SHOWN_EVENTS; i--) {
    const e = state.events[i];
    if (onlyProblems && e.level === "info") continue;
    out.push('<li class="' + esc(e.level) + '" data-seq="' + e.seq + '" data-kind="' + esc(e.kind) +
      '"><span class="t">' + clock(e.time) + '</span><span class="k">' + esc(e.kind) +
      '</span><span class="w">' + esc(who(e)) + '</span><span class="d" title="' +
      esc(describe(e)) + '">' + esc(describe(e)) + "</span></li>");
  }
  $("events").innerHTML = out.join("");
}

// -- transfers

function transferKey(t) { return t.protocol + " " + t.peer + " " + t.path; }

function renderTransfers(c) {
  const rows = [];
  const seen = new Set();
  const list = c.transfers.slice().sort((a, b) => (a.started || 0) - (b.started || 0));
  for (const t of list) {
    const key = transferKey(t);
    seen.add(key);
    let s = state.samples.get(key);
    if (!s) { s = { last: null, rates: [] }; state.samples.set(key, s); }
    if (s.last && c.time > s.last.time) {
      s.rates.push(Math.max(0, (t.bytes - s.last.bytes) / (c.time - s.last.time)));
      if (s.rates.length > SPARK_SAMPLES) s.rates.shift();
    }
    s.last = { time: c.time, bytes: t.bytes };
    const total = t.length || t.size;
    const fraction = total ? t.bytes / total : 0;
    const label = bytes(t.bytes) + (total ? " of " + bytes(total) + " (" +
      (fraction * 100).toFixed(0) + "%)" : "");
    const now = s.rates.length ? s.rates[s.rates.length - 1] : (t.elapsed ? t.bytes / t.elapsed : 0);
    rows.push('<tr data-transfer="' + esc(key) + '" data-bytes="' + t.bytes + '"><td>' +
      esc(t.protocol) + (t.direction === "write" ? " ↑" : "") + "</td><td>" +
      esc(t.host || t.mac || t.ip) + '</td><td class="file" title="' + esc(t.path) + '">' +
      esc(t.path) + "</td><td>" + bar(fraction, label) + "</td><td>" + esc(rate(now)) +
      "</td><td>" + sparkline(s.rates) + "</td><td>" + esc(ago(t.elapsed)) + "</td></tr>");
  }
  for (const key of Array.from(state.samples.keys())) if (!seen.has(key)) state.samples.delete(key);
  $("transfers").tBodies[0].innerHTML = rows.join("");
  $("transfer-count").textContent = list.length ? String(list.length) : "";
  $("transfers-empty").classList.toggle("hidden", list.length > 0);
}

// -- hosts

function timeline(events, now) {
  if (!events.length) return '<svg class="timeline"></svg>';
  const first = events[0].time;
  const span = Math.max(60, now - first);
  const marks = events.map(e => {
    const x = (2 + 96 * (e.time - first) / span).toFixed(2);
    const colour = KIND_COLOURS[e.kind.split(".")[0]] || "#718096";
    const r = e.level === "info" ? 4 : 5;
    const stroke = e.level === "error" ? ' stroke="#c53030" stroke-width="2"' : "";
    return '<circle cx="' + x + '%" cy="11" r="' + r + '" fill="' + colour + '"' + stroke +
      "><title>" + esc(clock(e.time) + " " + e.kind + ": " + describe(e)) + "</title></circle>";
  }).join("");
  return '<svg class="timeline" data-events="' + events.length + '"><line x1="1%" y1="11" x2="99%" y2="11" ' +
    'stroke="#cbd2d9"/>' + marks + "</svg>";
}

function hostEvents(name, macs) {
  const out = [];
  for (let i = state.events.length - 1; i >= 0 && out.length < TIMELINE_EVENTS; i--) {
    const e = state.events[i];
    if (e.host === name || (e.mac && macs.includes(e.mac))) out.push(e);
  }
  return out.reverse();
}

function renderHosts(c) {
  const rows = [];
  const all = c.hosts.map(h => ({ name: h.name, state: h.state, since: h.since, why: h.reason,
    macs: h.macs || [] })).concat(c.discovered.map(m => ({ name: m.mac, state: "discovered",
    since: m.last_seen || m.first_seen, why: "", macs: [m.mac] })));
  // an adopt form being filled in is kept across renders
  const editing = document.activeElement && document.activeElement.closest &&
    document.activeElement.closest("#hosts td.act") ? true : false;
  if (editing) return;
  for (const h of all) {
    rows.push('<tr data-host="' + esc(h.name) + '" data-state="' + esc(h.state) + '"><td>' +
      esc(h.name) + '</td><td class="state state-' + esc(h.state) + '">' + esc(h.state) +
      "</td><td>" + (h.since ? esc(ago(c.time - h.since)) + " ago" : "") +
      '</td><td class="why" title="' + esc(h.why) + '">' + esc(h.why) + "</td><td>" +
      timeline(hostEvents(h.name, h.macs), c.time) + '</td><td class="act">' + hostActions(h) +
      "</td></tr>");
  }
  $("hosts").tBodies[0].innerHTML = rows.join("");
  $("host-count").textContent = all.length ? String(all.length) : "";
  $("hosts-empty").classList.toggle("hidden", all.length > 0);
}

function hostActions(h) {
  if (!state.operator) return "";
  if (h.state === "discovered") {
    return '<input class="adopt-name" placeholder="name" data-mac="' + esc(h.name) + '">' +
      '<select class="adopt-profile">' + state.profiles.map(p => '<option>' + esc(p) +
      "</option>").join("") + '</select> <button class="act" data-action="adopt" data-mac="' +
      esc(h.name) + '">adopt</button>';
  }
  if (REDEPLOYABLE.includes(h.state)) {
    return '<button class="act" data-action="redeploy" data-host="' + esc(h.name) +
      '">redeploy</button>';
  }
  return "";
}

// -- imagecast and DHCP

function renderImagecast(c) {
  const out = c.imagecast.map(s => {
    const rows = s.receivers.map(r => '<tr data-receiver="' + esc(r.id) + '" data-state="' +
      esc(r.state) + '"><td>' + esc(r.id) + "</td><td>" + esc(r.address) + "</td><td>" +
      esc(r.state) + (r.connected ? "" : " (disconnected)") + "</td><td>round " + r.round +
      "</td><td>" + bar(r.progress, (r.progress * 100).toFixed(0) + "%",
        r.state === "complete" ? "done" : (r.state === "failed" || r.state === "lost" ? "failed" : "")) +
      "</td></tr>").join("");
    const stop = state.operator && state.imagecast && s.state !== "done" ?
      ' <button class="act danger" data-action="imagecast-stop" data-session="' + s.session +
      '">stop</button>' : "";
    return '<div class="session" data-session="' + s.session + '" data-state="' + esc(s.state) +
      '"><h3>' + esc(s.name) + ' <span class="count">session ' + s.session + "</span>" + stop +
      "</h3><div class=\"meta\">" +
      esc(s.state) + (s.phase && s.state !== "done" ? " (" + esc(s.phase) + ")" : "") + " · round " +
      s.round + " of at most " + s.max_rounds + " · " + bytes(s.size) + " · " + rate(s.rate) +
      " · " + esc(s.group) + ":" + s.port + (s.error ? " · error: " + esc(s.error) : "") +
      '</div><table class="receivers"><tbody>' + (rows || '<tr><td class="empty">no receiver yet</td></tr>') +
      "</tbody></table></div>";
  });
  $("imagecast").innerHTML = out.join("");
  $("imagecast-empty").classList.toggle("hidden", out.length > 0);
}

function renderPools(c) {
  const d = c.dhcp;
  if (!d.mode) { $("pools").innerHTML = '<p class="empty">DHCP is not running.</p>'; return; }
  if (!d.pools.length) {
    $("pools").innerHTML = '<p class="empty">' + esc(d.mode) + " mode: no address pools.</p>";
    return;
  }
  $("pools").innerHTML = d.pools.map(p => {
    const used = p.bound + p.offered + p.declined;
    return '<div class="pool" data-pool="' + esc(p.network) + '"><div class="label"><span>' +
      esc(p.network) + "</span><span>" + used + " of " + p.size + " (" + p.bound + " bound, " +
      p.offered + " offered, " + p.declined + " declined)</span></div>" +
      bar(p.size ? used / p.size : 0, "", used / p.size > 0.9 ? "failed" : "") + "</div>";
  }).join("");
}

function renderSummary(c) {
  const problems = state.events.filter(e => e.level !== "info").length;
  $("summary").textContent = c.hosts.length + " hosts · " + c.discovered.length + " discovered · " +
    c.transfers.length + " transfers · " + c.imagecast.filter(s => s.state !== "done").length +
    " imagecast sessions · " + problems + " warnings/errors kept";
}

function render() {
  const c = state.console;
  if (c) {
    renderTransfers(c); renderHosts(c); renderImagecast(c); renderPools(c); renderSummary(c);
  }
  renderEvents();
  state.dirty = false;
}

// -- the operator

function renderOperator() {
  const box = $("operator");
  if (state.operator) {
    box.innerHTML = 'operator <b id="operator-name">' + esc(state.operator) +
      '</b><button id="logout" type="button">log out</button>';
    $("logout").addEventListener("click", logout);
  }
  const ic = $("imagecast-actions");
  if (state.operator && state.imagecast) {
    ic.innerHTML = '<input id="ic-image" list="ic-images" placeholder="image name">' +
      '<datalist id="ic-images">' + state.images.map(i => "<option>" + esc(i) +
      "</option>").join("") + '</datalist><label>min receivers <input id="ic-min" type="number" ' +
      'min="1" value="1"></label><label>max wait (s) <input id="ic-wait" type="number" min="0" ' +
      'value="300"></label><button class="act" data-action="imagecast-start">start session</button>';
  } else {
    ic.innerHTML = "";
  }
}

async function loadSession() {
  try {
    const s = await getJSON("/actions/session");
    state.operator = s.operator; state.csrf = s.csrf;
    state.profiles = s.profiles || []; state.images = s.images || [];
    state.imagecast = !!s.imagecast;
    if (!s.login && !s.operator) $("operator").textContent = "read-only";
  } catch (err) { state.operator = null; }
  renderOperator();
  state.dirty = true;
}

function say(text, error) {
  const p = $("action-status");
  p.textContent = text;
  p.className = error ? "error" : "";
}

async function act(action, body) {
  say(action + "…", false);
  let answer, response;
  try {
    response = await fetch("/actions/" + action, { method: "POST", cache: "no-store",
      credentials: "same-origin", headers: { "Content-Type": "application/json",
        "X-CSRF-Token": state.csrf || "" }, body: JSON.stringify(body) });
    answer = await response.json();
  } catch (err) { say(action + ": " + err.message, true); return; }
  if (!response.ok) {
    say(action + " refused (" + response.status + "): " + (answer.error || ""), true);
    if (response.status === 401) { state.operator = null; renderOperator(); }
    return;
  }
  const r = answer.result || {};
  say(action + " done" + (r.name || r.host ? ": " + (r.name || (r.host && r.host.name)) : "") +
    (r.session ? " (session " + r.session + ")" : "") + (r.state ? ", " + r.state : ""), false);
  schedulePoll(100);
}

async function logout() {
  await fetch("/logout", { method: "POST", credentials: "same-origin", headers: {
    "Content-Type": "application/json", "X-CSRF-Token": state.csrf || "" }, body: "{}" });
  window.location.reload();
}

function onClick(ev) {
  const b = ev.target.closest ? ev.target.closest("button[data-action]") : null;
  if (!b || !state.operator) return;
  const a = b.dataset.action;
  if (a === "redeploy") act(a, { host: b.dataset.host });
  else if (a === "adopt") {
    const cell = b.closest("td");
    act(a, { mac: b.dataset.mac, name: cell.querySelector(".adopt-name").value,
      profile: cell.querySelector(".adopt-profile").value });
  } else if (a === "imagecast-start") {
    act(a, { image: $("ic-image").value, min_receivers: Number($("ic-min").value) || null,
      max_wait: $("ic-wait").value === "" ? null : Number($("ic-wait").value) });
  } else if (a === "imagecast-stop") act(a, { session: Number(b.dataset.session) });
}

// -- polling and the feed

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok && response.status !== 503) throw new Error(url + ": " + response.status);
  return response.json();
}

function schedulePoll(delay) {
  if (state.pollTimer !== null) {
    if (delay >= 1000) return;
    clearTimeout(state.pollTimer);
  }
  state.pollTimer = setTimeout(poll, delay);
}

async function poll() {
  state.pollTimer = null;
  try {
    state.console = await getJSON("/api/v1/console");
    state.dirty = true;
  } catch (err) {
    $("summary").textContent = "cannot reach the appliance: " + err.message;
  }
  try {
    const health = await getJSON("/healthz");
    const badge = $("health");
    badge.textContent = health.ok ? "healthy" : "unhealthy";
    badge.className = "badge " + (health.ok ? "ok" : "bad");
    badge.title = JSON.stringify(health.services);
  } catch (err) { /* shown by the summary */ }
  const busy = state.console && state.console.transfers.length;
  schedulePoll(busy ? 1000 : 3000);
}

function openFeed() {
  const feed = new EventSource("/api/v1/events/stream?since=" + state.seq);
  feed.onopen = () => { $("feed").textContent = "feed: live"; $("feed").className = "badge ok"; };
  feed.onerror = () => { $("feed").textContent = "feed: reconnecting"; $("feed").className = "badge off"; };
  feed.onmessage = m => { try { addEvent(JSON.parse(m.data)); } catch (err) { /* skip */ } };
}

async function start() {
  $("only-problems").addEventListener("change", () => { state.dirty = true; });
  document.addEventListener("click", onClick);
  await loadSession();
  try {
    const answer = await getJSON("/api/v1/events?limit=" + MAX_EVENTS);
    for (const e of answer.events) addEvent(e);
  } catch (err) { /* the feed fills in */ }
  openFeed();
  await poll();
  render();
  setInterval(() => { if (state.dirty) render(); }, 250);
}

document.addEventListener("DOMContentLoaded", start);
