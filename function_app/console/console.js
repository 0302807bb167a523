// The operator console: reads the app's own JSON routes and calls its manual routes. No framework,
// no build step, nothing from a CDN. Data is always put into the page as text, never as HTML.
"use strict";
(function () {
  const base = location.pathname.replace(/\/console\/?$/, "");
  const key = new URLSearchParams(location.search).get("code");
  const $ = (id) => document.getElementById(id);
  const LABELS = { retrain: "Dry-run retrain", rollback: "Roll back", promote: "Promote", pause: "Pause", resume: "Resume", freeze: "Freeze", unfreeze: "Unfreeze", approve: "Approve", reject: "Reject" };

  async function api(path, init) {
    const headers = Object.assign({ Accept: "application/json" }, (init && init.headers) || {});
    if (key) headers["x-functions-key"] = key;
    const response = await fetch(base + path, Object.assign({}, init, { headers }));
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: text }; }
    if (!response.ok) {
      const error = new Error((body && body.error) || response.status + " " + response.statusText);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function short(text, n) { text = String(text || ""); return text.length > n ? text.slice(0, n - 1) + "…" : text; }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(2) + "%"; }
  function split(traffic) {
    if (!traffic) return "–";
    return Object.entries(traffic).sort((a, b) => b[1] - a[1]).map(([d, p]) => d + " " + p + "%").join(", ");
  }
  function left(until, seconds) {
    if (!until || seconds === null || seconds === undefined) return "";
    const s = Math.round(seconds);  // by the service's clock, not this browser's
    if (s <= 0) return "bake over; judged on the next pass";
    return Math.floor(s / 60) + " min " + (s % 60) + " s of bake left (until " + until + ")";
  }

  function stageName(j) {  // the step a verdict judged; before the first step, the shadow stage (mirrored traffic)
    const n = Number(j.judged_step);
    return n < 0 ? "shadow" : "step " + (n + 1);
  }

  function chart(svg, caption, history, limit) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const judged = history.filter((h) => h.health && h.health.failure_rate !== null && h.health.failure_rate !== undefined);
    if (!judged.length) {
      caption.textContent = "No step judged yet.";
      svg.setAttribute("aria-label", caption.textContent);
      return;
    }
    const ns = "http://www.w3.org/2000/svg";
    const w = 360, h = 110, top = 14, bottom = 24, maxRate = Math.max(limit || 0, ...judged.map((j) => j.health.failure_rate)) * 1.2 || 0.01;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const y = (r) => top + (h - top - bottom) * (1 - r / maxRate);
    const step = w / judged.length;
    judged.forEach((j, i) => {
      const rate = j.health.failure_rate;
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", String(i * step + step * 0.2));
      bar.setAttribute("width", String(step * 0.6));
      bar.setAttribute("y", String(y(rate)));
      bar.setAttribute("height", String(Math.max(1, h - bottom - y(rate))));
      bar.setAttribute("class", "bar" + (limit !== null && limit !== undefined && rate > limit ? " over" : ""));
      svg.appendChild(bar);
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(i * step + step / 2));
      label.setAttribute("y", String(h - 8));
      label.setAttribute("text-anchor", "middle");
      label.textContent = stageName(j) + ": " + pct(rate);
      svg.appendChild(label);
    });
    if (limit !== null && limit !== undefined) {
      const line = document.createElementNS(ns, "line");
      line.setAttribute("x1", "0"); line.setAttribute("x2", String(w));
      line.setAttribute("y1", String(y(limit))); line.setAttribute("y2", String(y(limit)));
      line.setAttribute("class", "limit");
      svg.appendChild(line);
      const text = document.createElementNS(ns, "text");
      text.setAttribute("x", "2"); text.setAttribute("y", String(y(limit) - 3));
      text.textContent = "limit " + pct(limit);
      svg.appendChild(text);
    }
    caption.textContent = "Failure rate of the candidate at each judged step (dashed: max_error_rate " + pct(limit) + "): " +
      judged.map((j) => stageName(j) + " " + pct(j.health.failure_rate) + " (" + (j.health.status || "?") + ")").join("; ") + ".";
    svg.setAttribute("aria-label", caption.textContent);
  }

  function renderModels(models) {
    const box = $("models");
    box.replaceChildren();
    $("models-empty").hidden = models.length > 0;
    const select = $("f-model");
    const chosen = select.value;
    select.replaceChildren(el("option", "all", { value: "" }));
    for (const m of models) {
      select.appendChild(el("option", m.model, { value: m.model }));
      const card = $("model-card").content.firstElementChild.cloneNode(true);
      card.dataset.model = m.model;
      card.querySelector(".name").textContent = m.model;
      const state = card.querySelector(".state");
      state.textContent = m.state;
      state.dataset.state = m.state;
      card.querySelector(".cooldown").textContent = m.cooldown_until ? "until " + m.cooldown_until : "none";
      if (m.batch_endpoint) {  // deploy.batch_endpoint: the endpoint's default deployment as Azure has it now
        const be = m.batch_endpoint;
        card.querySelector(".batch").textContent = be.name + ": " + (be.default || (be.error ? "unread: " + short(be.error, 120) : "none"));
        card.querySelector(".batch").hidden = card.querySelector(".batch-label").hidden = false;
      }
      const c = m.last_comparison;  // deploy.batch_endpoint.compare: the last comparison's verdict and its numbers
      if (c) {
        const figures = (c.metrics || []).map((x) => x.metric + ": candidate " + (x.candidate ?? "none") + " vs champion " + (x.champion ?? "none")).join("; ");
        const verdict = c.passed === true ? " (won: default switched)" : c.passed === false ? " (lost: not switched)" : " (not judged: " + short(c.why || "", 120) + ")";
        card.querySelector(".compare").textContent = c.action + " " + c.outcome + " on " + c.data + ": " + (figures || "no figures") + verdict;
        card.querySelector(".compare").hidden = card.querySelector(".compare-label").hidden = false;
      }
      const b = m.budget || {};
      card.querySelector(".budget").textContent = Math.max(0, (b.daily || 0) - (b.used_today || 0)) + " of " + (b.daily || 0) + " retrains left today";
      const frozen = m.frozen || {};
      const frozenActions = Object.keys(frozen);
      card.querySelector(".frozen").textContent = frozenActions.length
        ? "FROZEN (" + frozenActions.join(", ") + "): " + short(frozen[frozenActions[0]], 200)
        : "no";
      card.dataset.frozen = frozenActions.length ? "yes" : "no";
      const env = m.environment;  // models.<name>.environment: the registry its champions are read from
      let where = "this workspace only";
      if (env) {
        where = env.role + ", registry " + env.registry;
        if (env.upstream) where += ", picks up versions from " + env.upstream + (env.poll_every ? ", polled every " + env.poll_every : "");
        // upstream_identity: only the versions the registry records this identity (the dev service's) as creating
        if (env.upstream_identity) where += ", only those created by " + env.upstream_identity.join(" / ");
      }
      card.querySelector(".environment").textContent = where;
      card.querySelector('[data-action="freeze"]').disabled = Boolean(m.stop_switch);
      card.querySelector('[data-action="unfreeze"]').disabled = !m.stop_switch;
      card.querySelector(".last").textContent = m.last_decision ? m.last_decision.action + " " + m.last_decision.outcome + ": " + short(m.last_decision.reason, 140) : "none yet";
      const flights = m.in_flight || {};
      if (flights.retrain) {
        const job = card.querySelector(".job");
        job.hidden = false;
        const link = card.querySelector(".job-link");
        link.textContent = flights.retrain.status === "pending"
          ? "WAITING FOR APPROVAL: retrain " + flights.retrain.decision + " (the job it would submit is in its record below)"
          : flights.retrain.job || flights.retrain.decision;
        if (flights.retrain.url) link.href = flights.retrain.url; else link.removeAttribute("href");
        card.querySelector(".job-why").textContent = flights.retrain.why ? "started by " + short(flights.retrain.why, 200) : "";
      }
      const r = flights.rollout;
      if (r) {
        card.querySelector(".rollout").hidden = false;
        const steps = r.steps || [];
        const stage = r.step !== undefined && r.step !== null && r.step >= 0
          ? " · step " + (r.step + 1) + " of " + steps.length + " (" + steps[r.step] + "%)"
          : r.mirror ? " · shadow stage (" + r.mirror.percent + "% mirrored, no live traffic)"
          : r.compare ? " · comparison on " + r.compare.data + " since " + r.compare.at + " (" + Object.entries(r.compare.jobs || {}).map(([role, job]) => role + " job " + job).join(", ") + ")"
          : r.smoke_deferred ? " · smoke test deferred: " + r.smoke_deferred.why + " (since " + r.smoke_deferred.since + ", " + r.smoke_deferred.times + " tr" + (r.smoke_deferred.times === 1 ? "y" : "ies") + "; tried again each pass" + (r.smoke_deferred.until ? ", rolled back if it has not cleared by " + r.smoke_deferred.until : "") + "; rollback, promote and pause take its place)"
          : " · provisioning";
        card.querySelector(".rollout-step").textContent = r.status === "pending"
          ? "WAITING FOR APPROVAL: decision " + r.decision + " (its gate passed; see its record below)"
          : (r.job || "") + stage + (r.paused ? " · PAUSED" : "");
        card.querySelector(".traffic").textContent = "Traffic: " + split(r.traffic) + (r.mirror ? " · mirrored to the candidate: " + r.mirror.percent + "%" : "");
        card.querySelector(".bake").textContent = r.paused ? "Paused: the reconciler leaves it as it is until resumed." : left(r.bake_until, r.bake_left_s);
        const history = r.history || [];
        const last = history.filter((h) => h.health).slice(-1)[0];
        const health = last ? last.health : null;
        card.querySelector(".health").textContent = health
          ? "Health (" + (health.source || "?") + "): " + pct(health.failure_rate) + " failures over " + (health.requests || 0) + " requests (limit " + pct(health.max_error_rate) + ", baseline " + pct(health.baseline_failure_rate) + ")" + (health.p95_ms ? ", p95 " + Math.round(health.p95_ms) + " ms" + (health.max_latency_ms ? " (limit " + health.max_latency_ms + " ms)" : "") : "") + " — " + (health.status || "?") + ", next: " + (health.next || "?")
          : "Health: not judged yet.";
        chart(card.querySelector(".chart"), card.querySelector(".chart-caption"), history, health ? health.max_error_rate : null);
      }
      const asking = flights.retrain && flights.retrain.status === "pending" ? flights.retrain : null;  // retrain.approval
      const waiting = Boolean(r && r.status === "pending") || Boolean(asking);  // a person decides (approval)
      const rolling = Boolean(r) && r.status !== "pending";
      card.querySelector('[data-action="promote"]').disabled = !rolling || Boolean(r && r.paused);
      card.querySelector('[data-action="pause"]').disabled = !rolling || Boolean(r && r.paused);
      card.querySelector('[data-action="approve"]').disabled = !waiting;
      card.querySelector('[data-action="reject"]').disabled = !waiting;
      card.querySelector('[data-action="resume"]').disabled = !(r && r.paused);
      for (const button of card.querySelectorAll("button[data-action]")) {
        const decided = ["approve", "reject"].includes(button.dataset.action) && asking ? asking : r;
        button.addEventListener("click", () => act(m.model, button.dataset.action, decided ? decided.decision : null));
      }
      box.appendChild(card);
    }
    select.value = chosen;
  }

  // Where a deploy decision's candidate came from: a registry version picked up (handlers/pickup.py), told
  // by the upstream's notification (its source) or found by the reconciler's poll of the registry.
  function cameFrom(d) {
    const candidate = ((d.details || {}).rendered || {}).candidate || {};
    if (candidate.source !== "registry") return null;
    const registry = d.details.rendered.registry;
    const trigger = d.trigger || {};
    const via = trigger.channel === "reconciler" ? "found by polling the registry" : "told by the notification of " + trigger.source;
    return "From registry " + registry + ", version " + candidate.version + ": " + via;
  }

  function renderDecisions(decisions) {
    const body = $("decisions");
    body.replaceChildren();
    $("decisions-empty").hidden = decisions.length > 0;
    for (const d of decisions) {
      const row = el("tr", null, { class: "row", tabindex: "0", "data-id": d.id, "aria-expanded": "false" });
      row.appendChild(el("td", d.at));
      row.appendChild(el("td", d.model || "–"));
      row.appendChild(el("td", d.action));
      row.appendChild(el("td", d.outcome, { class: "outcome", "data-outcome": d.outcome }));
      const why = el("td", d.reason, { class: "why" });
      const origin = cameFrom(d);
      if (origin) why.appendChild(el("p", origin, { class: "origin" }));
      row.appendChild(why);
      const detail = el("tr", null, { class: "detail", hidden: "" });
      const cell = el("td", null, { colspan: "5" });
      cell.appendChild(el("pre", JSON.stringify(d, null, 2), { class: "record" }));
      detail.appendChild(cell);
      const toggle = () => {
        detail.hidden = !detail.hidden;
        row.classList.toggle("open", !detail.hidden);
        row.setAttribute("aria-expanded", String(!detail.hidden));
      };
      row.addEventListener("click", toggle);
      row.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
      body.appendChild(row);
      body.appendChild(detail);
    }
  }

  function showResult(node) {
    $("result-section").hidden = false;
    $("result").replaceChildren(node);
  }

  async function act(model, action, decisionId) {
    const switching = action === "freeze" || action === "unfreeze";
    const deciding = action === "approve" || action === "reject";
    let reason = "from the console";
    if (switching || deciding) {  // the stop switch, an approval: why is recorded with who pressed it
      const said = window.prompt(LABELS[action] + " " + model + ": why? (recorded)", { freeze: "frozen", unfreeze: "unfrozen", approve: "approved", reject: "rejected" }[action] + " from the console");
      if (said === null || !said.trim()) return;
      reason = said.trim();
    } else if (!window.confirm(LABELS[action] + " " + model + "?")) return;
    const body = action === "retrain" ? { dry_run: true, reason: "dry run from the console" } : switching ? { reason: reason, models: [model] } : { reason: reason };
    const id = window.crypto && crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
    try {
      const path = switching ? "/" + action
        : deciding ? "/decisions/" + encodeURIComponent(decisionId) + "/" + action
        : "/models/" + encodeURIComponent(model) + "/" + action;
      const answer = await api(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": id },
        body: JSON.stringify(body),
      });
      const decision = switching ? answer.decisions[0] : answer;
      const box = el("div", null, { class: "decision", "data-id": decision.id });
      box.appendChild(el("p", LABELS[action] + " " + model + ": " + decision.action + " " + decision.outcome));
      box.appendChild(el("p", decision.reason));
      box.appendChild(el("pre", JSON.stringify(decision, null, 2), { class: "record" }));
      showResult(box);
    } catch (error) {
      showResult(el("div", LABELS[action] + " " + model + ": " + error.message, { class: "error" }));
    }
    await refresh();
  }

  async function refresh() {
    try {
      const form = new FormData($("filters"));
      const query = new URLSearchParams({ limit: "100" });
      for (const [k, v] of form.entries()) if (v) query.set(k, String(v));
      const [models, decisions] = await Promise.all([api("/models"), api("/decisions?" + query.toString())]);
      renderModels(models.models);
      renderDecisions(decisions.decisions);
      $("refreshed").textContent = new Date().toISOString();
    } catch (error) {
      showResult(el("div", "Could not read the service: " + error.message + (error.status === 401 ? " (open the console with ?code=FUNCTION_KEY)" : ""), { class: "error" }));
    }
  }

  $("filters").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("f-clear").addEventListener("click", () => { $("filters").reset(); refresh(); });
  $("refresh").addEventListener("click", refresh);
  setInterval(() => { if ($("auto").checked && !document.hidden) refresh(); }, 10000);
  api("/config").then((c) => { $("backend").textContent = "backend " + c.backend + ", " + c.settings.ledger + " ledger"; }).catch(() => { $("backend").textContent = "configuration not readable"; });
  refresh();
})();
