// The runtime console: renders the snapshots that /ui/events pushes.
//
// Plain modern JavaScript, no framework and no build step. Every text that
// comes from the system (paths, tags, messages, errors) is set with
// textContent, never parsed as HTML. Rows are made once per node and
// updated in place, so a snapshot of a thousand actors costs a few
// attribute and text changes, not a new page.
"use strict";

const HISTORY = 120;          // samples kept per node (one per snapshot)
const SPARK_WIDTH = 20;       // characters of a sparkline
const BLOCKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588";

const state = {
  times: [],                  // when each kept sample was taken (seconds)
  series: new Map(),          // path -> {handled: [], restarts: []}
  rows: new Map(),            // path -> the row's elements
  order: "",                  // the rows' paths in order, to reorder only on change
  expanded: new Set(),        // pools unfolded by the viewer
  collapsed: new Set(),       // supervisors folded by the viewer
  filter: "",
  controls: false,
  token: "",
  snapshot: null,
  lastFailures: new Map(),    // path -> last_failure seen, to flash a new one
};

// What the browser tests and curious operators read: the render's figures.
const stats = { snapshots: 0, firstRenderMs: null, lastRenderMs: null, readyAtMs: null, nodes: 0 };
window.runtimeConsole = { stats, state };

// -- small DOM helpers --------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setText(node, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

function setBadge(node, text, status) {
  setText(node, text);
  const cls = "badge s-" + String(status || text || "").replace(/[^a-z_]/g, "");
  if (node.className !== cls) node.className = cls;
}

function setBar(bar, value, limit, label) {
  const share = limit > 0 ? Math.min(1, value / limit) : 0;
  const width = (share * 100).toFixed(1) + "%";
  if (bar.fill.style.width !== width) bar.fill.style.width = width;
  const cls = "fill" + (share >= 1 ? " full" : share >= 0.75 ? " high" : "");
  if (bar.fill.className !== cls) bar.fill.className = cls;
  setText(bar.text, label);
}

function makeBar() {
  const root = el("div", "bar");
  const fill = el("div", "fill");
  const text = el("span", "text");
  root.append(fill, text);
  return { root, fill, text };
}

// Made once: toLocaleString builds a formatter per call.
const NUMBER = new Intl.NumberFormat("en-US");
const DOLLARS = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });

function fmt(number) {
  return NUMBER.format(Number(number || 0));
}

function money(number) {
  return "$" + DOLLARS.format(Number(number || 0));
}

