// Session browser: a table sorted by clicking its headers, forks indented under their
// parents, and Resume / Fork on every row.

const COLUMNS = [
  { key: "title", label: "Session", desc: false },
  { key: "last_active", label: "Last active", desc: true },
  { key: "turns", label: "Turns", desc: true, num: true },
  { key: "cost", label: "Cost", desc: true, num: true },
];

function compare(key) {
  return (a, b) => {
    const x = a[key];
    const y = b[key];
    if (key === "title") return String(x || "").localeCompare(String(y || ""), undefined, { sensitivity: "base" });
    return (x ?? -1) - (y ?? -1);
  };
}

/** Rows in tree order: roots sorted, each followed by its forks (sorted the same way), depth-first. */
function treeOrder(rows, key, desc) {
  const byId = new Map(rows.map(r => [r.id, r]));
  const kids = new Map();
  const roots = [];
  for (const r of rows) {
    if (r.parent && byId.has(r.parent) && r.parent !== r.id) {
      if (!kids.has(r.parent)) kids.set(r.parent, []);
      kids.get(r.parent).push(r);
    } else {
      roots.push(r);
    }
  }
  const cmp = compare(key);
  const sort = list => list.sort((a, b) => (desc ? -cmp(a, b) : cmp(a, b)));
  const out = [];
  const seen = new Set();
  const walk = (r, depth, last) => {
    if (seen.has(r.id)) return;
    seen.add(r.id);
    out.push({ row: r, depth, last });
    const children = sort(kids.get(r.id) || []);
    children.forEach((c, i) => walk(c, depth + 1, i === children.length - 1));
  };
  const sortedRoots = sort(roots);
  sortedRoots.forEach(r => walk(r, 0, false));
  for (const r of rows) if (!seen.has(r.id)) walk(r, 0, false); // a cycle: show it flat
  return out;
}

function render({ model, el }) {
  const listen = listener(model);
  const send = msg => model.send(msg);

  const title = h("div", { class: "am-head" });
  const thead = h("thead");
  const tbody = h("tbody");
  const table = h("table", { class: "am-table" }, thead, tbody);
  const empty = h("div", { class: "am-muted" });
  const notice = h("div", { class: "am-notice", role: "status" });
  const stale = staleness(model, el, listen, () => update(), "Run %agent sessions again for a live table.");
  const box = h("div", { class: "am-widget am-browser" }, title, stale.line, table, empty, errorLine(model, listen), notice);
  el.append(box);

  function sortBy(key) {
    const col = COLUMNS.find(c => c.key === key);
    const desc = model.get("sort_key") === key ? !model.get("sort_desc") : col.desc;
    model.set("sort_key", key);
    model.set("sort_desc", desc);
    model.save_changes();
  }

  function renderHead() {
    const key = model.get("sort_key");
    const desc = model.get("sort_desc");
    const cells = [h("th", { class: "am-col-id" }, "Id")];
    for (const c of COLUMNS) {
      const active = c.key === key;
      const th = h(
        "th",
        { class: "am-sortable" + (c.num ? " am-num" : "") + (active ? " am-sorted" : ""), "aria-sort": active ? (desc ? "descending" : "ascending") : "none", dataset: { sort: c.key }, title: `Sort by ${c.label.toLowerCase()}` },
        c.label,
        h("span", { class: "am-sort-mark" + (desc ? "" : " am-up") }, active ? icon("caret") : "")
      );
      th.addEventListener("click", () => sortBy(c.key));
      cells.push(th);
    }
    cells.push(h("th", {}, ""));
    thead.replaceChildren(h("tr", {}, ...cells));
  }

  function renderBody() {
    const rows = model.get("rows") || [];
    const current = model.get("current");
    const scope = model.get("scope");
    title.replaceChildren(scope ? "Sessions of this notebook" : "All sessions", h("span", { class: "am-muted" }, ` · ${plural(rows.length, "session")}`));
    empty.textContent = rows.length ? "" : scope ? "No sessions yet: run a %%agent cell to start one." : "No sessions yet.";
    empty.hidden = !!rows.length;
    table.hidden = !rows.length;
    tbody.replaceChildren();
    for (const { row: r, depth } of treeOrder(rows, model.get("sort_key"), model.get("sort_desc"))) {
      const isCur = r.id === current;
      const dead = !!stale.why();
      const resume = h("button", { class: "am-btn am-btn-small am-row-resume", disabled: isCur || dead, title: isCur ? "This notebook already continues this session" : "The next %%agent cell continues this session" }, "Resume");
      const fork = h("button", { class: "am-btn am-btn-small am-row-fork", disabled: dead, title: "Copy this session into a new one; the next %%agent cell continues the copy" }, "Fork");
      resume.addEventListener("click", () => send({ type: "resume", session_id: r.id }));
      fork.addEventListener("click", () => send({ type: "fork", session_id: r.id }));
      const indent = h("span", { class: "am-indent", style: `width: ${depth * 16}px` });
      const name = h(
        "td",
        { class: "am-col-title", title: r.title },
        indent,
        depth ? h("span", { class: "am-branch" }, icon("branch"), " ") : "",
        h("span", { class: r.titled ? "am-titled" : "" }, shorten(r.title || "(no prompt yet)", 70)),
        isCur ? h("span", { class: "am-chip am-chip-current" }, "current") : "",
        // An untitled fork's name already says what it forked; a titled one says it here.
        !depth && r.parent && r.titled ? h("span", { class: "am-muted" }, ` fork of ${r.parent.slice(0, 8)}`) : "",
        !scope && r.scope ? h("div", { class: "am-muted am-scope" }, shorten(r.scope, 80)) : ""
      );
      tbody.append(
        h(
          "tr",
          { class: isCur ? "am-is-current" : "", dataset: { sessionId: r.id, depth: String(depth) } },
          h("td", { class: "am-col-id" }, h("code", { title: r.id }, r.id.slice(0, 8))),
          name,
          h("td", {}, fmtDate(r.last_active)),
          h("td", { class: "am-num" }, String(r.turns)),
          h("td", { class: "am-num" }, r.cost === null || r.cost === undefined ? "unknown" : fmtCost(r.cost)),
          h("td", { class: "am-row-actions" }, resume, fork)
        )
      );
    }
    notice.textContent = model.get("notice");
    notice.hidden = !model.get("notice");
  }

  function update() {
    renderHead();
    renderBody();
  }

  listen("change", update);
  update();
  return listen.dispose;
}

export default { render };
