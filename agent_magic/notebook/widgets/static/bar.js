// The session bar under a %%agent output: Stop while the turn runs; then the session
// (with a copy button), "turn N of M", tokens and cost, Fork here, and a Resume picker.

function render({ model, el }) {
  const listen = listener(model);
  const send = msg => model.send(msg);

  const stop = h("button", { class: "am-btn am-btn-danger am-stop", title: "Stop the running turn (the session stays intact)" }, icon("stop"), "Stop");
  const working = h("span", { class: "am-spinner", "aria-hidden": "true" });
  const dot = h("span", { class: "am-dot", "aria-hidden": "true" });
  const sid = h("code", { class: "am-sid" });
  const copy = h("button", { class: "am-icon-btn am-copy", title: "Copy the session id", "aria-label": "Copy the session id" }, icon("copy"));
  const current = h("span", { class: "am-chip am-chip-current", title: "The next %%agent cell continues this session" }, "current");
  const turn = h("span", { class: "am-bar-turn" });
  const usage = h("span", { class: "am-bar-usage" });
  // How full the model's context is after this turn: a small meter, the share, and (when the
  // cell is wide enough) the words.
  const contextFill = h("span", { class: "am-meter-fill" });
  const contextPct = h("span", { class: "am-bar-context-pct" });
  const context = h(
    "span",
    { class: "am-bar-context" },
    h("span", { class: "am-meter", "aria-hidden": "true" }, contextFill),
    contextPct,
    h("span", { class: "am-bar-word" }, " of context")
  );
  const fork = h("button", { class: "am-btn am-fork", title: "Fork the session here: a new session with the conversation up to the end of this turn; the next %%agent cell continues it", "aria-label": "Fork here" }, icon("fork"), h("span", { class: "am-btn-label" }, "Fork here"));
  const resume = h("button", { class: "am-btn am-resume", "aria-haspopup": "listbox", "aria-expanded": "false", title: "Continue another of this notebook's sessions", "aria-label": "Resume" }, icon("resume"), h("span", { class: "am-btn-label" }, "Resume"), icon("caret"));
  const status = h("span", { class: "am-bar-status" });
  const session = h("span", { class: "am-bar-session" }, h("span", { class: "am-bar-word" }, "session "), sid, copy);
  const row = h("div", { class: "am-bar-row" }, stop, working, dot, session, current, turn, context, usage, status, h("span", { class: "am-spacer" }), fork, resume);
  const notice = h("div", { class: "am-notice", role: "status" });
  const menu = h("div", { class: "am-menu", role: "listbox", hidden: true });
  const stale = staleness(model, el, listen, () => update(), "Use %agent fork and %agent resume instead.");
  const box = h("div", { class: "am-widget am-bar" }, row, stale.line, notice, errorLine(model, listen), menu);
  el.append(box);

  let menuOpen = false;

  function renderMenu() {
    menu.replaceChildren();
    const rows = model.get("sessions") || [];
    const cur = model.get("current_session");
    menu.append(h("div", { class: "am-menu-head" }, "Resume a session of this notebook"));
    if (!rows.length) menu.append(h("div", { class: "am-muted am-menu-empty" }, "Loading…"));
    for (const r of rows) {
      const isCur = r.id === cur;
      const item = h(
        "button",
        { class: "am-menu-item" + (isCur ? " am-is-current" : ""), role: "option", "aria-selected": String(isCur), dataset: { sessionId: r.id }, title: r.id },
        h("span", { class: "am-menu-title" }, shorten(r.title || "(no prompt yet)", 70)),
        h(
          "span",
          { class: "am-menu-meta" },
          h("code", {}, r.id.slice(0, 8)),
          ` · ${fmtDate(r.last_active)} · ${plural(r.turns, "turn")} · ${fmtCost(r.cost)}`,
          r.parent && r.titled ? ` · fork of ${r.parent.slice(0, 8)}` : "",
          isCur ? h("span", { class: "am-chip am-chip-current" }, "current") : ""
        )
      );
      item.addEventListener("click", () => {
        setMenu(false);
        send({ type: "resume", session_id: r.id });
      });
      menu.append(item);
    }
  }

  function setMenu(open) {
    menuOpen = open;
    menu.hidden = !open;
    resume.setAttribute("aria-expanded", String(open));
    if (open) {
      renderMenu();
      send({ type: "refresh" });
    }
  }

  function update() {
    const running = model.get("running");
    const id = model.get("session_id");
    const outcome = model.get("outcome");
    box.dataset.outcome = running ? "running" : outcome || "";
    stop.hidden = !running;
    stop.disabled = !running || model.get("status") === "Stopping…";
    working.hidden = !running;
    for (const e of [dot, session, turn, usage, fork, resume]) e.hidden = running || !id;
    sid.textContent = id.slice(0, 8);
    sid.title = id;
    current.hidden = running || !id || model.get("current_session") !== id;
    const n = model.get("turn");
    const m = Math.max(model.get("turns"), n);
    turn.textContent = `turn ${n} of ${m}`;
    const tin = model.get("input_tokens");
    const tout = model.get("output_tokens");
    const cached = model.get("cached_tokens") ? ` (${fmtInt(model.get("cached_tokens"))} cached)` : "";
    const tokens = tin === null || tin === undefined ? "" : `${fmtInt(tin)} in${cached} / ${fmtInt(tout || 0)} out · `;
    usage.textContent = tokens + fmtCost(model.get("cost_usd"));
    const pct = contextPercent(model.get("context_tokens"), model.get("context_window"));
    context.hidden = running || !id || pct === null;
    if (pct !== null) {
      contextPct.textContent = `${pct}%`;
      contextFill.style.width = `${Math.min(pct, 100)}%`;
      context.classList.toggle("am-is-full", pct >= 80);
      context.title =
        `${pct}% of context: ${fmtInt(model.get("context_tokens"))} of ${fmtInt(model.get("context_window"))} tokens ` +
        "of the model's context window are in use after this turn (%agent compact frees them)";
    }
    const forkable = model.get("saved") && !!model.get("checkpoint_id");
    const dead = !!stale.why();
    box.classList.toggle("am-is-stale", dead);
    if (stale.disconnected()) {
      stop.disabled = true;
      if (menuOpen) setMenu(false);
    }
    resume.disabled = stale.disconnected();
    fork.disabled = !forkable || dead;
    if (!forkable) fork.title = "This turn was not saved (--no-persist): nothing to fork";
    status.textContent = model.get("status");
    status.hidden = !model.get("status");
    notice.textContent = model.get("notice");
    notice.hidden = !model.get("notice");
    if (menuOpen) renderMenu();
  }

  stop.addEventListener("click", () => {
    stop.disabled = true;
    send({ type: "stop" });
  });
  fork.addEventListener("click", () => send({ type: "fork" }));
  resume.addEventListener("click", () => setMenu(!menuOpen));
  copy.addEventListener("click", async () => {
    const ok = await copyText(model.get("session_id"));
    copy.replaceChildren(ok ? icon("check") : icon("cross"));
    copy.title = ok ? "Copied" : "Could not copy: select the id instead";
    setTimeout(() => {
      copy.replaceChildren(icon("copy"));
      copy.title = "Copy the session id";
    }, 1500);
  });
  const onKey = e => {
    if (e.key === "Escape" && menuOpen) setMenu(false);
  };
  box.addEventListener("keydown", onKey);

  listen("change", update);
  update();
  return listen.dispose;
}

/** The percentage the cell's closing line gives ("23% of context"), or null when unknown. */
function contextPercent(tokens, window) {
  if (tokens === null || tokens === undefined || !window || window <= 0) return null;
  return tokens > 0 ? Math.max(1, Math.round((tokens * 100) / window)) : 0;
}

export default { render };
