// Drover's dashboard: one server-sent-event stream (/api/events) brings the cluster's status
// every second and the task-stream bars new since the last; every page renders from it.
"use strict";

const state = { status: null, bars: [], tab: "cluster", progress: null, pictures: new Set() };

// Errors of this page are shown on it (and read by the tests).
window.addEventListener("error", (e) => {
  document.getElementById("errors").textContent += "error: " + e.message + "\n";
});

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u + 1 < units.length) { n /= 1024; u++; }
  return (u === 0 ? n : n.toFixed(1)) + " " + units[u];
}

function micros(us) {
  if (us < 1000) return us + " µs";
  if (us < 1e6) return (us / 1000).toFixed(1) + " ms";
  if (us < 6e7) return (us / 1e6).toFixed(2) + " s";
  return (us / 6e7).toFixed(1) + " min";
}

function ago(ms) {
  if (ms < 2000) return "now";
  if (ms < 120000) return Math.round(ms / 1000) + " s ago";
  return Math.round(ms / 60000) + " min ago";
}

function utc(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function num(v) {
  return el("td", { class: "num" }, v);
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function total(c) {
  return c.waiting + c.ready + c.running + c.done + c.failed;
}

function stateBar(c) {
  const t = Math.max(total(c), 1);
  const bar = el("div", { class: "bar" });
  for (const s of ["done", "failed", "running", "ready", "waiting"]) {
    if (c[s] > 0) {
      const part = el("span", { class: "s-" + s, title: s + ": " + c[s] });
      part.style.width = (100 * c[s] / t) + "%";
      bar.append(part);
    }
  }
  return bar;
}

function percent(c) {
  const t = total(c);
  return t === 0 ? 100 : Math.floor(100 * (c.done + c.failed) / t);
}

function renderSummary(s) {
  const cards = [
    ["workers", s.workers.length],
    ["threads", s.workers.reduce((a, w) => a + w.nthreads, 0)],
    ["tasks running", s.tasks.running],
    ["tasks waiting", s.tasks.waiting + s.tasks.ready],
    ["tasks done", s.tasks.done],
    ["tasks failed", s.tasks.failed],
    ["bytes between pools", bytes(s.bytes_between_pools)],
    ["live runs", s.runs.length],
  ];
  document.getElementById("summary").replaceChildren(
    ...cards.map(([k, v]) => el("div", { class: "card" }, el("b", {}, v), k)));
}

function renderCluster(s) {
  fill(document.querySelector("#workers tbody"), s.workers.map((w) => el("tr", { "data-worker": w.name },
    el("td", {}, w.name), el("td", {}, w.pools.join(", ") || "—"), el("td", {}, w.resources || "—"),
    num(w.nthreads), num(w.running), num(w.queued), num(w.tasks_per_s.toFixed(1)),
    num(w.finished), num(w.failed), num(w.memory_bytes == null ? "—" : bytes(w.memory_bytes)),
    num(w.cells), num(w.held), el("td", {}, ago(w.last_heard_ago_ms)))));
  const log = document.getElementById("events");
  log.replaceChildren(...s.events.slice().reverse().map(([at, what]) =>
    el("li", {}, utc(at) + "  " + what)));
}

function renderPools(s) {
  document.getElementById("pool-bytes").textContent =
    "Bytes that crossed between pools: " + bytes(s.bytes_between_pools) +
    " (of " + bytes(s.bytes_between_workers) + " moved between workers); the pass estimated " +
    bytes(s.estimated_bytes_between_pools) + " for the graphs submitted.";
  fill(document.querySelector("#pool-table tbody"), s.pools.map((p) => el("tr", { "data-pool": p.name },
    el("td", {}, p.name),
    el("td", {}, p.workers + (p.workers ? " (" + s.workers.filter((w) => w.pools.includes(p.name))
      .map((w) => w.name).join(", ") + ")" : "")),
    num(p.tasks.waiting), num(p.tasks.ready),
    num(p.tasks.running), num(p.tasks.done), num(p.tasks.failed), num(bytes(p.bytes_in)))));
}

function renderRuns(s) {
  const list = document.getElementById("run-list");
  if (s.runs.length === 0) {
    list.replaceChildren(el("p", {}, "No live runs."));
  } else {
    list.replaceChildren(...s.runs.map((r) => {
      const box = el("div", { class: "run", "data-run": r.id },
        el("b", {}, (r.name ? r.name + " " : "") + "run " + r.id),
        el("span", { class: "pct" }, "  " + percent(r.tasks) + "%"),
        "  (" + (r.tasks.done + r.tasks.failed) + "/" + total(r.tasks) + " tasks, " +
          r.tasks.failed + " failed)",
        stateBar(r.tasks));
      const shown = state.pictures.has(r.id);
      const toggle = el("a", { href: "#runs", class: "toggle" }, shown ? "hide graph" : "show graph");
      toggle.addEventListener("click", (e) => {
        e.preventDefault();
        if (state.pictures.has(r.id)) state.pictures.delete(r.id); else state.pictures.add(r.id);
        renderRuns(state.status);
      });
      box.append(" ", toggle);
      if (shown) {
        // Redrawn with each update (every second), at most every three seconds.
        const stamp = Math.floor(Date.now() / 3000);
        box.append(el("div", { class: "picture" }, el("img", {
          src: "/api/runs/" + encodeURIComponent(r.id) + "/graph.svg?t=" + stamp,
          alt: "graph of run " + r.id,
        })));
      }
      if (r.failures.length > 0) {
        box.append(el("div", { class: "failures" },
          ...r.failures.map(([k, e]) => el("div", {}, k + ": " + e))));
      }
      return box;
    }));
  }
  fill(document.querySelector("#detached tbody"), s.detached.map((r) => el("tr", { "data-run": r.id },
    el("td", {}, r.id), el("td", {}, r.name), el("td", {}, r.state),
    el("td", {}, r.done + "/" + r.tasks + (r.failed ? " (" + r.failed + " failed)" : "")),
    el("td", {}, utc(r.submitted_ms)), el("td", {}, r.by),
    el("td", {}, el("a", { href: "/api/runs/" + encodeURIComponent(r.id) + "/report" }, "report.json")))));
}

// Function colours: in order of first appearance, so the first dozen never clash.
const palette = ["#8dd3c7", "#fdb462", "#bebada", "#80b1d3", "#b3de69", "#fccde5",
  "#bc80bd", "#ccebc5", "#ffed6f", "#d9d9d9", "#66c2a5", "#e5c494"];
const colours = new Map();
function colour(name) {
  if (!colours.has(name)) colours.set(name, palette[colours.size % palette.length]);
  return colours.get(name);
}

function renderStream(s) {
  const canvas = document.getElementById("stream-canvas");
  const lanes = [];
  for (const w of s.workers) for (let i = 0; i < w.nthreads; i++) lanes.push([w.id, i, w.name]);
  const rowH = 18, left = 160, width = Math.max(600, canvas.parentElement.clientWidth - 20);
  canvas.width = width;
  canvas.height = Math.max(60, lanes.length * rowH + 24);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.font = "12px DejaVu Sans, Verdana, sans-serif";
  // The window: the last two minutes, or less when the bars span less (at least 10 s).
  const first = state.bars.length ? state.bars[0].start_ms : s.now_ms;
  const end = s.now_ms, span = Math.min(120000, Math.max(10000, end - first + 1000));
  const start = end - span;
  const x = (t) => left + (width - left - 10) * (t - start) / span;
  const row = new Map(lanes.map(([w, i], k) => [w + ":" + i, k]));
  lanes.forEach(([, i, name], k) => {
    g.fillStyle = k % 2 ? "#fafafa" : "#f0f2f5";
    g.fillRect(left, k * rowH, width - left, rowH);
    g.fillStyle = "#333";
    g.fillText(i === 0 ? name : "", 4, k * rowH + 13);
  });
  const seen = new Map();
  let drawn = 0;
  for (const b of state.bars) {
    const k = row.get(b.worker + ":" + b.lane);
    if (k === undefined || b.end_ms < start) continue;
    const x0 = Math.max(x(b.start_ms), left), x1 = Math.max(x(b.end_ms), x0 + 1);
    g.fillStyle = b.failed ? "#c53030" : colour((b.kind === "load" ? "load " : "") + b.function);
    g.fillRect(x0, k * rowH + 2, x1 - x0, rowH - 4);
    seen.set((b.kind === "load" ? "load " : "") + b.function, true);
    drawn++;
  }
  canvas.dataset.bars = drawn;
  g.fillStyle = "#555";
  for (let t = 0; t <= 4; t++) {
    const at = start + t * span / 4;
    g.fillText("-" + Math.round((end - at) / 1000) + " s", x(at) - 14, lanes.length * rowH + 16);
  }
  document.getElementById("stream-legend").replaceChildren(...[...seen.keys()].sort().map((f) => {
    const i = el("i", {});
    i.style.background = colour(f);
    return el("span", {}, i, f);
  }));
}

function renderInsights(s) {
  const row = (name, i) => el("tr", {}, el("td", {}, name), num(micros(i.compute_us)),
    num(micros(i.fetch_us)), num(micros(i.load_us)), num(micros(i.idle_us)));
  fill(document.querySelector("#insight-table tbody"),
    [...s.workers.map((w) => row(w.name, w.insights)), row("all workers", s.insights),
      el("tr", {}, el("td", {}, "scheduler (event loop)"), num(micros(s.insights.scheduler_us)),
        el("td", {}), el("td", {}), el("td", {}))]);
  fill(document.querySelector("#slowest tbody"), s.slowest.map((t) => el("tr", {},
    el("td", {}, t.key), el("td", {}, t.function), el("td", {}, t.worker), num(micros(t.duration_us)))));
}

function renderProgress() {
  const rows = (state.progress || []).map(([ns, c]) => el("tr", { "data-namespace": ns },
    el("td", {}, ns), num(c.done), num(c.claimed), num(c.failed), num(c.free)));
  fill(document.querySelector("#namespaces tbody"),
    rows.length ? rows : [el("tr", {}, el("td", { colspan: 5 }, "No durable namespaces yet."))]);
}

function render() {
  const s = state.status;
  if (!s) return;
  renderSummary(s);
  if (state.tab === "cluster") renderCluster(s);
  if (state.tab === "pools") renderPools(s);
  if (state.tab === "runs") renderRuns(s);
  if (state.tab === "stream") renderStream(s);
  if (state.tab === "insights") renderInsights(s);
  if (state.tab === "progress") renderProgress();
}

function show(tab) {
  state.tab = tab;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("shown", t.id === tab);
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === tab);
  if (tab === "progress") loadProgress();
  render();
}

async function loadProgress() {
  const r = await fetch("/api/progress");
  if (r.ok) { state.progress = await r.json(); renderProgress(); }
}

function update(data) {
  state.status = data.status;
  state.bars.push(...data.bars);
  const keepFrom = data.status.now_ms - 130000;
  if (state.bars.length > 20000 || (state.bars.length && state.bars[0].end_ms < keepFrom)) {
    state.bars = state.bars.filter((b) => b.end_ms >= keepFrom).slice(-20000);
  }
  render();
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.addEventListener("update", (e) => {
    live.textContent = "live";
    live.classList.remove("off");
    update(JSON.parse(e.data));
  });
  source.onerror = () => { live.textContent = "reconnecting"; live.classList.add("off"); };
}

for (const a of document.querySelectorAll("#tabs a")) {
  a.addEventListener("click", () => show(a.dataset.tab));
}
show((location.hash || "#cluster").slice(1));
connect();
setInterval(() => { if (state.tab === "progress") loadProgress(); }, 5000);
