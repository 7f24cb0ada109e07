// vlx review: one run's predictions, filtered on the server, rated with e-ViL's four answers.
"use strict";

const VERDICTS = ["yes", "weak yes", "weak no", "no"];
const PAGE = 50;
const state = { run: null, items: [], total: 0, offset: 0, current: 0, filters: {}, ratedInSample: 0, request: 0 };
const $ = (id) => document.getElementById(id);

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function rater() { return $("rater").value.trim(); }
function fmt(v) { return typeof v === "number" ? (Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(3)) : "–"; }
function status(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

function query() {
  const q = new URLSearchParams({ offset: state.offset, limit: PAGE, rater: rater() });
  for (const [k, v] of Object.entries(state.filters)) if (v) q.set(k, v);
  return q;
}

async function load(keep = false) {
  const request = ++state.request;
  const res = await fetch("api/items?" + query());
  const data = await res.json();
  if (request !== state.request) return; // a later request (another filter, a new rater) answers instead
  state.items = data.items;
  state.total = data.total;
  state.ratedInSample = data.rated_in_sample;
  if (!keep) state.current = 0;
  state.current = Math.min(state.current, Math.max(state.items.length - 1, 0));
  renderList();
  renderItem();
  renderProgress();
}

function renderProgress() {
  const n = state.run.sample;
  const done = state.ratedInSample;
  $("progress-bar").style.width = n ? (100 * done / n) + "%" : "0";
  $("progress-text").textContent = rater()
    ? `${rater()}: ${done} of ${n} rated` + (n < state.run.items ? ` (a sample of ${state.run.items})` : "")
    : "enter your name to rate";
}

function renderList() {
  const first = state.total ? state.offset + 1 : 0;
  $("count").textContent = `${state.total} items` + (state.total > PAGE ? ` · ${first}–${state.offset + state.items.length}` : "");
  $("page").textContent = state.total > PAGE ? `page ${Math.floor(state.offset / PAGE) + 1} of ${Math.ceil(state.total / PAGE)}` : "";
  $("list").innerHTML = state.items.map((it, i) => {
    const dot = it.rating ? it.rating.replace(" ", "-") : "";
    const wrong = it.gold != null && !it.correct ? '<span class="wrong">✗</span>' : "";
    return `<li data-i="${i}" class="${i === state.current ? "current" : ""}"><span class="dot ${dot}" title="${esc(it.rating || "not rated")}"></span>`
      + `<span class="txt">${esc(it.text)}</span>${wrong}</li>`;
  }).join("");
  const cur = $("list").querySelector("li.current");
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

function probs(scores) {
  const entries = Object.entries(scores).sort((a, b) => b[1] - a[1]);
  return entries.map(([label, p]) => `<div class="row"><span>${esc(label)}</span><div class="bar"><div style="width:${(100 * p).toFixed(1)}%"></div></div><span>${p.toFixed(3)}</span></div>`).join("");
}

// the faithfulness tests' rows of an item (read-only): each change beside the original answer shown above, the
// inserted word marked, the ablation image shown small, the new label red where it flipped from the original
function faithfulness(it) {
  const sections = it.faithfulness || [];
  if (!sections.length) return "";
  const fact = (v) => typeof v === "number" && v !== 0 && Math.abs(v) < 0.001 ? v.toExponential(1) : typeof v === "number" ? fmt(v) : esc(v);
  const change = (r) => {
    if (r.marked) return `<div class="ftext">${esc(r.marked[0])} <mark>${esc(r.marked[1])}</mark> ${esc(r.marked[2])}</div>`;
    if (r.text != null) return `<div class="ftext">${esc(r.text)}</div>`;
    if (r.image) return `<img class="fimg" src="${r.image}" alt="${esc(r.image_name)}">`;
    return r.image_name ? `<div class="noimg">${esc(r.image_name)}</div>` : "";
  };
  return sections.map((s) => `<section class="faith" data-output="${esc(s.output)}">
    <h3>Faithfulness: ${esc(s.title)} <small>(${esc(s.output)}; original label ${esc(it.pred ?? "unparsed")})</small></h3>
    <table><tr><th>change</th><th>new label</th><th>new explanation</th><th></th></tr>${s.rows.map((r) => `<tr data-id="${esc(r.id)}">
      <td>${change(r)}</td>
      <td><span class="badge ${r.flipped ? "bad flip" : r.flipped === false ? "" : "none"}" title="${r.flipped ? "the label flipped" : r.flipped === false ? "the label stayed" : "a label did not parse"}">${esc(r.label ?? "unparsed")}</span></td>
      <td class="fexpl">${esc(r.explanation ?? "")}</td>
      <td><div class="scores">${Object.entries(r.facts || {}).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `<span>${esc(k)} <b>${fact(v)}</b></span>`).join("")}</div></td>
    </tr>`).join("")}</table></section>`).join("");
}

function renderItem() {
  const it = state.items[state.current];
  if (!it) {
    $("item").innerHTML = '<div class="empty">No item matches these filters.</div>';
    return;
  }
  const predClass = it.pred == null ? "none" : it.gold == null ? "" : it.correct ? "ok" : "bad";
  const image = it.image ? `<img src="${it.image}" alt="${esc(it.image_name)}">` : `<div class="noimg">no image file here: ${esc(it.image_name)}</div>`;
  const refs = (it.refs || []).length ? `<h3>Reference explanations</h3><ol class="refs">${it.refs.map((r) => `<li>${esc(r)}</li>`).join("")}</ol>` : "";
  const answers = (it.answers || []).length ? `<h3>Accepted answers</h3><div class="scores">${esc(it.answers.join(" · "))}</div>` : "";
  const scores = it.scores ? `<h3>Label probabilities</h3><div class="probs">${probs(it.scores)}</div>` : "";
  const metrics = Object.keys(it.metrics || {}).length ? `<h3>Scores of this explanation</h3><div class="scores">${Object.entries(it.metrics).map(([k, v]) => `<span>${esc(k)} <b>${fmt(v)}</b></span>`).join("")}</div>` : "";
  const judge = it.judge ? `<h3>Judge (${esc(it.judge.judge)})</h3><div class="judge">${esc(it.judge.verdict ?? "no verdict read")}${it.judge.raw ? ` · <i>${esc(it.judge.raw)}</i>` : ""}</div>` : "";
  const expl = it.explanation ? `<div class="explanation">${esc(it.explanation)}</div>` : '<div class="explanation empty-expl">(no explanation)</div>';
  $("item").innerHTML = `<div class="card">
    <div class="meta">${esc(it.id)} · item ${state.offset + state.current + 1} of ${state.total}${it.in_sample && state.run.sample < state.run.items ? " · in the sample" : ""}</div>
    <div class="grid"><div class="imgbox">${image}</div><div>
      <div class="text">${esc(it.text)}</div>
      <div class="labels"><span class="badge">gold: ${esc(it.gold ?? "–")}</span><span class="badge ${predClass}">predicted: ${esc(it.pred ?? "unparsed")}</span></div>
      <h3>Explanation</h3>${expl}${refs}${answers}${scores}${metrics}${judge}
    </div></div>
    <div class="question">Does the explanation justify the predicted answer for this image and text?</div>
    <div class="rate">${VERDICTS.map((v, i) => `<button type="button" data-v="${v}" class="${it.rating === v ? "chosen" : ""}"><kbd>${i + 1}</kbd>${v}</button>`).join("")}</div>
    ${faithfulness(it)}
  </div>`;
  for (const b of document.querySelectorAll(".rate button")) b.addEventListener("click", () => rate(b.dataset.v));
}

async function rate(verdict) {
  const it = state.items[state.current];
  if (!it) return;
  if (!rater()) {
    $("rater").classList.add("missing");
    $("rater").focus();
    status("enter your name first: ratings are kept per rater", true);
    return;
  }
  // the page moves on at once (a fast rater's next key rates the next item); the rating is saved meanwhile, and a
  // failure puts the item back as it was and says so
  const before = it.rating;
  state.request += 1; // a page of items asked for before this rating would come back without it: ignore it
  it.rating = verdict;
  if (!before && it.in_sample) state.ratedInSample += 1;
  renderProgress();
  move(1);
  const res = await fetch("api/rate", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id: it.id, rater: rater(), verdict }) }).catch((err) => ({ ok: false, error: err }));
  if (!res.ok) {
    it.rating = before;
    if (!before && it.in_sample) state.ratedInSample -= 1;
    const why = res.error ? String(res.error) : ((await res.json().catch(() => ({}))).error || res.status);
    status(`NOT saved: ${it.id} (${why})`, true);
    renderProgress();
    renderList();
    return;
  }
  status(`saved: ${it.id} → ${verdict}`);
}

