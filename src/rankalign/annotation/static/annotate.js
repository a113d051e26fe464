// rankalign annotate: the page. Plain JS, no dependency. Every text from the data (prompt,
// responses, ids) goes into the page through textContent only, never innerHTML: responses are
// untrusted. The server checks every answer again (permutation, ties, stale page).
"use strict";

const $ = (id) => document.getElementById(id);
let state = null; // the server's last /api/state answer
let ranking = []; // positions on the page (0-based), best first
let tied = new Set(); // positions tied with the response ranked just above them
let allBad = false;
let busy = false;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function ordinal(n) {
  const s = ["th", "st", "nd", "rd"], v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return null;
  if (seconds < 90) return `about ${Math.max(1, Math.round(seconds))} s left`;
  if (seconds < 5400) return `about ${Math.round(seconds / 60)} min left`;
  return `about ${(seconds / 3600).toFixed(1)} h left`;
}

async function call(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: `HTTP ${response.status}` }; }
  return { status: response.status, data };
}

function say(text, error) {
  $("message").textContent = text || "";
  $("message").className = error ? "error" : "";
}

function show(next) {
  const sameItem = state && state.item && next.item && state.item.id === next.item.id;
  state = next;
  if (!sameItem) { ranking = []; tied = new Set(); allBad = false; }
  const p = next.progress;
  const parts = [`${p.done} of ${p.total} ranked`];
  if (p.skipped) parts.push(`${p.skipped} skipped`);
  const eta = duration(p.eta_seconds);
  if (eta && p.done < p.total) parts.push(eta);
  parts.push(`annotator: ${next.annotator}`);
  $("progress").textContent = parts.join(" · ");
  $("task").hidden = !next.item;
  $("finished").hidden = !!next.item;
  if (!next.item) {
    $("finished-text").textContent = p.done === p.total
      ? `All ${p.total} prompts are ranked and saved. You can close this tab.`
      : `${p.skipped} skipped prompt(s) left. Every answer so far is saved.`;
    $("revisit").hidden = !p.skipped;
    return;
  }
  if (!sameItem) renderPrompt(next.item);
  renderResponses();
}

function renderPrompt(item) {
  $("row-id").textContent = item.id;
  const box = $("prompt");
  box.replaceChildren();
  const turns = typeof item.prompt === "string" ? [{ role: null, content: item.prompt }] : item.prompt;
  for (const turn of turns) {
    const div = el("div", "turn" + (turn.role ? " " + String(turn.role).replace(/[^a-z_]/g, "") : ""));
    if (turn.role) div.append(el("span", "role", turn.role));
    div.append(document.createTextNode(String(turn.content)));
    box.append(div);
  }
}

// display rank of each ranked position: tied responses share the best place of their group
function placeOf() {
  const place = new Map();
  ranking.forEach((pos, i) => {
    place.set(pos, i > 0 && tied.has(pos) ? place.get(ranking[i - 1]) : i + 1);
  });
  return place;
}

function renderResponses() {
  const list = $("responses");
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.pos : undefined;
  list.replaceChildren();
  const place = placeOf();
  const k = state.item.responses.length;
  const unranked = [...Array(k).keys()].filter((p) => !ranking.includes(p));
  for (const pos of [...ranking, ...unranked]) {
    const li = el("li", "card");
    li.tabIndex = 0;
    li.draggable = true;
    li.dataset.pos = String(pos);
    li.id = `response-${pos + 1}`;
    const rank = place.get(pos);
    if (rank !== undefined) li.classList.add("ranked");
    if (rank !== undefined && tied.has(pos)) li.classList.add("tied");
    li.append(el("span", "key", pos + 1));
    li.append(el("span", "rank", rank === undefined ? "unranked"
      : ordinal(rank) + (tied.has(pos) || tied.has(ranking[ranking.indexOf(pos) + 1]) ? " (tie)" : "")));
    li.append(el("div", "text", state.item.responses[pos]));
    li.setAttribute("aria-label", `response ${pos + 1}, ${rank === undefined ? "unranked" : "ranked " + ordinal(rank)}`);
    li.addEventListener("click", () => toggle(pos));
    li.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", String(pos)); });
    li.addEventListener("dragover", (e) => { e.preventDefault(); li.classList.add("over"); });
    li.addEventListener("dragleave", () => li.classList.remove("over"));
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      const from = Number(e.dataTransfer.getData("text/plain"));
      if (Number.isInteger(from) && from !== pos) dropOn(from, pos);
    });
    list.append(li);
  }
  if (focused !== undefined) {
    const again = list.querySelector(`[data-pos="${focused}"]`);
    if (again) again.focus();
  }
  document.body.classList.toggle("all-bad", allBad);
  $("all-bad").setAttribute("aria-pressed", String(allBad));
  $("submit").disabled = !(allBad || ranking.length >= k - 1);
}

