// The flow view: live flows (server-sent events from /api/stream), the
// graph (/api/graph) and the policy board (/api/board), all with the same
// filters. Plain JavaScript: nothing to build, nothing to download.
"use strict";
const $ = (s) => document.querySelector(s);
const maxRows = 500;
let source = null;
let tab = "flows";
let graphTimer = null, boardTimer = null;

function query() {
  const q = new URLSearchParams();
  for (const el of document.querySelectorAll("#filters input, #filters select")) {
    if (el.value.trim() !== "") q.set(el.name, el.value.trim());
  }
  return q;
}

function showError(msg) {
  const e = $("#error");
  e.textContent = msg;
  e.hidden = !msg;
}

async function getJSON(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error((await r.text()).trim() || r.statusText);
  return r.json();
}

function endText(e) {
  const addr = e.port ? (e.addr.includes(":") ? `[${e.addr}]:${e.port}` : `${e.addr}:${e.port}`) : e.addr;
  let name = "";
  if (e.namespace && e.workload) name = `${e.namespace}/${e.workload}`;
  else if (e.namespace) name = `${e.namespace}/${e.name}`;
  else if (e.name) name = e.name;
  return name ? `${name} (${addr})` : addr;
}

function decisionText(d) {
  switch (d.kind) {
    case "rule": return `tier ${d.tier}, ${d.staged ? "staged " : ""}policy ${d.policy}, rule ${d.rule}`;
    case "tier default": return `end of tier ${d.tier}`;
    case "profile rule": return `profile ${d.profile}, rule ${d.rule}`;
    case "missing profile": return `profile ${d.profile} missing`;
  }
  return "nothing allowed";
}

function protoText(r) {
  if (r.icmpType !== undefined && r.icmpType !== null) return `${r.protocol} type ${r.icmpType}`;
  return r.dst.port ? `${r.protocol}/${r.dst.port}` : r.protocol;
}

function row(r, fresh) {
  const tr = document.createElement("tr");
  if (fresh) tr.className = "new";
  const cells = [
    [new Date(r.start).toLocaleTimeString(), "muted"], [r.node || "", "muted"],
    [endText(r.src), "src"], [endText(r.dst), "dst"], [protoText(r), "proto"],
    [r.direction.toLowerCase(), "side"],
    [r.action === "Allow" ? "allowed" : "denied", r.action === "Allow" ? "allow" : "deny"],
    [decisionText(r.decision), "decision"],
    [r.staged ? `${r.staged.action === "Allow" ? "allowed" : "denied"} by ${decisionText(r.staged.decision)}` : "", "staged-cell muted"],
    [String(r.connections), "conns"],
    [r.packetsOut || r.packetsIn ? `${r.bytesOut || 0} / ${r.bytesIn || 0}` : "", "bytes muted"],
  ];
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

function countRows() {
  const n = document.querySelectorAll("#flows tbody tr").length;
  $("#flow-count").textContent = `${n} record${n === 1 ? "" : "s"} shown (newest first)`;
}

async function loadFlows() {
  const q = query();
  q.set("last", "200");
  const body = $("#flows tbody");
  try {
    const recs = await getJSON("api/flows?" + q);
    showError("");
    body.replaceChildren(...recs.reverse().map((r) => row(r, false)));
  } catch (e) {
    showError(e.message);
    body.replaceChildren();
  }
  countRows();
  if (source) source.close();
  source = new EventSource("api/stream?" + query());
  source.onmessage = (ev) => {
    const r = JSON.parse(ev.data);
    body.prepend(row(r, true));
    while (body.children.length > maxRows) body.lastChild.remove();
    countRows();
  };
}

const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text) el.textContent = text;
  return el;
}

async function loadGraph() {
  let g;
  try {
    g = await getJSON("api/graph?" + query());
    showError("");
  } catch (e) {
    showError(e.message);
    return;
  }
  const root = $("#graph");
  root.replaceChildren();
  const pos = {};
  const n = g.nodes.length, cx = 400, cy = 300, rad = Math.min(250, 60 + n * 18);
  g.nodes.forEach((node, i) => {
    const a = (2 * Math.PI * i) / Math.max(n, 1) - Math.PI / 2;
    pos[node.id] = [cx + rad * Math.cos(a), cy + rad * Math.sin(a)];
  });
  for (const e of g.edges) {
    const [x1, y1] = pos[e.src], [x2, y2] = pos[e.dst];
    const line = svg("line", { x1, y1, x2, y2, class: e.denied > 0 ? "deny" : "allow", "data-src": e.src, "data-dst": e.dst });
    line.appendChild(svg("title", {}, `${e.src} → ${e.dst}: ${e.allowed} allowed, ${e.denied} denied`));
    line.addEventListener("click", () => showEdge(e, line));
    root.appendChild(line);
  }
  for (const node of g.nodes) {
    const [x, y] = pos[node.id];
    root.appendChild(svg("circle", { cx: x, cy: y, r: 6 }));
    root.appendChild(svg("text", { x: x + 9, y: y + 4 }, node.id));
  }
  if (g.nodes.length === 0) root.appendChild(svg("text", { x: 300, y: 300 }, "no flows yet"));
}