async function move(step) {
  const next = state.current + step;
  if (next >= 0 && next < state.items.length) {
    state.current = next;
    renderList();
    renderItem();
  } else if (next >= state.items.length && state.offset + PAGE < state.total) {
    state.offset += PAGE;
    await load();
  } else if (next < 0 && state.offset > 0) {
    state.offset = Math.max(state.offset - PAGE, 0);
    await load();
    state.current = state.items.length - 1;
    renderList();
    renderItem();
  } else {
    renderList();
    renderItem();
  }
}

function nextUnrated() {
  const i = state.items.findIndex((it, k) => k > state.current && !it.rating);
  if (i >= 0) { state.current = i; renderList(); renderItem(); }
  else status("no unrated item further on this page");
}

function renderMatrix() {
  const cm = state.run.confusion_matrix;
  if (!cm) { $("matrix-box").style.display = "none"; return; }
  let html = "<tr><th>gold \\ pred</th>" + cm.cols.map((c) => `<th title="${esc(c)}">${esc(c)}</th>`).join("") + "</tr>";
  cm.rows.forEach((g, r) => {
    html += `<tr><th title="${esc(g)}">${esc(g)}</th>` + cm.matrix[r].map((n, c) =>
      `<td data-gold="${esc(g)}" data-pred="${esc(cm.cols[c])}" class="${cm.cols[c] === g ? "diag" : ""}">${n}</td>`).join("") + "</tr>";
  });
  $("matrix").innerHTML = html;
  for (const td of $("matrix").querySelectorAll("td")) td.addEventListener("click", () => {
    const unparsed = td.dataset.pred === "unparsed";
    setFilters({ gold: td.dataset.gold, pred: unparsed ? "" : td.dataset.pred, unparsed: unparsed ? "1" : "" });
  });
}