function untieAround(pos) {
  // a response that leaves its place leaves its tie, and the one below it loses its partner
  const i = ranking.indexOf(pos);
  tied.delete(pos);
  if (i >= 0 && i + 1 < ranking.length) tied.delete(ranking[i + 1]);
}

function toggle(pos) {
  if (!state || !state.item || pos >= state.item.responses.length) return;
  if (ranking.includes(pos)) {
    untieAround(pos);
    ranking = ranking.filter((p) => p !== pos);
  } else {
    ranking.push(pos);
  }
  say("");
  renderResponses();
}

function dropOn(from, target) {
  // the dragged response takes the target's place if the target is ranked, else goes last
  untieAround(from);
  ranking = ranking.filter((p) => p !== from);
  const at = ranking.indexOf(target);
  if (at >= 0) { untieAround(target); ranking.splice(at, 0, from); } else ranking.push(from);
  renderResponses();
}

function move(pos, delta) {
  const i = ranking.indexOf(pos), j = i + delta;
  if (i < 0 || j < 0 || j >= ranking.length) return;
  untieAround(pos);
  untieAround(ranking[j]);
  [ranking[i], ranking[j]] = [ranking[j], ranking[i]];
  renderResponses();
}

function tieLast() {
  if (ranking.length < 2) { say("rank two responses first, then tie them"); return; }
  const last = ranking[ranking.length - 1];
  if (tied.has(last)) tied.delete(last); else tied.add(last);
  renderResponses();
}

function undo() {
  if (!ranking.length) return;
  tied.delete(ranking.pop());
  renderResponses();
}

function tieGroups() {
  const groups = [];
  let group = [];
  for (const pos of ranking) {
    if (group.length && tied.has(pos)) group.push(pos);
    else { if (group.length > 1) groups.push(group); group = [pos]; }
  }
  if (group.length > 1) groups.push(group);
  return groups;
}

async function submit() {
  if (busy || !state || !state.item) return;
  const k = state.item.responses.length;
  if (!allBad && ranking.length === k - 1) {
    ranking.push([...Array(k).keys()].find((p) => !ranking.includes(p)));
  }
  if (!allBad && ranking.length < k) { say(`rank all ${k} responses (or mark all bad)`, true); return; }
  busy = true;
  const order = allBad ? [...Array(k).keys()] : ranking;
  const answer = {
    id: state.item.id,
    shown_order: state.item.shown_order,
    order,
    ties: allBad ? [order] : tieGroups(),
    all_bad: allBad,
  };
  try {
    const { status, data } = await call("/api/answer", answer);
    if (status === 200) { say(`saved ${answer.id}`); show(data); }
    else if (status === 409) { say(`${answer.id} was already answered; showing the next prompt`); show(data); }
    else say(data.error || `error ${status}`, true);
  } catch (e) {
    say("the server did not answer (is `rankalign annotate` still running?); nothing was lost", true);
  } finally { busy = false; }
}

async function post(path, body) {
  if (busy) return;
  busy = true;
  try {
    const { status, data } = await call(path, body);
    if (status === 200) { say(""); show(data); } else say(data.error || `error ${status}`, true);
  } catch (e) {
    say("the server did not answer (is `rankalign annotate` still running?)", true);
  } finally { busy = false; }
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey) return;
  const card = document.activeElement && document.activeElement.classList.contains("card")
    ? Number(document.activeElement.dataset.pos) : null;
  if (e.altKey && card !== null && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
    e.preventDefault(); move(card, e.key === "ArrowUp" ? -1 : 1); return;
  }
  if (e.altKey) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key; // B and b alike
  const item = state && state.item;
  if (/^[1-9]$/.test(e.key) && item) { e.preventDefault(); toggle(Number(e.key) - 1); }
  else if (e.key === " " && card !== null) { e.preventDefault(); toggle(card); }
  else if ((key === "=" || key === "t") && item) { e.preventDefault(); tieLast(); }
  else if (e.key === "Backspace" && item) { e.preventDefault(); undo(); }
  else if (e.key === "Enter" && item && !(e.target instanceof HTMLButtonElement)) { e.preventDefault(); submit(); }
  else if (key === "b" && item) { allBad = !allBad; renderResponses(); }
  else if (key === "s" && item) post("/api/skip", { id: item.id });
  else if (key === "v" && !item) post("/api/revisit", {});
}

document.addEventListener("DOMContentLoaded", async () => {
  document.addEventListener("keydown", onKey);
  $("submit").addEventListener("click", submit);
  $("tie").addEventListener("click", tieLast);
  $("undo").addEventListener("click", undo);
  $("all-bad").addEventListener("click", () => { allBad = !allBad; renderResponses(); });
  $("skip").addEventListener("click", () => state && state.item && post("/api/skip", { id: state.item.id }));
  $("revisit").addEventListener("click", () => post("/api/revisit", {}));
  try {
    const { status, data } = await call("/api/state");
    if (status === 200) show(data); else say(data.error || `error ${status}`, true);
  } catch (e) {
    say("the server did not answer (is `rankalign annotate` still running?)", true);
  }
});