async function showEdge(e, line) {
  for (const l of document.querySelectorAll("#graph line.selected")) l.classList.remove("selected");
  line.classList.add("selected");
  const side = $("#edge");
  side.replaceChildren();
  const h = document.createElement("h3");
  h.textContent = `${e.src} → ${e.dst}`;
  const p = document.createElement("p");
  p.textContent = `${e.allowed} connection(s) allowed, ${e.denied} denied, decided by:`;
  const ul = document.createElement("ul");
  for (const d of e.decisions) {
    const li = document.createElement("li");
    li.textContent = d;
    ul.appendChild(li);
  }
  side.append(h, p, ul);
  const q = query();
  q.set("last", "1000");
  const recs = (await getJSON("api/flows?" + q)).filter((r) => endName(r.src) === e.src && endName(r.dst) === e.dst).slice(-20).reverse();
  const t = document.createElement("table");
  t.id = "edge-flows";
  recs.forEach((r) => t.appendChild(row(r, false)));
  side.appendChild(t);
}

function endName(e) {
  if (e.namespace && e.workload) return `${e.namespace}/${e.workload}`;
  if (e.namespace) return `${e.namespace}/${e.name}`;
  return e.name || e.addr;
}

async function loadBoard() {
  let b;
  try {
    b = await getJSON("api/board");
  } catch (e) {
    showError(e.message);
    return;
  }
  const root = $("#board");
  root.replaceChildren();
  const policyBlock = (p) => {
    const div = document.createElement("div");
    div.className = "policy";
    const h = document.createElement("h3");
    h.textContent = `${p.name} `;
    const kind = document.createElement("span");
    kind.className = p.staged ? "staged" : "muted";
    kind.textContent = p.staged ? "staged" : `${p.kind}${p.order !== undefined ? ", order " + p.order : ""}`;
    h.appendChild(kind);
    const t = document.createElement("table");
    t.innerHTML = "<thead><tr><th>side</th><th>#</th><th>action</th><th>rule</th><th>connections</th></tr></thead>";
    const tb = document.createElement("tbody");
    for (const r of p.rules) {
      const tr = document.createElement("tr");
      if (!r.hits) tr.className = "cold";
      for (const [text, cls] of [[r.direction.toLowerCase(), ""], [String(r.index), ""], [r.action || "", r.action === "Deny" ? "deny" : r.action === "Allow" ? "allow" : ""], [r.summary, ""], [p.staged ? "—" : String(r.hits), "hits"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      tb.appendChild(tr);
    }
    t.appendChild(tb);
    div.append(h, t);
    return div;
  };
  for (const tier of b.tiers) {
    const sec = document.createElement("div");
    sec.className = "tier";
    const h = document.createElement("h2");
    h.textContent = `tier ${tier.name}${tier.order !== undefined ? " (order " + tier.order + ")" : ""}: default ${tier.defaultAction}, ${tier.endHits} connection(s) decided by the tier's end`;
    sec.appendChild(h);
    tier.policies.forEach((p) => sec.appendChild(policyBlock(p)));
    root.appendChild(sec);
  }
  if (b.profiles.length) {
    const sec = document.createElement("div");
    sec.className = "tier";
    const h = document.createElement("h2");
    h.textContent = "profiles (after every tier)";
    sec.appendChild(h);
    b.profiles.forEach((p) => sec.appendChild(policyBlock(p)));
    root.appendChild(sec);
  }
}

async function loadAgents() {
  try {
    const a = await getJSON("api/agents");
    const up = a.agents.filter((x) => x.connected).length;
    $("#agents").textContent = `${up}/${a.agents.length} agents · ${a.ring.held} records held`;
    $("#agents").title = a.agents.map((x) => `${x.addr}: ${x.connected ? "connected" : "down " + (x.lastError || "")}`).join("\n");
  } catch (e) { /* shown by the others */ }
}

function show(name) {
  tab = name;
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of ["flows", "graph", "board"]) $("#tab-" + s).hidden = s !== name;
  clearInterval(graphTimer);
  clearInterval(boardTimer);
  if (name === "graph") { loadGraph(); graphTimer = setInterval(loadGraph, 3000); }
  if (name === "board") { loadBoard(); boardTimer = setInterval(loadBoard, 3000); }
}

for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.tab));
$("#filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadFlows();
  if (tab === "graph") loadGraph();
});
$("#clear").addEventListener("click", () => {
  for (const el of document.querySelectorAll("#filters input, #filters select")) el.value = "";
  loadFlows();
  if (tab === "graph") loadGraph();
});
loadFlows();
loadAgents();
setInterval(loadAgents, 2000);
