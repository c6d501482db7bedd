// Checkpoint slider: one stop per turn plus "now". Moving it previews the rewind (the dry run:
// files and cells that would change, diffs, conflicts); Rewind asks once, then applies.

const FILE_ACTIONS = {
  restore: "restore",
  delete: "delete (created since)",
  create: "recreate (deleted since)",
  cells: "restore cells of",
  "whole-notebook": "restore the whole notebook",
};
const CELL_ACTIONS = {
  restore: "restore cell",
  remove: "remove cell (added since)",
  reinsert: "re-insert cell (deleted since)",
};

function render({ model, el }) {
  const listen = listener(model);
  const send = msg => model.send(msg);

  const head = h("div", { class: "am-head" });
  const range = h("input", { type: "range", class: "am-range", min: "0", step: "1", "aria-label": "Rewind to before turn" });
  const ticks = h("div", { class: "am-ticks" });
  const track = h("div", { class: "am-track" }, range, ticks);
  const card = h("div", { class: "am-card" });
  const preview = h("div", { class: "am-preview" });
  const optConv = h("input", { type: "checkbox", class: "am-opt-conversation" });
  const optForce = h("input", { type: "checkbox", class: "am-opt-force" });
  const convLabel = h("span");
  const options = h(
    "div",
    { class: "am-options" },
    h("label", {}, optConv, convLabel),
    h("label", { title: "Paths and cells someone else changed since the agent are left alone unless this is ticked" }, optForce, "Force: also overwrite conflicts")
  );
  const rewindBtn = h("button", { class: "am-btn am-btn-primary am-rewind" });
  const question = h("span", { class: "am-confirm-q" });
  const confirmBtn = h("button", { class: "am-btn am-btn-danger am-confirm" }, "Confirm");
  const cancelBtn = h("button", { class: "am-btn am-cancel" }, "Cancel");
  const confirmBox = h("span", { class: "am-confirm-box" }, question, confirmBtn, cancelBtn);
  const actions = h("div", { class: "am-actions" }, rewindBtn, confirmBox);
  const result = h("div", { class: "am-result", role: "status" });
  const stale = staleness(model, el, listen, () => update(), "Run %agent checkpoints again for a live slider.");
  const box = h("div", { class: "am-widget am-slider" }, head, stale.line, track, card, preview, options, actions, errorLine(model, listen), result);
  el.append(box);

  const cps = () => model.get("checkpoints") || [];
  let shown = null; // the position the slider shows (moves ahead of the kernel while dragging)

  function renderTicks() {
    const list = cps();
    const n = list.length;
    ticks.replaceChildren();
    const every = Math.max(1, Math.ceil((n + 1) / 12));
    for (let i = 0; i <= n; i++) {
      const cp = list[i];
      const label = i === n ? "now" : String(cp.turn);
      const tick = h(
        "button",
        {
          class: "am-tick" + (i === n ? " am-tick-now" : ""),
          style: `left: calc(7px + (100% - 14px) * ${n ? i / n : 0})`,
          title: i === n ? "Now: nothing to rewind" : `Before turn ${cp.turn} · ${fmtDate(cp.time)} · ${shorten(cp.prompt, 80)}`,
          dataset: { position: String(i) },
        },
        h("span", { class: "am-tick-mark" }),
        i % every === 0 || i === n ? h("span", { class: "am-tick-label" }, label) : "",
        i % every === 0 && i !== n ? h("span", { class: "am-tick-time" }, fmtWhen(cp.time)) : ""
      );
      tick.addEventListener("click", () => choose(i));
      ticks.append(tick);
    }
  }

  function renderCard(pos) {
    const list = cps();
    card.replaceChildren();
    if (pos >= list.length) {
      card.append(h("span", { class: "am-muted" }, list.length ? "Now. Move the slider left to preview a rewind to before that turn." : "No checkpoints yet."));
      return;
    }
    const cp = list[pos];
    const files = cp.files || [];
    const cells = cp.cells || [];
    card.append(
      h("div", {}, h("b", {}, `Turn ${cp.turn}`), ` · ${fmtDate(cp.time)} · `, h("span", { class: "am-prompt" }, `“${shorten(cp.prompt, 120)}”`)),
      h(
        "div",
        { class: "am-muted" },
        files.length ? `changed ${files.map(f => shorten(f, 60)).join(", ")}` : "changed no files",
        cells.length ? ` (${plural(cells.length, "cell")})` : ""
      )
    );
  }

  function changeItem(ch, open) {
    const action = FILE_ACTIONS[ch.action] || ch.action;
    const summary = h(
      "summary",
      {},
      h("span", { class: "am-action am-action-" + ch.action }, action),
      " ",
      h("code", {}, ch.path),
      ch.note ? h("span", { class: "am-muted" }, ` (${ch.note})`) : "",
      ch.forced ? h("span", { class: "am-chip am-chip-warn" }, "overwrites a conflict") : ""
    );
    const body = [];
    if (ch.diff) body.push(diffView(ch.diff));
    for (const c of ch.cells || []) {
      body.push(
        h(
          "div",
          { class: "am-cell-change" },
          h("span", { class: "am-action" }, CELL_ACTIONS[c.action] || c.action),
          " ",
          h("code", {}, c.cell_id),
          c.forced ? h("span", { class: "am-chip am-chip-warn" }, "overwrites a conflict") : ""
        ),
        c.diff ? diffView(c.diff) : ""
      );
    }
    if (!body.length) return h("div", { class: "am-change" }, ...summary.childNodes);
    return h("details", { class: "am-change", open: open }, summary, ...body);
  }

  function renderPreview() {
    const p = model.get("preview") || {};
    const pos = model.get("position");
    preview.replaceChildren();
    if (model.get("busy")) {
      preview.append(h("div", { class: "am-muted" }, "Working…"));
      return;
    }
    if (!p.checkpoint_id || pos >= cps().length) return;
    const changes = p.changes || [];
    preview.append(h("div", { class: "am-preview-head" }, `Rewinding to before turn ${p.turn}: ${p.summary}`));
    if (!changes.length && !(p.conflicts || []).length) {
      preview.append(h("div", { class: "am-muted" }, "Nothing to change: files and cells are already as they were."));
    }
    changes.forEach((ch, i) => preview.append(changeItem(ch, i < 3)));
    for (const d of p.dirs_removed || []) preview.append(h("div", { class: "am-change" }, h("span", { class: "am-action" }, "remove folder"), " ", h("code", {}, d)));
    for (const d of p.dirs_created || []) preview.append(h("div", { class: "am-change" }, h("span", { class: "am-action" }, "recreate folder"), " ", h("code", {}, d)));
    for (const c of p.conflicts || []) {
      preview.append(
        h(
          "div",
          { class: "am-conflict" },
          icon("warn"), " conflict ",
          h("code", {}, c.path + (c.cell_id ? " › " + c.cell_id : "")),
          `: ${c.reason}. `,
          p.forced ? "Force is on: it will be overwritten." : "Left alone unless you tick Force."
        )
      );
    }
    for (const u of p.unrestorable || []) preview.append(h("div", { class: "am-conflict" }, icon("warn"), " not restorable (no backup): ", h("code", {}, u)));
    for (const line of variableLines(p)) preview.append(line);
  }

  /** The kernel's variables in a rewind or its preview: what comes back, what goes, what cannot. */
  function variableLines(r) {
    const out = [];
    const vars = r.variables || [];
    if (vars.length) {
      const list = h("ul", { class: "am-variables" });
      for (const v of vars) {
        list.append(
          v.action === "delete"
            ? h("li", {}, h("span", { class: "am-action" }, "delete"), " ", h("code", {}, v.name), h("span", { class: "am-muted" }, " (created by the undone code)"))
            : h("li", {}, h("span", { class: "am-action" }, "restore"), " ", h("code", {}, v.name), h("span", { class: "am-muted" }, ` ${v.type || ""}, ${bytes(v.size)}${v.in_place ? ", in place" : ""}`))
        );
      }
      out.push(h("div", { class: "am-variables-head" }, `Kernel variables (${vars.length}):`), list);
    }
    for (const v of r.variables_not_restored || []) {
      out.push(h("div", { class: "am-conflict" }, icon("warn"), " not restorable (variable): ", h("code", {}, v.name), `: ${v.reason}`));
    }
    for (const w of r.variable_warnings || []) out.push(h("div", { class: "am-conflict" }, icon("warn"), " ", w));
    if (r.kernel_note) out.push(h("div", { class: "am-muted" }, r.kernel_note));
    return out;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "?";
    const units = ["B", "KB", "MB", "GB"];
    let size = n;
    let i = 0;
    while (size >= 1024 && i < units.length - 1) {
      size /= 1024;
      i++;
    }
    return i === 0 ? `${size} B` : `${size.toFixed(1)} ${units[i]}`;
  }

  function renderResult() {
    const r = model.get("result") || {};
    result.replaceChildren();
    if (!r.checkpoint_id) return;
    const items = h("ul", { class: "am-result-list" });
    for (const c of r.changes || []) {
      items.append(h("li", {}, h("span", { class: "am-action" }, FILE_ACTIONS[c.action] || c.action), " ", h("code", {}, c.path), (c.cells || []).length ? ` (${plural(c.cells.length, "cell")})` : ""));
    }
    for (const c of r.conflicts || []) {
      items.append(h("li", { class: "am-conflict" }, icon("warn"), " left alone: ", h("code", {}, c.path + (c.cell_id ? " › " + c.cell_id : "")), ` (${c.reason}); tick Force and rewind again to overwrite`));
    }
    result.append(h("div", { class: "am-result-head" }, icon("check"), ` Rewound to before turn ${r.turn}: ${r.summary}`), items);
    for (const line of variableLines(r)) result.append(line);
    if (r.new_session_id) {
      result.append(h("div", {}, "The conversation was rewound too: the next %%agent cell continues the new session ", h("code", {}, r.new_session_id.slice(0, 8)), "."));
    }
    const stale = r.stale_cells || [];
    if (stale.length) {
      result.append(
        h(
          "div",
          { class: "am-stale" },
          h("b", {}, `Re-run ${plural(stale.length, "cell")}`),
          `: the kernel ran ${stale.length === 1 ? "it" : "them"} after that turn, so its variables may not match the restored code: `,
          ...stale.map((s, i) => [i ? ", " : "", cellLink(s, el)])
        )
      );
    }
  }

  function choose(pos) {
    shown = pos;
    range.value = String(pos);
    renderCard(pos);
    send({ type: "select", position: pos });
  }

  function update() {
    const list = cps();
    const n = list.length;
    const pos = model.get("position");
    range.max = String(n);
    if (shown === null || shown === pos) {
      range.value = String(pos);
      renderCard(pos);
    }
    head.replaceChildren("Checkpoints of session ", h("code", {}, model.get("session_id").slice(0, 8)), ` · ${plural(n, "turn")}`);
    const cp = pos < n ? list[pos] : null;
    convLabel.textContent = cp
      ? `Also rewind the conversation (fork before turn ${cp.turn}; the fork becomes current)`
      : "Also rewind the conversation (forks the session; the fork becomes current)";
    optConv.checked = model.get("conversation");
    optForce.checked = model.get("force");
    const confirming = model.get("confirming");
    const busy = model.get("busy");
    // A stale slider (its kernel restarted, its session deleted) shows what it showed, but offers nothing.
    const dead = !!stale.why();
    box.classList.toggle("am-is-stale", dead);
    range.disabled = n === 0 || dead;
    for (const t of ticks.children) t.disabled = dead;
    optConv.disabled = dead;
    optForce.disabled = dead;
    rewindBtn.textContent = cp ? `Rewind to before turn ${cp.turn}…` : "Rewind…";
    rewindBtn.disabled = !cp || busy || confirming || dead;
    rewindBtn.hidden = confirming;
    confirmBox.hidden = !confirming;
    question.textContent = cp
      ? `Confirm rewind to before turn ${cp.turn}? Files, cells and kernel variables go back to how they were before it ran` +
        (model.get("conversation") ? ", and the conversation is forked there." : ".")
      : "";
    confirmBtn.disabled = busy || dead;
    renderPreview();
    renderResult();
  }

  range.addEventListener("input", () => {
    shown = Number(range.value);
    renderCard(shown);
  });
  range.addEventListener("change", () => choose(Number(range.value)));
  optConv.addEventListener("change", () => {
    model.set("conversation", optConv.checked);
    model.save_changes();
  });
  optForce.addEventListener("change", () => {
    model.set("force", optForce.checked);
    model.save_changes();
  });
  rewindBtn.addEventListener("click", () => send({ type: "rewind" }));
  confirmBtn.addEventListener("click", () => {
    confirmBtn.disabled = true;
    send({ type: "confirm" });
  });
  cancelBtn.addEventListener("click", () => send({ type: "cancel" }));

  listen("change:checkpoints", () => {
    shown = null;
    renderTicks();
  });
  listen("change", update);
  renderTicks();
  update();
  return listen.dispose;
}

export default { render };
