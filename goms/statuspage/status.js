// The goms status page: polls status.json every second and renders it.
// Values are set with textContent only, never parsed as HTML.
"use strict";

const interval = 1000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (k === "class") {
      e.className = v;
    } else {
      e.setAttribute(k, v);
    }
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(id, rows) {
  document.querySelector(`#${id} tbody`).replaceChildren(...rows);
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return (d ? `${d}d ` : "") + (d || h ? `${h}h ` : "") + `${m}m ${s % 60}s`;
}

function bytes(n) {
  if (!n) {
    return "n/a";
  }
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function ms(v) {
  if (v === null || v === undefined) {
    return "–";
  }
  return v < 10 ? `${v.toFixed(2)} ms` : `${v.toFixed(0)} ms`;
}

function rate(v) {
  return v >= 10 ? v.toFixed(0) : v.toFixed(2);
}

function errors(m) {
  if (!m.calls) {
    return "–";
  }
  const pct = `${(m.error_rate * 100).toFixed(m.error_rate && m.error_rate < 0.01 ? 2 : 0)}%`;
  return el("span", { class: m.errors ? "err" : "" }, `${pct} (${m.errors})`);
}

function methodName(procedure) {
  return procedure.slice(procedure.lastIndexOf("/") + 1);
}

function renderProcess(doc) {
  const p = doc.process;
  document.getElementById("version").textContent = p.version;
  document.getElementById("process").textContent =
    `${p.go_version} · GOMAXPROCS ${p.gomaxprocs} · ${p.goroutines} goroutines · RSS ${bytes(p.rss_bytes)} · up ${duration(p.uptime_seconds)} · ${p.ready ? "ready" : "not ready"}`;
}

function renderListeners(doc) {
  fill("listeners", doc.listeners.map((l) => el("tr", {},
    el("td", {}, l.name), el("td", {}, l.address), el("td", {}, l.admin ? "admin" : l.mode),
    el("td", {}, l.engine), el("td", {}, l.tls ? "yes" : "no"),
    el("td", { class: "n" }, l.connections), el("td", { class: "n" }, l.in_flight ?? "–"))));
}

function renderRemotes(doc) {
  const box = document.getElementById("remotes");
  if (!doc.remotes.length) {
    box.replaceChildren(el("p", { class: "muted" }, "This process calls no remote service."));
    return;
  }
  box.replaceChildren(...doc.remotes.map((r) => {
    const summary = `${r.service} · ${r.healthy}/${r.endpoints.length} healthy · ${r.calls} calls, ${r.attempts} attempts, ${r.hedges} hedges, ${r.throttled} throttled, ${r.ejections} ejections` +
      (r.expose.length ? ` · exposed on ${r.expose.join(", ")}` : "");
    const endpoints = r.endpoints.map((e) => el("div", { class: `endpoint ${e.state}`, "data-address": e.address, "data-state": e.state },
      `${e.address} `, el("span", { class: "state" }, e.state), ` · ${e.in_flight} in flight · ${ms(e.latency_ms)}`));
    if (!endpoints.length) {
      endpoints.push(el("div", { class: "endpoint unavailable" }, "no endpoint resolved"));
    }
    return el("div", { class: "remote", "data-remote": r.name },
      el("h3", {}, r.name, " ", el("span", {}, summary)), el("div", { class: "endpoints" }, ...endpoints));
  }));
}

function methodCells(m) {
  return [
    el("td", { class: "n" }, m.calls ? rate(m.rate) : "–"), el("td", { class: "n" }, errors(m)),
    el("td", { class: "n" }, ms(m.p50_ms)), el("td", { class: "n" }, ms(m.p99_ms)),
  ];
}

function renderServices(doc) {
  document.getElementById("window").textContent = doc.call_stats
    ? `over the last ${Math.round(doc.window_seconds)} s`
    : "(rates need a metrics plugin, such as goms/prom)";
  const services = [...doc.services].sort((a, b) => a.builtin - b.builtin);
  const rows = [];
  for (const s of services) {
    rows.push(el("tr", { class: "service" },
      el("td", { colspan: 1 }, s.name + (s.remote ? ` (remote ${s.remote})` : "") + (s.builtin ? " (built in)" : "")),
      el("td", { colspan: 5 }, s.listeners.join(", "))));
    for (const m of s.methods) {
      rows.push(el("tr", { class: "method" }, el("td", {}, methodName(m.procedure)), el("td", {}), ...methodCells(m)));
    }
  }
  fill("services", rows);
  document.getElementById("clients-section").hidden = !doc.clients.length;
  fill("clients", doc.clients.map((m) => el("tr", {}, el("td", {}, m.procedure.slice(1)), ...methodCells(m))));
}

function renderAdmission(doc) {
  const a = doc.admission;
  document.getElementById("admission").textContent =
    `${a.shed} shed by the listeners' limits · ${a.rate_limited} rate limited · ${a.throttled} throttled by remote clients (since start)`;
}

function renderErrors(doc) {
  if (!doc.errors.length) {
    fill("errors", [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No failed call since start."))]);
    return;
  }
  fill("errors", doc.errors.map((e) => el("tr", {},
    el("td", {}, new Date(e.time).toLocaleTimeString()), el("td", {}, e.procedure.slice(1)),
    el("td", { class: "err" }, e.code), el("td", {}, e.request_id))));
}

function setLive(ok, text) {
  const live = document.getElementById("live");
  live.className = `live ${ok ? "ok" : "down"}`;
  live.textContent = text;
}

async function refresh() {
  try {
    const res = await fetch("status.json", { cache: "no-store", signal: AbortSignal.timeout(interval * 3) });
    if (!res.ok) {
      throw new Error(`status.json: HTTP ${res.status}`);
    }
    const doc = await res.json();
    renderProcess(doc);
    renderListeners(doc);
    renderRemotes(doc);
    renderServices(doc);
    renderAdmission(doc);
    renderErrors(doc);
    setLive(true, `live · ${new Date(doc.time).toLocaleTimeString()}`);
  } catch (err) {
    setLive(false, `not reachable (${err.message}); retrying`);
  } finally {
    setTimeout(refresh, interval);
  }
}

refresh();
