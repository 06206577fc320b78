// The iptserver status page: reads the JSON API and renders it with textContent only.
"use strict";

const REFRESH_MS = 10000;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (className) td.className = className;
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c);
  return tr;
}

function fill(tbody, rows, columns, emptyText) {
  if (rows.length === 0) {
    const td = cell(emptyText, "empty");
    td.colSpan = columns;
    rows = [row([td])];
  }
  tbody.replaceChildren(...rows);
}

const TOKEN_KEY = "iptserver-api-token";

// The API token, when the page was opened as /#token=TOKEN (kept for this tab only; the
// fragment never reaches the server or its logs, and is taken off the address bar).
function apiToken() {
  const given = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (given) {
    window.sessionStorage.setItem(TOKEN_KEY, given);
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return window.sessionStorage.getItem(TOKEN_KEY);
}

class NeedsToken extends Error {}

async function getJSON(url) {
  const headers = { Accept: "application/json" };
  const token = apiToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { headers });
  const body = await response.json();
  if (response.status === 401) throw new NeedsToken(body.error);
  if (!response.ok) throw new Error(body.error || `${url}: HTTP ${response.status}`);
  return body;
}

// The recent decisions are a browsing log: with a token set they need it.
async function recentDecisions() {
  try {
    return await getJSON("/v1/decisions");
  } catch (err) {
    if (err instanceof NeedsToken) return null;
    throw err;
  }
}

// "up"; "down, via us" (failed over); "down, blocked" (its traffic is dropped); and
// ", tunnel down" while its interface is down or missing (its traffic is dropped).
function stateText(e) {
  const state = e.state ?? "up";
  let text = state;
  if (e.via !== undefined && e.via !== e.name) {
    text = e.via === "blocked" ? `${state}, blocked` : `${state}, via ${e.via}`;
  }
  return e.link === "down" ? `${text}, tunnel down` : text;
}

function stateClass(e) {
  return e.link === "down" ? "state-down" : `state-${e.state ?? "up"}`;
}

function renderExits(exits, status) {
  const rows = exits.map((e) =>
    row([
      cell(e.name),
      cell(stateText(e), stateClass(e)),
      cell(e.interface, "mono"),
      cell(e.route),
      cell(e.mark, "number"),
      cell(e.table, "number"),
      cell(status.learned[e.name] ?? 0, "number"),
    ]),
  );
  fill(document.querySelector("#exits tbody"), rows, 7, "No exits configured.");
}

function ruleText(d) {
  if (d.rule === null) return "—";
  return d.kind ? `#${d.rule} (${d.kind})` : `#${d.rule}`;
}

function renderDecisions(decisions) {
  if (decisions === null) {
    const text = "The recent decisions need the API token: open this page as /#token=TOKEN.";
    fill(document.querySelector("#decisions tbody"), [], 5, text);
    return;
  }
  const rows = decisions
    .slice()
    .reverse()
    .map((d) =>
      row([
        cell(d.names.join(" → ")),
        cell(d.ip, "mono"),
        cell(d.exit ?? "main table"),
        cell(ruleText(d)),
        cell(d.reason),
      ]),
    );
  fill(document.querySelector("#decisions tbody"), rows, 5, "No decisions yet.");
}

function renderCounters(status) {
  const entries = [
    ["answers routed", status.answers],
    ["reloads ok", status.reloads.ok],
    ["reloads rejected", status.reloads.rejected],
  ];
  for (const [key, value] of Object.entries(status.dns ?? {})) {
    entries.push([`dns ${key.replaceAll("_", " ")}`, value]);
  }
  const rows = entries.map(([k, v]) => row([cell(k), cell(v, "number")]));
  fill(document.querySelector("#counters tbody"), rows, 2, "No counters.");
}

async function refresh() {
  const summary = document.getElementById("summary");
  try {
    const [exits, status, decisions] = await Promise.all([
      getJSON("/v1/exits"),
      getJSON("/v1/status"),
      recentDecisions(),
    ]);
    renderExits(exits, status);
    renderDecisions(decisions);
    renderCounters(status);
    const when = new Date().toLocaleTimeString();
    summary.textContent =
      `${exits.length} exits, ${status.answers} answers routed, ` +
      `${decisions === null ? "no" : decisions.length} recent decisions. Updated ${when}.`;
    summary.classList.remove("error");
  } catch (err) {
    summary.textContent = `Could not load the status: ${err.message}`;
    summary.classList.add("error");
  }
}

function describeWhere(r) {
  if (r.exit === null) return "main routing table (not diverted)";
  if (r.interface === "_DEFAULT") return `exit ${r.exit} (host gateway, no tunnel)`;
  return `exit ${r.exit} (interface ${r.interface})`;
}

function describeRule(r) {
  if (r.rule === null) return `none (${r.reason})`;
  const line = r.line === null ? "" : `, line ${r.line}`;
  const detail = r.match ? `: ${r.match.kind} ${r.match.detail}` : "";
  return `#${r.rule}${line}${detail} (${r.reason})`;
}

function pair(dl, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
}

function renderExplain(r) {
  const dl = document.createElement("dl");
  dl.className = "explained";
  pair(dl, "Query", r.query);
  pair(dl, "Goes to", describeWhere(r));
  pair(dl, "Exit", r.exit ?? "none");
  pair(dl, "Rule", describeRule(r));
  if (r.beaten.length > 0) {
    pair(dl, "Also matched", r.beaten.map((c) => `#${c.rule} → ${c.exit}`).join(", "));
  }
  if (r.geoip) pair(dl, "GeoIP", `${r.geoip.country} (${r.geoip.network})`);
  return dl;
}

async function runExplain(query) {
  const out = document.getElementById("explain-result");
  out.textContent = "Explaining…";
  try {
    const results = await getJSON(`/v1/explain?q=${encodeURIComponent(query)}`);
    out.replaceChildren(...results.map(renderExplain));
  } catch (err) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = err.message;
    out.replaceChildren(p);
  }
}

function setUpExplain() {
  const form = document.getElementById("explain-form");
  const input = document.getElementById("explain-q");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (!query) return;
    const url = new URL(window.location.href);
    url.searchParams.set("q", query);
    window.history.replaceState(null, "", url);
    runExplain(query);
  });
  const initial = new URLSearchParams(window.location.search).get("q");
  if (initial) {
    input.value = initial;
    runExplain(initial);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpExplain();
  refresh();
  window.setInterval(refresh, REFRESH_MS);
});
