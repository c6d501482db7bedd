// Approval prompt: tool, command or diff, Approve / Deny / Always allow.
// Self-contained (no imports); themed with JupyterLab CSS variables.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render({ model, el: root }) {
  const box = el("div", "am-approval");
  const title = el("div", "am-approval-title");
  const preview = el("pre", "am-approval-preview");
  const reason = el("div", "am-approval-reason");
  const buttons = el("div", "am-approval-buttons");
  const approve = el("button", "am-btn am-btn-primary", "Approve");
  const always = el("button", "am-btn", "Always allow");
  const deny = el("button", "am-btn am-btn-danger", "Deny");
  const status = el("div", "am-approval-status");
  approve.dataset.action = "approve";
  always.dataset.action = "always";
  deny.dataset.action = "deny";
  buttons.append(approve, always, deny);
  box.append(title, reason, preview, buttons, status);
  root.append(box);

  function update() {
    title.textContent = model.get("title");
    reason.textContent = model.get("reason");
    always.title = "Always allow: " + (model.get("always_rule") || "");
    const text = model.get("preview");
    preview.textContent = text;
    preview.style.display = text ? "" : "none";
    preview.classList.toggle("am-diff", model.get("preview_kind") === "diff");
    const decision = model.get("decision");
    for (const b of [approve, always, deny]) b.disabled = decision !== "";
    status.textContent = model.get("status");
    box.dataset.decision = decision;
  }
  for (const b of [approve, always, deny]) {
    b.addEventListener("click", () => {
      if (model.get("decision") !== "") return;
      model.send({ type: "decision", decision: b.dataset.action });
    });
  }
  model.on("change", update);
  update();
  // Tell the kernel a person can see this prompt (a headless run never sends it).
  model.send({ type: "rendered" });
}

export default { render };
