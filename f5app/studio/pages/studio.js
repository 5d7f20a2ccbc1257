// f5app studio: plain JavaScript, no build step. Every view reads the studio's JSON endpoints.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");
const params = new URLSearchParams(location.search);
const AUTOTEST = params.get("autotest");
let pollTimer = null;

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function num(value, digits = 3) { return value === null || value === undefined ? "–" : Number(value).toFixed(digits); }
function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}
function size(bytes) {
  if (!bytes) return "–";
  const units = ["B", "KB", "MB", "GB"]; let i = 0; let v = bytes;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${units[i]}`;
}
function toast(message, error = false) {
  const box = $("#toast"); box.textContent = message; box.className = error ? "error" : ""; box.style.display = "block";
  clearTimeout(box.timer); box.timer = setTimeout(() => { box.style.display = "none"; }, error ? 9000 : 4000);
}
function key() { return sessionStorage.getItem("f5app-studio-key"); }

async function api(path, body) {
  const headers = {};
  if (key()) headers.Authorization = `Bearer ${key()}`;
  const init = { headers };
  if (body !== undefined) { init.method = "POST"; headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  if (response.status === 401) {
    const given = prompt("This studio needs its key (server.api_key or $F5APP_API_KEY):");
    if (given) { sessionStorage.setItem("f5app-studio-key", given); return api(path, body); }
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
  return data;
}

// Audio through fetch, so a key header goes with it; the element gets a blob URL.
async function loadAudio(audio, path) {
  const headers = key() ? { Authorization: `Bearer ${key()}` } : {};
  const response = await fetch(`/api/file?path=${encodeURIComponent(path)}`, { headers });
  if (!response.ok) throw new Error(`cannot load ${path}: HTTP ${response.status}`);
  const blob = await response.blob();
  audio.src = URL.createObjectURL(blob);
  audio.dataset.loaded = String(blob.size);
  return new Promise((resolve, reject) => {
    audio.addEventListener("loadedmetadata", () => resolve(audio.duration), { once: true });
    audio.addEventListener("error", () => reject(new Error("media error")), { once: true });
  });
}
function heard(text) { return text ? `heard: “${esc(text)}”` : text === "" ? "heard: (nothing: the ASR found no words)" : "heard: –"; }
function audioTag(path) { return `<audio controls preload="none" data-path="${esc(path)}"></audio>`; }
function wireAudio(root) {
  root.querySelectorAll("audio[data-path]").forEach((audio) => {
    audio.addEventListener("play", async function once() {
      if (audio.dataset.loaded) return;
      audio.pause();
      try { await loadAudio(audio, audio.dataset.path); audio.play(); } catch (e) { toast(e.message, true); }
    });
  });
}

function stateTag(state) { return `<span class="state ${esc(state)}">${esc(state)}</span>`; }
function progressBar(done, total) {
  if (!total) return "–";
  const share = Math.max(0, Math.min(1, (done || 0) / total));
  return `<span class="bar"><span style="width:${(share * 100).toFixed(1)}%"></span></span>${done ?? 0} / ${total}`;
}
function setNav(name) { document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === name)); }
function poll(fn, ms) { clearInterval(pollTimer); pollTimer = setInterval(fn, ms); }
function runLink(run) { return `#/run/${encodeURIComponent(run.name)}${run.sweep ? `?sweep=${encodeURIComponent(run.sweep)}` : ""}`; }

async function updateBadge() {
  try {
    const data = await api("/api/runs");
    const t = data.training;
    $("#training-badge").textContent = t ? `training: ${t.title} ${t.progress ? `(${t.progress.done}/${t.progress.total})` : ""}` : "";
    return data;
  } catch (e) { return null; }
}

// ---------------------------------------------------------------- runs list
async function showRuns() {
  setNav("runs");
  const draw = async () => {
    const data = await updateBadge();
    if (!data) return;
    const rows = data.runs.map((r) => `<tr>
      <td><a href="${runLink(r)}">${esc(r.sweep ? `${r.sweep}/${r.name}` : r.name)}</a>${r.finetune === "lora" ? ' <span class="mark last">LoRA</span>' : ""}</td>
      <td>${stateTag(r.state)}${r.locked_by ? `<div class="muted" style="font-size:12px">${esc(r.message)}</div>` : ""}</td>
      <td>${progressBar(r.update, r.max_updates)}</td>
      <td class="num">${num(r.loss)}</td><td class="num">${num(r.val_loss)}</td>
      <td class="num">${num(r.best_wer)}</td><td class="num">${num(r.best_sim)}</td>
      <td>${age(r.age_seconds)}</td></tr>`).join("");
    main().innerHTML = `<h1>Runs <span class="muted" style="font-size:13px;font-weight:400">in ${esc(data.output_root)}</span></h1>
      <table id="runs"><thead><tr><th>run</th><th>status</th><th>progress (updates)</th><th class="num">loss</th><th class="num">val_loss</th>
      <th class="num">best WER</th><th class="num">best SIM</th><th>updated</th></tr></thead><tbody>${rows ||
      '<tr><td colspan="8" class="muted">No runs yet. Start one under Train.</td></tr>'}</tbody></table>
      <p class="muted">Refreshes every 3 seconds while this page is open.</p>`;
  };
  await draw();
  poll(draw, 3000);
}

// ---------------------------------------------------------------- a run
function chart(title, series, marks) {
  const W = 380, H = 190, L = 58, R = 10, T = 10, B = 26;
  const points = series.flatMap((s) => s.points);
  if (!points.length) return `<div class="chart"><h3>${esc(title)}</h3><p class="muted">not measured yet</p></div>`;
  const xs = points.map((p) => p[0]).concat(marks), ys = points.map((p) => p[1]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (x0 === x1) { x0 -= 1; x1 += 1; } if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 + 0.01; y1 += Math.abs(y1) * 0.1 + 0.01; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`;
  // Enough decimals that the five tick labels differ, however narrow the range.
  const decimals = Math.min(6, Math.max(0, Math.ceil(-Math.log10((y1 - y0) / 4)) + 1));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    svg += `<line x1="${L}" x2="${W - R}" y1="${Y(y)}" y2="${Y(y)}" stroke="#eef0f3"/><text x="${L - 4}" y="${Y(y) + 4}" font-size="10" text-anchor="end" fill="#6b7280">${y.toFixed(decimals)}</text>`;
  }
  svg += `<text x="${L}" y="${H - 6}" font-size="10" fill="#6b7280">${x0}</text><text x="${W - R}" y="${H - 6}" font-size="10" text-anchor="end" fill="#6b7280">${x1} updates</text>`;
  for (const m of marks) svg += `<line class="ckpt-mark" x1="${X(m)}" x2="${X(m)}" y1="${T}" y2="${H - B}" stroke="#f0b429" stroke-dasharray="3,3"/>`;
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    svg += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2" ${s.dashed ? 'stroke-dasharray="6,4"' : ""}/>`;
    for (const p of s.points) svg += `<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="2.6" fill="${s.color}"><title>${s.name} ${p[1].toPrecision(4)} at update ${p[0]}</title></circle>`;
  }
  svg += "</svg>";
  const legend = series.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("") +
    '<span><i style="background:#f0b429"></i>checkpoints</span>';
  return `<div class="chart"><h3>${esc(title)}</h3>${svg}<div class="legend">${legend}</div></div>`;
}

function marksOf(row) {
  const marks = row.marks.map((m) => `<span class="mark ${m}">${m}</span>`);
  if (row.status === "quarantined") marks.push(`<span class="mark quarantined" title="${esc(row.reason)}">quarantined</span>`);
  return marks.join("");
}

async function showRun(name, sweep) {
  setNav("runs");
  const query = sweep ? `?sweep=${encodeURIComponent(sweep)}` : "";
  const draw = async () => {
    const run = await api(`/api/runs/${encodeURIComponent(name)}${query}`);
    updateBadge();
    const c = run.curves;
    const marks = run.checkpoints.filter((r) => r.update !== null && r.status === "ok").map((r) => r.update);
    const col = (i) => c.eval.filter((p) => p[i] !== null).map((p) => [p[0], p[i]]);
    const charts = chart("loss", [{ name: "loss", color: "#2f6fd0", points: c.loss }, { name: "val_loss", color: "#c0392b", points: c.val_loss }], marks) +
      chart("WER / CER (lower is better)", [{ name: "WER", color: "#8e44ad", points: col(1) }, { name: "CER", color: "#16a085", points: col(2), dashed: true }], marks) +
      chart("SIM (higher is better)", [{ name: "SIM", color: "#d35400", points: col(3) }], marks);
    const rows = run.checkpoints.map((r) => `<tr data-name="${esc(r.name)}">
      <td>${esc(r.name)}</td><td class="num">${r.update ?? "–"}</td><td class="num">${num(r.val_loss)}</td>
      <td class="num">${num(r.wer)}</td><td class="num">${num(r.cer)}</td><td class="num">${num(r.sim)}</td>
      <td class="num">${size(r.size_bytes)}</td><td>${stateTag(r.status)}${r.reason ? `<div class="muted" style="font-size:12px">${esc(r.reason)}</div>` : ""}</td>
      <td>${marksOf(r)}</td><td>${r.adapter ? `<span class="muted" title="${esc(r.base)}">LoRA on ${esc((r.base || "?").split("/").slice(-2).join("/"))}</span>` : "full"}</td>
      <td class="row">${r.status === "ok" ? `<label><input type="checkbox" class="pick-ckpt" value="${esc(r.path)}"> compare</label>
        <button data-pin="${esc(r.path)}">${r.marks.includes("pinned") ? "pinned" : "keep this one"}</button>
        <button data-export="${esc(r.path)}" data-adapter="${r.adapter}">export</button>
        <button data-cmd="${esc(r.name)}">commands</button>` : ""}</td></tr>`).join("");
    const evals = run.evaluations.map((e) => `<h2>Evaluation at update ${e.update} ${e.metrics ? `<span class="muted score">WER ${num(e.metrics.wer)} · CER ${num(e.metrics.cer)} · SIM ${num(e.metrics.sim)}</span>` : ""}</h2>
      <div class="clips">${e.clips.map((clip) => `<div class="clip"><div class="text">${esc(clip.text ?? clip.id)}</div>${audioTag(clip.audio)}
      <div class="heard">${heard(clip.transcript)}</div><div class="score muted">WER ${num(clip.wer, 2)} · SIM ${num(clip.sim, 2)}</div></div>`).join("")}</div>`).join("");
    const checked = new Set([...document.querySelectorAll(".pick-ckpt:checked")].map((x) => x.value));
    main().innerHTML = `<h1>${esc(sweep ? `${sweep}/${name}` : name)} ${stateTag(run.state)} <span class="muted" style="font-size:13px;font-weight:400">${esc(run.message || "")}</span></h1>
      <div class="card row"><span>${progressBar(run.update, run.max_updates)}</span><span class="muted">updated ${age(run.age_seconds)}</span>
        ${run.locked_by ? "" : `<button id="resume">train / resume this run</button>`}</div>
      <div class="charts">${charts}</div>
      <h2>Checkpoints</h2>
      <table id="checkpoints"><thead><tr><th>checkpoint</th><th class="num">update</th><th class="num">val_loss</th><th class="num">WER</th><th class="num">CER</th>
      <th class="num">SIM</th><th class="num">size</th><th>status</th><th>marks</th><th>kind</th><th></th></tr></thead><tbody>${rows ||
      '<tr><td colspan="11" class="muted">No checkpoints yet.</td></tr>'}</tbody></table>
      <div class="row" style="margin-top:8px"><button class="primary" id="compare-picked">Listen side by side</button>
      <span class="muted">tick two or more checkpoints (of this or other runs: the choice is kept while you browse)</span></div>
      <div id="commands"></div>
      ${evals || '<h2>Evaluation clips</h2><p class="muted">This run has not been evaluated (eval.every=0).</p>'}`;
    const kept = JSON.parse(sessionStorage.getItem("f5app-picked") || "[]");
    document.querySelectorAll(".pick-ckpt").forEach((box) => {
      box.checked = checked.has(box.value) || kept.includes(box.value);
      box.addEventListener("change", () => {
        const all = new Set(JSON.parse(sessionStorage.getItem("f5app-picked") || "[]"));
        box.checked ? all.add(box.value) : all.delete(box.value);
        sessionStorage.setItem("f5app-picked", JSON.stringify([...all]));
      });
    });
    wireAudio(main());
    $("#compare-picked").onclick = () => { location.hash = "#/compare"; };
    const resume = $("#resume");
    if (resume) resume.onclick = async () => {
      const more = prompt("Train until update (leave as is to resume to the recorded bound):", run.max_updates ?? "");
      if (more === null) return;
      try {
        const body = { run: name };
        if (more && Number(more) !== run.max_updates) body.values = { "trainer.max_updates": Number(more) };
        const job = await api("/api/train/resume", body);
        toast(`started: ${job.command}`); location.hash = "#/train";
      } catch (e) { toast(e.message, true); }
    };
    document.querySelectorAll("[data-pin]").forEach((b) => b.onclick = async () => {
      try { const r = await api("/api/pin", { checkpoint: b.dataset.pin }); toast(`pinned ${r.pinned}: retention keeps it; ckpt=pinned loads it`); draw(); } catch (e) { toast(e.message, true); }
    });
    document.querySelectorAll("[data-export]").forEach((b) => b.onclick = async () => {
      const mode = b.dataset.adapter === "true" ? (confirm("OK: merged into its base (one file). Cancel: the adapter alone (peft folder).") ? "merged" : "adapter") : "weights";
      try { const job = await api("/api/export", { checkpoint: b.dataset.export, mode }); await watchJob(job.id, $("#commands")); } catch (e) { toast(e.message, true); }
    });
    document.querySelectorAll("[data-cmd]").forEach((b) => b.onclick = () => {
      const row = run.checkpoints.find((r) => r.name === b.dataset.cmd);
      $("#commands").innerHTML = `<h2>Use ${esc(row.name)}</h2><div class="card"><div class="muted">serve it (OpenAI-compatible speech API):</div>
        <div class="command">${esc(row.commands.serve)}</div><div class="muted" style="margin-top:8px">speak one text:</div>
        <div class="command">${esc(row.commands.infer)}</div>${row.marks.includes("pinned") ? `<div class="muted" style="margin-top:8px">or by its pin:</div><div class="command">${esc(run.pinned_command)}</div>` : ""}</div>`;
    });
    return run;
  };
  const run = await draw();
  // Redraw while it trains, except while a clip plays (a redraw would stop it).
  if (run.state === "running") poll(() => { if (![...document.querySelectorAll("audio")].some((a) => !a.paused)) draw(); }, 5000);
  return run;
}

// ---------------------------------------------------------------- jobs
function jobCard(job) {
  const p = job.progress;
  const comparison = job.comparison ? comparisonView(job.comparison) : "";
  return `<div class="card job" data-job="${esc(job.id)}"><div class="row"><b>${esc(job.title)}</b>${stateTag(job.state)}
    ${p ? `<span>${progressBar(p.done, p.total)} ${esc(p.unit || "")}</span>` : ""}
    ${["queued", "running"].includes(job.state) && job.kind !== "export" ? `<button class="danger" data-cancel="${esc(job.id)}">${job.kind === "train" ? "stop (saves, exits 3)" : "cancel"}</button>` : ""}
    ${job.returncode !== null ? `<span class="muted">exit ${job.returncode}</span>` : ""}</div>
    ${job.command ? `<div class="command" style="margin-top:8px">${esc(job.command)}</div>` : ""}
    ${job.error ? `<p style="color:var(--bad)">${esc(job.error)}</p>` : ""}
    ${job.result && job.result.path ? `<p>written: <code>${esc(job.result.path)}</code></p>${job.result.serve ? `<div class="command">${esc(job.result.serve)}</div><div class="command" style="margin-top:6px">${esc(job.result.infer)}</div>` : ""}` : ""}
    ${job.log_tail && job.log_tail.length ? `<details ${job.kind === "train" ? "open" : ""}><summary class="muted">log (last lines)</summary><div class="log">${esc(job.log_tail.join("\n"))}</div></details>` : ""}
    ${comparison}</div>`;
}
// Draws the job's card until it ends; resolves with the ended job.
function watchJob(id, where, onDone) {
  return new Promise((resolve) => {
    let timer = null;
    const draw = async () => {
      const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
      where.innerHTML = jobCard(job);
      where.querySelectorAll("[data-cancel]").forEach((b) => b.onclick = async () => { try { await api(`/api/jobs/${b.dataset.cancel}/cancel`, {}); } catch (e) { toast(e.message, true); } });
      wireAudio(where); wirePins(where);
      if (!["queued", "running"].includes(job.state)) {
        clearInterval(timer);
        if (onDone) await onDone(job);
        resolve(job);
      }
    };
    timer = setInterval(() => draw().catch((e) => toast(e.message, true)), 1500);
    draw().catch((e) => toast(e.message, true));
  });
}

// ---------------------------------------------------------------- side by side
function comparisonView(result) {
  if (!result) return "";
  const cols = result.columns.map((c) => `<div class="card column"><h3>${esc(c.run ? `${c.run} / ${c.name}` : c.name)}</h3>
    <div class="score">WER ${num(c.metrics && c.metrics.wer)} · SIM ${num(c.metrics && c.metrics.sim)}</div>
    ${c.items.map((item) => `<div style="margin-top:8px"><div class="text">${esc(item.text)}</div>${audioTag(item.audio)}
      <div class="heard">${heard(item.transcript)}</div><div class="score muted">WER ${num(item.wer, 2)} · SIM ${num(item.sim, 2)} · seed ${esc(item.seed)}</div></div>`).join("")}
    <button class="primary" style="margin-top:8px" data-keep="${esc(c.checkpoint)}">keep this one</button></div>`).join("");
  return `<h2>Side by side</h2><div class="columns" id="comparison">${cols}</div>`;
}
function wirePins(root) {
  root.querySelectorAll("[data-keep]").forEach((b) => b.onclick = async () => {
    try { const r = await api("/api/pin", { checkpoint: b.dataset.keep }); toast(`pinned ${r.pinned}: retention keeps it; ckpt=pinned loads it`); b.textContent = "pinned"; b.disabled = true; } catch (e) { toast(e.message, true); }
  });
}

async function showCompare(jobId) {
  setNav("compare");
  clearInterval(pollTimer);
  const data = await api("/api/runs");
  const picked = new Set(JSON.parse(sessionStorage.getItem("f5app-picked") || "[]"));
  const lists = await Promise.all(data.runs.map((r) => api(`/api/runs/${encodeURIComponent(r.name)}${r.sweep ? `?sweep=${encodeURIComponent(r.sweep)}` : ""}`).catch(() => null)));
  const options = lists.filter(Boolean).map((run) => run.checkpoints.filter((c) => c.status === "ok").map((c) => `<label style="display:block">
      <input type="checkbox" class="cmp" value="${esc(c.path)}" ${picked.has(c.path) ? "checked" : ""}> ${esc(run.name)} / ${esc(c.name)}
      <span class="muted">${c.marks.map((m) => m).join(" ")} ${c.adapter ? "LoRA" : ""} WER ${num(c.wer, 2)} val_loss ${num(c.val_loss)}</span></label>`).join("")).join("");
  main().innerHTML = `<h1>Listen side by side</h1>
    <div class="card"><div class="form-grid"><span>checkpoints (two or more)</span><div class="pick">${options || '<span class="muted">no checkpoints yet</span>'}</div>
    <span>what they say</span><div><label><input type="radio" name="what" value="prompts" checked> the held-out prompts</label>
      <label style="margin-left:12px"><input type="radio" name="what" value="text"> this text:</label>
      <textarea id="cmp-text" placeholder="A sentence to hear in every voice."></textarea></div>
    <span>prompts</span><input id="cmp-n" type="number" min="1" max="8" value="2">
    <span>seed</span><input id="cmp-seed" type="number" min="0" value="0"></div>
    <div class="row" style="margin-top:10px"><button class="primary" id="cmp-go">Synthesise</button>
    <span class="muted">each checkpoint speaks through f5app.infer's Synthesizer; every clip is transcribed and scored</span></div></div>
    <div id="cmp-job"></div>`;
  $("#cmp-go").onclick = async () => {
    const checkpoints = [...document.querySelectorAll(".cmp:checked")].map((x) => x.value);
    const text = document.querySelector('input[name="what"]:checked').value === "text" ? $("#cmp-text").value : null;
    try {
      const job = await api("/api/compare", { checkpoints, text, seed: Number($("#cmp-seed").value), num_prompts: Number($("#cmp-n").value) });
      history.replaceState(null, "", `#/compare?job=${job.id}`);
      await watchJob(job.id, $("#cmp-job"));
    } catch (e) { toast(e.message, true); }
  };
  if (jobId) await watchJob(jobId, $("#cmp-job"));
}

// ---------------------------------------------------------------- review
async function showReview(path) {
  setNav("review");
  clearInterval(pollTimer);
  if (!path) {
    const found = await api("/api/reviews");
    main().innerHTML = `<h1>Review recordings</h1><div class="card">${found.folders.length ? found.folders.map((f) =>
      `<div><a href="#/review?path=${encodeURIComponent(f)}">${esc(f)}</a></div>`).join("") :
      '<p class="muted">No reviewed recordings under the data folders this studio was started with (data_roots=[...]). Prepare them first: python -m f5app.prepare data=recordings data.path=DIR</p>'}</div>`;
    return null;
  }
  const data = await api(`/api/review?path=${encodeURIComponent(path)}`);
  const s = data.summary || {};
  const rows = data.clips.map((c, i) => `<tr data-file="${esc(c.audio_file)}" class="${c.state === "accepted" ? "" : "rejected"}">
    <td style="width:260px">${audioTag(c.audio)}<div class="muted" style="font-size:11px">${esc(c.audio_file)}</div></td>
    <td><textarea data-i="${i}" ${c.state === "dropped" ? "disabled" : ""}>${esc(c.text)}</textarea>${c.asr_text && c.asr_text !== c.text ? `<div class="heard muted">ASR: ${esc(c.asr_text)}</div>` : ""}</td>
    <td class="num">${num(c.confidence, 2)}</td><td class="num">${num(c.loudness_lufs, 1)}</td><td class="num">${num(c.seconds, 1)} s</td>
    <td>${c.flags.map((f) => `<span class="flag">${esc(f)}</span>`).join("")}${c.dropped && c.dropped !== "removed_by_you" ? `<span class="flag">dropped: ${esc(c.dropped)}</span>` : ""}</td>
    <td>${c.state === "dropped" ? '<span class="muted">dropped</span>' : `<label><input type="checkbox" class="accept" data-i="${i}" ${c.state === "accepted" ? "checked" : ""}> accept</label>`}</td></tr>`).join("");
  main().innerHTML = `<h1>Review: ${esc(data.source)}</h1>
    <div class="card row"><span>${s.clips ?? "?"} clips, ${num((s.clip_seconds || 0) / 60, 1)} min; ${s.flagged ?? 0} flagged; ${s.dropped ?? 0} dropped</span>
    <button class="primary" id="review-save">Save and prepare again</button><span class="muted">writes <code>${esc(data.metadata)}</code>, then runs:</span></div>
    <div class="command">${esc(data.rerun_command)}</div>
    <table id="review" style="margin-top:12px"><thead><tr><th>clip</th><th>transcript (edit)</th><th class="num">ASR conf.</th><th class="num">LUFS</th><th class="num">length</th><th>flags</th><th></th></tr></thead><tbody>${rows}</tbody></table>
    <div id="review-job"></div>`;
  wireAudio(main());
  main().querySelectorAll("textarea[data-i], input.accept").forEach((el) => el.addEventListener("input", () => el.closest("tr").classList.add("dirty")));
  $("#review-save").onclick = () => saveReview(path, data);
  return data;
}
async function saveReview(path, data) {
  const changes = { texts: {}, reject: [], accept: [] };
  data.clips.forEach((c, i) => {
    const text = document.querySelector(`textarea[data-i="${i}"]`);
    if (text && !text.disabled && text.value !== c.text) changes.texts[c.audio_file] = text.value;
    const box = document.querySelector(`input.accept[data-i="${i}"]`);
    if (box && box.checked && c.state === "rejected") changes.accept.push(c.audio_file);
    if (box && !box.checked && c.state === "accepted") changes.reject.push(c.audio_file);
  });
  try {
    const saved = await api("/api/review", { path, version: data.version, changes });
    data.version = saved.version;
    toast(`saved ${saved.rows} lines; preparing again`);
    const job = await watchJob(saved.job.id, $("#review-job"));
    if (job.state === "finished") { await showReview(path); toast("prepared again: the review shows the result"); }
    return job;
  } catch (e) { toast(e.message, true); throw e; }
}

// ---------------------------------------------------------------- train
async function showTrain() {
  setNav("train");
  const form = await api("/api/train/form");
  const field = (s) => {
    const id = `f-${s.key}`;
    const input = s.kind === "choice" ? `<select id="${id}">${s.choices.map((c) => `<option ${c === s.default ? "selected" : ""}>${esc(c)}</option>`).join("")}</select>`
      : s.kind === "path" ? `<input id="${id}" list="roots" placeholder="a folder under ${esc(form.data_roots.join(", ") || "(no data_roots given)")}" style="width:100%">`
      : `<input id="${id}" ${s.kind === "name" ? 'type="text"' : `type="number" step="any" min="${s.low}" max="${s.high}"`} value="${esc(s.default ?? "")}">`;
    return `<label for="${id}">${esc(s.label)} <span class="muted">${esc(s.key)}</span></label>${input}`;
  };
  main().innerHTML = `<h1>Train</h1><div class="card"><div class="form-grid">${form.settings.map(field).join("")}</div>
    <datalist id="roots">${form.data_roots.map((r) => `<option value="${esc(r)}">`).join("")}</datalist>
    <div class="row" style="margin-top:10px"><button class="primary" id="train-go">Start training</button>
    <span class="muted">runs f5app.train as a child process (one at a time); stop sends SIGTERM: it saves a checkpoint and exits 3</span></div></div>
    <div id="train-job"></div>`;
  $("#train-go").onclick = async () => {
    const values = {};
    for (const s of form.settings) {
      const v = $(`#f-${CSS.escape(s.key)}`).value;
      if (v !== "") values[s.key] = s.kind === "int" || s.kind === "float" ? Number(v) : v;
    }
    try { const job = await api("/api/train", { values }); await watchJob(job.id, $("#train-job")); } catch (e) { toast(e.message, true); }
  };
  const jobs = await api("/api/jobs");
  const current = jobs.jobs.find((j) => j.kind === "train");
  if (current) await watchJob(current.id, $("#train-job"));
}

// ---------------------------------------------------------------- routing
async function route() {
  clearInterval(pollTimer);
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const q = new URLSearchParams(query || "");
  try {
    if (path.startsWith("/run/")) return await showRun(decodeURIComponent(path.slice(5)), q.get("sweep"));
    if (path === "/compare") return await showCompare(q.get("job"));
    if (path === "/review") return await showReview(q.get("path"));
    if (path === "/train") return await showTrain();
    return await showRuns();
  } catch (e) { main().innerHTML = `<p style="color:var(--bad)">${esc(e.message)}</p>`; }
}
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------- test hook (?autotest=...)
// Drives one view the way a person would and writes the outcome into the page title, which
// headless Chromium's DevTools endpoint lists (tests/test_studio.py).
async function autotest() {
  const say = (text) => { document.title = `autotest: ${text}`; };
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  try {
    if (AUTOTEST === "runs") {
      await showRuns();
      const names = [...document.querySelectorAll("#runs tbody a")].map((a) => a.textContent);
      say(`runs ${names.join(",")}`);
    } else if (AUTOTEST === "run") {
      const run = await showRun(params.get("run"));
      say(`run ${run.name} checkpoints ${document.querySelectorAll("#checkpoints tbody tr[data-name]").length} marks ${document.querySelectorAll(".ckpt-mark").length}`);
    } else if (AUTOTEST === "play") {
      await showRun(params.get("run"));
      const audio = document.querySelector(".clip audio");
      const seconds = await loadAudio(audio, audio.dataset.path);
      await audio.play().catch(() => null);
      say(`played ${seconds.toFixed(2)}`);
    } else if (AUTOTEST === "compare") {
      await showCompare();
      const wanted = params.getAll("ckpt");
      document.querySelectorAll(".cmp").forEach((box) => { box.checked = wanted.includes(box.value); });
      $("#cmp-seed").value = params.get("seed") || "1"; $("#cmp-n").value = "1";
      $("#cmp-go").click();
      for (let i = 0; i < 600 && !document.querySelector("#comparison"); i++) await wait(500);
      const audios = [...document.querySelectorAll("#comparison audio")];
      const seconds = await Promise.all(audios.map((a) => loadAudio(a, a.dataset.path)));
      say(`compared ${audios.length} ${seconds.map((s) => s.toFixed(2)).join(",")}`);
    } else if (AUTOTEST === "review") {
      const data = await showReview(params.get("path"));
      const i = data.clips.findIndex((c) => c.audio_file === params.get("file"));
      document.querySelector(`textarea[data-i="${i}"]`).value = params.get("text");
      const job = await saveReview(params.get("path"), data);
      say(`saved ${job.state}`);
    }
  } catch (e) { say(`error ${e.message}`); }
}

if (AUTOTEST) autotest(); else route();