function clearChildren(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// -- history and sparklines -----------------------------------------------------------

function seriesOf(path) {
  let found = state.series.get(path);
  if (!found) {
    // A node first seen now: its past is flat at its present counters.
    found = { handled: [], restarts: [] };
    state.series.set(path, found);
  }
  return found;
}

function pushSample(time, counters) {
  state.times.push(time);
  if (state.times.length > HISTORY) state.times.shift();
  for (const path in counters) {
    const [handled, restarts] = counters[path];
    const found = seriesOf(path);
    if (!found.handled.length) {
      for (let i = 1; i < state.times.length; i++) { found.handled.push(handled); found.restarts.push(restarts); }
    }
    found.handled.push(handled);
    found.restarts.push(restarts);
    if (found.handled.length > HISTORY) { found.handled.shift(); found.restarts.shift(); }
  }
}

function loadHistory(history) {
  state.times = history.times.slice(-HISTORY);
  state.series.clear();
  for (const path in history.series) {
    const [handled, restarts] = history.series[path];
    state.series.set(path, { handled: handled.slice(-HISTORY), restarts: restarts.slice(-HISTORY) });
  }
}

// The increases between samples, summed into ``width`` buckets.
function buckets(values, width) {
  const deltas = [];
  for (let i = 1; i < values.length; i++) deltas.push(Math.max(0, values[i] - values[i - 1]));
  const per = Math.max(1, Math.ceil(HISTORY / width));
  const out = new Array(width).fill(0);
  for (let i = 0; i < deltas.length; i++) {
    const fromEnd = deltas.length - 1 - i;
    const bucket = width - 1 - Math.floor(fromEnd / per);
    if (bucket >= 0) out[bucket] += deltas[i];
  }
  return out;
}

function sparkline(values) {
  const sums = buckets(values, SPARK_WIDTH);
  const top = Math.max(...sums);
  if (top === 0) return { text: BLOCKS[0].repeat(SPARK_WIDTH), total: 0 };
  let text = "";
  let total = 0;
  for (const value of sums) {
    total += value;
    text += value === 0 ? BLOCKS[0] : BLOCKS[Math.min(7, 1 + Math.floor((value / top) * 6.999))];
  }
  return { text, total };
}

// -- the tree -------------------------------------------------------------------------

function flatten(node, depth, parent, out) {
  out.push({ node, depth, parent });
  for (const child of node.children) flatten(child, depth + 1, node.path, out);
  return out;
}

function makeRow(path) {
  const root = el("div", "node row-grid");
  root.setAttribute("role", "treeitem");
  root.dataset.path = path;
  const name = el("span", "name");
  const caret = el("span", "caret");
  caret.dataset.toggle = path;
  const label = el("span", "label");
  const kind = el("span", "kind");
  const tags = el("span", "tag");
  name.append(caret, label, kind, tags);
  const status = el("span", "badge");
  const incarnation = el("span", "num");
  const restarts = el("span", "restarts-cell");
  const restartCount = el("span", "num");
  const restartSpark = el("span", "spark restarts");
  restarts.append(restartCount, document.createTextNode(" "), restartSpark);
  const mailbox = makeBar();
  const breaker = el("span", "breaker");
  const handled = el("span", "spark");
  const failure = el("span", "failure");
  const actions = el("span", "actions");
  root.append(name, status, incarnation, restarts, mailbox.root, breaker, handled, failure, actions);
  return { root, name, caret, label, kind, tags, status, incarnation, restartCount, restartSpark, mailbox, breaker, handled, failure, actions, actionKey: null };
}

function button(text, action, fields, danger) {
  const node = el("button", danger ? "danger" : "", text);
  node.type = "button";
  node.dataset.action = action;
  node.dataset.fields = JSON.stringify(fields);
  return node;
}

function rowActions(row, node, isResource) {
  const pool = node.pool;
  const key = state.controls + "|" + node.kind + "|" + (node.breaker || "") + "|" + (pool ? "pool" : "") + "|" + node.status;
  if (row.actionKey === key) return;
  row.actionKey = key;
  clearChildren(row.actions);
  if (!state.controls || node.status === "stopped" || !node.path.includes("/")) return;
  if (pool) {
    const size = el("input", "size");
    size.type = "number";
    size.min = "1";
    size.value = String(pool.size);
    size.dataset.sizeFor = node.path;
    row.actions.append(size, button("resize", "resize", { path: node.path }));
  }
  row.actions.append(button("restart", "restart", { path: node.path }));
  if (node.breaker && node.breaker !== "closed") row.actions.append(button("reset breaker", "reset_breaker", { path: node.path }));
  if (!isResource) row.actions.append(button("stop", "stop", { path: node.path }, true));
}

function updateRow(row, entry, tags, isResource) {
  const node = entry.node;
  const name = node.path.split("/").pop();
  setText(row.label, name);
  row.label.title = node.path;
  const indent = entry.depth * 16 + "px";
  if (row.name.style.paddingLeft !== indent) row.name.style.paddingLeft = indent;
  const pool = node.pool;
  const hasChildren = node.children.length > 0;
  setText(row.caret, hasChildren ? (isFolded(node) ? "\u25b8" : "\u25be") : "");
  setText(row.kind, pool ? `pool ${pool.routing} ${pool.available}/${pool.size}` : node.kind === "supervisor" ? "supervisor" : "");
  setText(row.tags, tags && tags.length ? tags.map((t) => "#" + t).join(" ") : "");
  setBadge(row.status, node.status.replace("_", " "), node.status);
  setText(row.incarnation, node.incarnation);
  setText(row.restartCount, node.restarts);
  const series = state.series.get(node.path);
  const restartSpark = series ? sparkline(series.restarts) : null;
  setText(row.restartSpark, restartSpark && restartSpark.total ? restartSpark.text : "");
  if (node.mailbox_capacity > 0 || pool) {
    row.mailbox.root.hidden = false;
    const capacity = node.mailbox_capacity;
    setBar(row.mailbox, node.mailbox_depth, capacity, capacity ? `${fmt(node.mailbox_depth)}/${fmt(capacity)}` : fmt(node.mailbox_depth));
  } else {
    row.mailbox.root.hidden = true;
  }
  if (node.breaker) setBadge(row.breaker, node.breaker.replace("_", "-"), node.breaker);
  else { setText(row.breaker, ""); row.breaker.className = "breaker"; }
  const handled = series ? sparkline(series.handled) : null;
  setText(row.handled, handled ? handled.text : "");
  row.handled.title = handled ? `${fmt(handled.total)} handled in the last ${state.times.length} s` : "";
  const failure = node.last_failure || "";
  setText(row.failure, failure);
  row.failure.title = failure;
  const before = state.lastFailures.get(node.path);
  if (failure && before !== undefined && before !== failure) {
    row.root.classList.remove("flash");
    void row.root.offsetWidth;  // restart the animation
    row.root.classList.add("flash");
  }
  state.lastFailures.set(node.path, failure);
  rowActions(row, node, isResource);
}

function isFolded(node) {
  if (node.pool) return !state.expanded.has(node.path);
  return state.collapsed.has(node.path);
}

function matches(node, tags, filter) {
  if (!filter) return true;
  if (filter.startsWith("tag:")) {
    const wanted = filter.slice(4);
    return !!tags && tags.some((t) => t.toLowerCase().includes(wanted));
  }
  return node.path.toLowerCase().includes(filter) || (!!tags && tags.some((t) => t.toLowerCase().includes(filter)));
}

function renderTree(status, tagsByPath) {
  const entries = flatten(status.tree, 0, null, []);
  const resources = status.resources ? flatten(status.resources, 0, null, []) : [];
  const all = entries.concat(resources);
  const tree = document.getElementById("tree");
  const seen = new Set();
  for (const entry of all) {
    const path = entry.node.path;
    seen.add(path);
    let row = state.rows.get(path);
    if (!row) { row = makeRow(path); state.rows.set(path, row); }
    updateRow(row, entry, tagsByPath[path], entry.node.path.startsWith("resources"));
  }
  for (const [path, row] of state.rows) {
    if (!seen.has(path)) { row.root.remove(); state.rows.delete(path); state.lastFailures.delete(path); }
  }
  const order = all.map((e) => e.node.path).join("\n");
  if (order !== state.order) {
    const fragment = document.createDocumentFragment();
    for (const entry of all) fragment.append(state.rows.get(entry.node.path).root);
    tree.append(fragment);
    state.order = order;
  }
  applyVisibility(all, tagsByPath);
  stats.nodes = all.length;
  return all;
}

// Which rows show: those under no folded node, or, with a filter, those
// that match and their ancestors (a match inside a folded pool shows).
function applyVisibility(all, tagsByPath) {
  const filter = state.filter;
  const visible = new Set();
  if (filter) {
    const parents = new Map(all.map((e) => [e.node.path, e.parent]));
    for (const entry of all) {
      if (!matches(entry.node, tagsByPath[entry.node.path], filter)) continue;
      let path = entry.node.path;
      while (path && !visible.has(path)) { visible.add(path); path = parents.get(path); }
    }
  }
  let foldDepth = -1;  // the depth of the folded node whose subtree is being skipped
  for (const entry of all) {
    const underFold = foldDepth >= 0 && entry.depth > foldDepth;
    if (!underFold) foldDepth = -1;
    const show = filter ? visible.has(entry.node.path) : !underFold;
    const row = state.rows.get(entry.node.path);
    if (row.root.hidden === show) row.root.hidden = !show;
    if (!underFold && entry.node.children.length && isFolded(entry.node)) foldDepth = entry.depth;
  }
}

// -- the other sections -----------------------------------------------------------------

function renderHeader(doc, all) {
  const status = doc.status;
  setText(document.getElementById("system-name"), status.system);
  document.title = `${status.system} \u00b7 runtime console`;
  setBadge(document.getElementById("state"), status.state, status.state);
  const health = status.health || {};
  setBadge(document.getElementById("health"), health.status || "", health.status === "ok" ? "ok" : health.status);
  const actors = all.filter((e) => e.node.kind === "actor").length;
  setText(document.getElementById("actor-count"), fmt(actors));
  setText(document.getElementById("restart-count"), fmt(all.reduce((sum, e) => sum + (e.node.kind === "actor" ? e.node.restarts : 0), 0)));
  setText(document.getElementById("dead-count"), fmt(status.dead_letters));
  setText(document.getElementById("updated"), new Date(doc.time * 1000).toLocaleTimeString());
  // Messages handled per second, all actors together, over the history.
  const totals = new Array(state.times.length).fill(0);
  for (const [path, series] of state.series) {
    if (path.startsWith("resources/") || series.handled.length !== totals.length) continue;
    for (let i = 0; i < totals.length; i++) totals[i] += series.handled[i];
  }
  const rates = [];
  for (let i = 1; i < totals.length; i++) {
    const seconds = Math.max(0.001, state.times[i] - state.times[i - 1]);
    rates.push(Math.max(0, totals[i] - totals[i - 1]) / seconds);
  }
  setText(document.getElementById("rate"), rates.length ? fmt(Math.round(rates[rates.length - 1])) : "-");
  const top = Math.max(1, ...rates);
  // The newest rate at the right edge; two minutes span the chart.
  const step = 240 / (HISTORY - 2);
  const points = rates.map((r, i) => `${240 - (rates.length - 1 - i) * step},${40 - (r / top) * 38}`).join(" ");
  document.querySelector("#rate-chart polyline").setAttribute("points", points);
  const problems = document.getElementById("problems");
  clearChildren(problems);
  for (const problem of health.problems || []) problems.append(el("div", "", problem.message));
  problems.hidden = !(health.problems || []).length;
  document.getElementById("token-box").hidden = !doc.controls;
  document.getElementById("read-only").hidden = doc.controls;
}

function kv(pairs) {
  const box = el("div", "kv");
  for (const [key, value] of pairs) box.append(el("span", "", key), el("span", "", value));
  return box;
}

function renderResources(status) {
  const box = document.getElementById("resources");
  const limiters = status.limiters || {};
  const names = Object.keys(limiters);
  document.getElementById("resources-section").hidden = names.length === 0;
  clearChildren(box);
  for (const name of names) {
    const limiter = limiters[name];
    const card = el("div", "card");
    card.dataset.resource = name;
    const head = el("div", "head");
    head.append(el("strong", "", name));
    const statusBadge = el("span");
    setBadge(statusBadge, limiter.status, limiter.status);
    head.append(statusBadge);
    if (limiter.breaker) {
      const breaker = el("span");
      setBadge(breaker, "breaker " + limiter.breaker.replace("_", "-"), limiter.breaker);
      head.append(breaker);
    }
    card.append(head);
    const tokens = makeBar();
    const limit = limiter.max_concurrency;
    setBar(tokens, limiter.tokens_in_use, limit || 0, `tokens ${limiter.tokens_in_use}/${limit === null ? "\u221e" : limit}`);
    card.append(tokens.root);
    const waiting = limiter.waiting || {};
    const pairs = [
      ["waiting h/n/l", `${waiting.high || 0}/${waiting.normal || 0}/${waiting.low || 0}`],
      ["requests", fmt(limiter.requests)],
      ["failures", fmt(limiter.failures)],
      ["paused", limiter.paused_for > 0 ? `${limiter.paused_for.toFixed(1)} s` : "no"],
    ];
    if (limiter.last_failure) pairs.push(["last failure", limiter.last_failure]);
    card.append(kv(pairs));
    if (state.controls) {
      const actions = el("div", "actions");
      const seconds = el("input", "size");
      seconds.type = "number";
      seconds.min = "1";
      seconds.value = "30";
      seconds.dataset.secondsFor = name;
      actions.append(seconds, button("pause s", "pause", { resource: name }));
      actions.append(button("resume", "resume", { resource: name }));
      if (limiter.breaker && limiter.breaker !== "closed") actions.append(button("reset breaker", "reset_breaker", { path: "resources/" + name }));
      card.append(actions);
    }
    box.append(card);
  }
}

function renderSpending(status) {
  const usage = status.usage || [];
  const budgets = status.budgets || {};
  document.getElementById("spending-section").hidden = usage.length === 0 && Object.keys(budgets).length === 0;
  const body = document.querySelector("#usage tbody");
  clearChildren(body);
  for (const entry of usage) {
    const row = el("tr");
    const priced = entry.requests > entry.unpriced_requests;
    for (const value of [entry.resource, entry.agent, fmt(entry.requests), fmt(entry.input_tokens), fmt(entry.output_tokens), priced ? money(entry.dollars) : "-"]) row.append(el("td", "", value));
    body.append(row);
  }
  const box = document.getElementById("budgets");
  clearChildren(box);
  for (const scope of Object.keys(budgets)) {
    const budget = budgets[scope];
    const item = el("div", "budget");
    const head = el("div", "head");
    head.append(el("strong", "", scope + " "));
    if (budget.exhausted) { const b = el("span"); setBadge(b, "exhausted", "failed"); head.append(b); }
    head.append(el("span", "muted", ` resets ${new Date(budget.resets_at).toLocaleString()} \u00b7 on exhausted: ${budget.on_exhausted}`));
    item.append(head);
    if (budget.tokens_limit !== null) {
      const bar = makeBar();
      setBar(bar, budget.tokens_spent, budget.tokens_limit, `tokens ${fmt(budget.tokens_spent)} / ${fmt(budget.tokens_limit)}`);
      item.append(bar.root);
    }
    if (budget.dollars_limit !== null) {
      const bar = makeBar();
      setBar(bar, budget.dollars_spent, budget.dollars_limit, `${money(budget.dollars_spent)} / ${money(budget.dollars_limit)}`);
      item.append(bar.root);
    }
    box.append(item);
  }
}

function renderWorkflows(status) {
  const workflows = status.workflows || { running: [], recent: [], needing_attention: {} };
  const runs = workflows.running.concat(workflows.recent.slice().reverse());
  document.getElementById("workflows-section").hidden = runs.length === 0;
  const attention = Object.entries(workflows.needing_attention || {}).map(([name, count]) => `${name}: ${count}`);
  setText(document.getElementById("attention"), attention.length ? "needing attention \u2014 " + attention.join(", ") : "");
  const box = document.getElementById("workflows");
  clearChildren(box);
  // One step table per workflow: a row per run, a column per step.
  const byWorkflow = new Map();
  for (const run of runs) {
    if (!byWorkflow.has(run.workflow)) byWorkflow.set(run.workflow, []);
    byWorkflow.get(run.workflow).push(run);
  }
  for (const [workflow, its] of byWorkflow) {
    const steps = [];
    for (const run of its) for (const step of Object.keys(run.steps)) if (!steps.includes(step)) steps.push(step);
    const table = el("table", "steps-table");
    table.dataset.workflow = workflow;
    const head = el("tr");
    for (const title of [workflow, "status", ...steps, ""]) head.append(el("th", "", title));
    table.append(head);
    for (const run of its) {
      const row = el("tr", "run");
      row.dataset.run = run.workflow + "/" + run.run_id;
      row.append(el("td", "mono", run.run_id));
      const statusCell = el("td");
      const badge = el("span");
      setBadge(badge, run.status.replace("_", " "), run.status);
      statusCell.append(badge);
      row.append(statusCell);
      for (const step of steps) {
        const cell = el("td");
        const stepStatus = run.steps[step];
        if (stepStatus) {
          const b = el("span");
          setBadge(b, stepStatus.replace("_", " "), stepStatus === "running" ? "running_step" : stepStatus);
          cell.append(b);
        }
        row.append(cell);
      }
      const actions = el("td", "actions");
      if (state.controls && (run.status === "failed" || run.status === "needs_attention")) {
        actions.append(button("resume run", "resume_run", { workflow: run.workflow, run_id: run.run_id }));
      }
      row.append(actions);
      table.append(row);
    }
    box.append(table);
  }
}

function renderCluster(status) {
  const cluster = status.cluster;
  document.getElementById("cluster-section").hidden = !cluster;
  if (!cluster) return;
  const mean = cluster.remote_ask_seconds;
  setText(document.getElementById("cluster-summary"),
    `this node: ${cluster.node} \u00b7 ${cluster.nodes.length} live \u00b7 failovers ${cluster.failovers}, handovers ${cluster.handovers}, lost ${cluster.lost}` +
    (mean !== null && mean !== undefined ? ` \u00b7 remote ask mean ${(mean * 1000).toFixed(2)} ms` : ""));
  const box = document.getElementById("cluster");
  clearChildren(box);
  const byNode = new Map(cluster.nodes.map((n) => [n, []]));
  const unplaced = [];
  for (const placement of cluster.placement) {
    if (placement.node && byNode.has(placement.node)) byNode.get(placement.node).push(placement);
    else if (placement.node) byNode.set(placement.node, [placement]);
    else unplaced.push(placement);
  }
  if (unplaced.length) byNode.set("(unplaced)", unplaced);
  for (const [node, units] of byNode) {
    const card = el("div", "card");
    card.dataset.node = node;
    const head = el("div", "head");
    head.append(el("strong", "", node));
    const badge = el("span");
    const live = cluster.nodes.includes(node);
    setBadge(badge, node === cluster.node ? "this node" : live ? "live" : "down", live ? "running" : "failed");
    head.append(badge);
    card.append(head);
    card.append(kv(units.map((u) => [u.unit, u.epoch === null ? "-" : `epoch ${u.epoch}`])));
    box.append(card);
  }
}

function renderFailures(all) {
  const body = document.querySelector("#failures tbody");
  clearChildren(body);
  const failed = all.filter((e) => e.node.last_failure);
  document.getElementById("failures-section").hidden = failed.length === 0;
  for (const entry of failed) {
    const row = el("tr");
    row.dataset.path = entry.node.path;
    row.append(el("td", "mono", entry.node.path));
    const cell = el("td");
    const badge = el("span");
    setBadge(badge, entry.node.status.replace("_", " "), entry.node.status);
    cell.append(badge);
    row.append(cell, el("td", "num", entry.node.restarts), el("td", "mono failure-reason", entry.node.last_failure));
    body.append(row);
  }
}

function renderDeadLetters(letters) {
  const body = document.querySelector("#dead-letters tbody");
  clearChildren(body);
  document.getElementById("dead-section").hidden = letters.length === 0;
  for (const letter of letters) {
    const row = el("tr");
    row.append(el("td", "mono", letter.path));
    const message = el("td", "mono", letter.type + " " + letter.message);
    row.append(message, el("td", "", letter.reason.replace("_", " ")));
    body.append(row);
  }
}

function render(doc) {
  state.snapshot = doc;
  state.controls = !!doc.controls;
  const all = renderTree(doc.status, doc.tags || {});
  renderHeader(doc, all);
  renderResources(doc.status);
  renderSpending(doc.status);
  renderWorkflows(doc.status);
  renderCluster(doc.status);
  renderFailures(all);
  renderDeadLetters(doc.dead_letters || []);
}

function onSnapshot(doc) {
  pushSample(doc.time, doc.counters || {});
  const started = performance.now();
  render(doc);
  void document.body.offsetHeight;  // include layout in the measured time
  const spent = performance.now() - started;
  stats.lastRenderMs = spent;
  if (stats.firstRenderMs === null) {
    stats.firstRenderMs = spent;
    stats.readyAtMs = performance.now();
  }
  stats.snapshots += 1;
}

// -- controls ------------------------------------------------------------------------------

let toastTimer = null;
function toast(text, error) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = error ? "error" : "";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

async function control(action, fields) {
  if (!state.token) { toast("enter the control token first", true); document.getElementById("token").focus(); return; }
  try {
    const response = await fetch("/ui/control/" + encodeURIComponent(action), {
      method: "POST",
      headers: { "Authorization": "Bearer " + state.token, "Content-Type": "application/json" },
      body: JSON.stringify(fields),
      credentials: "omit",
      cache: "no-store",
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) toast(answer.message || action + ": done", false);
    else toast(`${action} refused (${response.status}): ${answer.error || response.statusText}`, true);
  } catch (error) {
    toast(`${action} failed: ${error}`, true);
  }
}

function onClick(event) {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return;
  const toggle = target.dataset.toggle;
  if (toggle !== undefined) {
    const node = findNode(toggle);
    if (node && node.pool) {
      if (state.expanded.has(toggle)) state.expanded.delete(toggle); else state.expanded.add(toggle);
    } else if (state.collapsed.has(toggle)) state.collapsed.delete(toggle);
    else state.collapsed.add(toggle);
    if (state.snapshot) render(state.snapshot);
    return;
  }
  const action = target.dataset.action;
  if (!action) return;
  const fields = JSON.parse(target.dataset.fields || "{}");
  if (action === "resize") {
    const input = target.parentElement.querySelector("input[data-size-for]");
    fields.size = parseInt(input.value, 10);
  } else if (action === "pause") {
    const input = target.parentElement.querySelector("input[data-seconds-for]");
    fields.seconds = parseFloat(input.value);
  }
  control(action, fields);
}

function findNode(path) {
  const doc = state.snapshot;
  if (!doc) return null;
  const roots = [doc.status.tree].concat(doc.status.resources ? [doc.status.resources] : []);
  const stack = roots.slice();
  while (stack.length) {
    const node = stack.pop();
    if (node.path === path) return node;
    stack.push(...node.children);
  }
  return null;
}

// -- wiring ----------------------------------------------------------------------------------

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/ui/events");
  source.addEventListener("history", (event) => loadHistory(JSON.parse(event.data)));
  source.addEventListener("snapshot", (event) => {
    live.textContent = "live";
    live.className = "live on";
    onSnapshot(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  });
}

function start() {
  document.querySelector("main").addEventListener("click", onClick);
  const filter = document.getElementById("filter");
  filter.addEventListener("input", () => {
    state.filter = filter.value.trim().toLowerCase();
    if (state.snapshot) render(state.snapshot);
  });
  document.getElementById("expand-all").addEventListener("click", () => {
    state.collapsed.clear();
    for (const [path] of state.rows) { const node = findNode(path); if (node && node.pool) state.expanded.add(path); }
    if (state.snapshot) render(state.snapshot);
  });
  document.getElementById("collapse-all").addEventListener("click", () => {
    state.expanded.clear();
    if (state.snapshot) render(state.snapshot);
  });
  // The token stays in this page's memory: never stored, never in a URL.
  document.getElementById("token").addEventListener("input", (event) => { state.token = event.target.value.trim(); });
  connect();
}

document.addEventListener("DOMContentLoaded", start);