function setFilters(values) {
  Object.assign(state.filters, values);
  $("f-gold").value = state.filters.gold || "";
  $("f-pred").value = state.filters.pred || "";
  $("f-unparsed").checked = state.filters.unparsed === "1";
  for (const td of $("matrix").querySelectorAll("td")) {
    const on = td.dataset.gold === state.filters.gold && (td.dataset.pred === state.filters.pred || (td.dataset.pred === "unparsed" && state.filters.unparsed === "1"));
    td.classList.toggle("on", on);
  }
  state.offset = 0;
  load();
}

function bindFilters() {
  const read = () => setFilters({
    sample: $("f-sample").checked ? "1" : "", wrong: $("f-wrong").checked ? "1" : "", unparsed: $("f-unparsed").checked ? "1" : "",
    rated: $("f-rated").value, gold: $("f-gold").value, pred: $("f-pred").value, sort: $("f-sort").value, order: $("f-order").value,
  });
  for (const id of ["f-sample", "f-wrong", "f-unparsed", "f-rated", "f-gold", "f-pred", "f-sort", "f-order"]) $(id).addEventListener("change", read);
  $("f-clear").addEventListener("click", () => {
    for (const id of ["f-sample", "f-wrong", "f-unparsed"]) $(id).checked = false;
    for (const id of ["f-rated", "f-gold", "f-pred", "f-sort"]) $(id).value = "";
    $("f-sample").checked = state.run.sample < state.run.items;
    read();
  });
  $("list").addEventListener("click", (e) => {
    const li = e.target.closest("li");
    if (li) { state.current = Number(li.dataset.i); renderList(); renderItem(); }
  });
  $("prev-page").addEventListener("click", () => { if (state.offset > 0) { state.offset = Math.max(0, state.offset - PAGE); load(); } });
  $("next-page").addEventListener("click", () => { if (state.offset + PAGE < state.total) { state.offset += PAGE; load(); } });
  $("rater").addEventListener("change", () => {
    localStorage.setItem("vlx-rater", rater());
    $("rater").classList.remove("missing");
    load(true);
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (["1", "2", "3", "4"].includes(e.key)) { e.preventDefault(); rate(VERDICTS[Number(e.key) - 1]); }
    else if (e.key === "ArrowRight" || e.key === "ArrowDown" || e.key === "j") { e.preventDefault(); move(1); }
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp" || e.key === "k") { e.preventDefault(); move(-1); }
    else if (e.key === "u") { nextUnrated(); }
  });
}

async function start() {
  state.run = await (await fetch("api/run")).json();
  const run = state.run;
  $("run-name").textContent = [run.task, run.split, run.model].filter(Boolean).join(" · ") + ` · ${run.items} items`;
  document.title = `vlx review · ${run.task || ""}`;
  const options = (labels) => labels.map((l) => `<option value="${esc(l)}">${esc(l)}</option>`).join("");
  $("f-gold").innerHTML += options(run.labels);
  $("f-pred").innerHTML += options(run.labels);
  $("f-sort").innerHTML += (run.has_scores ? '<option value="confidence">label confidence</option>' : "") + options(run.item_metrics);
  $("rater").value = localStorage.getItem("vlx-rater") || "";
  if (run.sample < run.items) { $("f-sample").checked = true; state.filters.sample = "1"; }
  renderMatrix();
  bindFilters();
  await load();
}

start().catch((err) => status("could not load the run: " + err, true));
