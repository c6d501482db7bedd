// Approval prompt: what the agent wants to do (a command, or a diff of the edit),
// Approve / Always allow / Deny. Sends {type: "rendered"} once shown (a headless run
// never does) and {type: "decision", decision} on a click.

function render({ model, el }) {
  const listen = listener(model);
  const title = h("div", { class: "am-approval-title" });
  const reason = h("div", { class: "am-approval-reason am-muted" });
  const preview = h("div", { class: "am-approval-preview" });
  const approve = h("button", { class: "am-btn am-btn-primary", dataset: { action: "approve" } }, "Approve");
  const always = h("button", { class: "am-btn", dataset: { action: "always" } }, "Always allow");
  const deny = h("button", { class: "am-btn am-btn-danger", dataset: { action: "deny" } }, "Deny");
  const rule = h("span", { class: "am-muted am-approval-rule" });
  const buttons = h("div", { class: "am-approval-buttons" }, approve, always, deny, rule);
  const status = h("div", { class: "am-approval-status" });
  // An expired prompt (the turn ended before a decision) collapses to this one line.
  const expiredLine = h("div", { class: "am-approval-expired am-muted" });
  const full = h("div", { class: "am-approval-full" }, title, reason, preview, buttons, status);
  const stale = staleness(model, el, listen, () => update(), "Its turn ended with it.");
  const box = h("div", { class: "am-widget am-approval" }, full, stale.line, expiredLine, errorLine(model, listen));
  el.append(box);

  let shownPreview = null;
  function update() {
    const decision = model.get("decision");
    const expired = model.get("expired");
    full.hidden = expired;
    expiredLine.hidden = !expired;
    box.classList.toggle("am-collapsed", expired);
    expiredLine.replaceChildren(icon("clock"), `Expired (the turn ended before a decision): ${model.get("title")}`);
    title.replaceChildren(icon("warn"), " ", model.get("title"));
    reason.textContent = model.get("reason");
    reason.hidden = !model.get("reason");
    const text = model.get("preview");
    const kind = model.get("preview_kind");
    if (shownPreview !== text + kind) {
      shownPreview = text + kind;
      preview.replaceChildren(kind === "diff" ? diffView(text) : h("pre", { class: "am-code" }, text));
    }
    preview.hidden = !text;
    const r = model.get("always_rule");
    always.title = "Approve, and allow " + (r || "this tool") + " without asking from now on";
    rule.textContent = decision ? "" : r ? "Always allow: " + r : "";
    for (const b of [approve, always, deny]) {
      b.disabled = decision !== "" || !!stale.why();
      b.classList.toggle("am-chosen", b.dataset.action === decision);
    }
    buttons.classList.toggle("am-decided", decision !== "");
    status.textContent = model.get("status");
    status.hidden = !model.get("status");
    box.dataset.decision = decision;
  }
  for (const b of [approve, always, deny]) {
    b.addEventListener("click", () => {
      if (model.get("decision") !== "") return;
      for (const o of [approve, always, deny]) o.disabled = true;
      model.send({ type: "decision", decision: b.dataset.action });
    });
  }
  listen("change", update);
  update();
  model.send({ type: "rendered" });
  return listen.dispose;
}

export default { render };
