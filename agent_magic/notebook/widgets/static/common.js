// Helpers shared by agent-magic's widgets. Python puts this file in front of each
// widget's own module, so every module stays self-contained (no imports, no CDN).

/** An element: h("div", {class: "x", title: "y"}, child, "text", ...). */
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const ICONS = {
  // 16x16 outlines, drawn with currentColor so they follow the theme (no icon font needed).
  copy: "M5 5h8v9H5z M3 11V2h8",
  fork: "M4 2v4 M4 6c0 3 8 2 8 5v3 M4 6v8 M12 2v3",
  resume: "M3 8a5 5 0 1 0 1.5-3.5 M3 2v3h3 M8 5v3l2 2",
  stop: "M4 4h8v8H4z",
  check: "M3 8.5l3 3 7-7",
  cross: "M4 4l8 8 M12 4l-8 8",
  warn: "M8 2L1.5 13.5h13z M8 6.5v3.5 M8 12v.01",
  clock: "M8 1.5a6.5 6.5 0 1 0 0 13a6.5 6.5 0 1 0 0-13z M8 4.5V8l2.5 1.5",
  caret: "M4 6l4 4 4-4",
  branch: "M4 2v6a3 3 0 0 0 3 3h6 M10 8l3 3-3 3",
  jump: "M3 8h9 M9 5l3 3-3 3",
};

/** A small inline SVG icon. */
function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("width", "14");
  svg.setAttribute("height", "14");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "am-icon");
  const p = document.createElementNS(ns, "path");
  p.setAttribute("d", ICONS[name]);
  p.setAttribute("fill", name === "stop" ? "currentColor" : "none");
  p.setAttribute("stroke", "currentColor");
  p.setAttribute("stroke-width", "1.5");
  p.setAttribute("stroke-linecap", "round");
  p.setAttribute("stroke-linejoin", "round");
  svg.append(p);
  return svg;
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

/** "2025-03-01 14:05" (local time) from epoch milliseconds or an ISO string. */
function fmtDate(v) {
  if (v === undefined || v === null || v === "") return "-";
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

/** "14:05" today, else the date too. */
function fmtWhen(v) {
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return fmtDate(v);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay ? `${pad2(d.getHours())}:${pad2(d.getMinutes())}` : fmtDate(v);
}

function fmtCost(v) {
  if (v === undefined || v === null) return "cost unknown";
  return "$" + Number(v).toFixed(v >= 1 ? 2 : 4);
}

function fmtInt(n) {
  return n === undefined || n === null ? "?" : Number(n).toLocaleString("en-US");
}

function shorten(s, n) {
  const one = String(s || "").split(/\s+/).join(" ").trim();
  return one.length <= n ? one : one.slice(0, n - 1) + "…";
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many || one + "s"}`;
}

/** A unified diff with added, removed and hunk lines coloured ("no newline" markers left out). */
function diffView(text) {
  const pre = h("pre", { class: "am-diff" });
  for (const line of String(text || "").replace(/\n$/, "").split("\n")) {
    if (line.startsWith("\\ No newline")) continue;
    let cls = "";
    if (line.startsWith("+++") || line.startsWith("---")) cls = "am-diff-file";
    else if (line.startsWith("@@")) cls = "am-diff-hunk";
    else if (line.startsWith("+")) cls = "am-diff-add";
    else if (line.startsWith("-")) cls = "am-diff-del";
    else if (line.startsWith("\\")) cls = "am-diff-meta";
    pre.append(h("span", { class: cls }, line + "\n"));
  }
  return pre;
}

/** Copy text to the clipboard; falls back to a hidden textarea where the Clipboard API is refused. */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", { style: "position:fixed;opacity:0;top:0;left:0" });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/**
 * Listen to model events and undo it all when the view goes away:
 *   const listen = listener(model); listen("change:x", cb); ... return listen.dispose;
 */
function listener(model) {
  const offs = [];
  const listen = (event, cb) => {
    model.on(event, cb);
    offs.push(() => model.off(event, cb));
  };
  listen.add = off => offs.push(off);
  listen.dispose = () => offs.splice(0).forEach(off => off());
  return listen;
}

/**
 * Whether the view is stale, and a line saying why: the kernel side says so in the `stale` trait
 * (its session was deleted, ...); the front end knows when the kernel that made the widget has
 * restarted, died or been replaced (its models are gone: clicks would go nowhere). That is seen on
 * the widget manager's kernel connection (JupyterLab), on the model's `comm_live_update` event
 * (ipywidgets marks models not live on a restart) and on the "jupyter-widgets-disconnected" class.
 * `onChange()` runs when that changes; `staleness.why()` is "" while the view is live.
 */
function staleness(model, el, listen, onChange, again) {
  const line = h("div", { class: "am-stale-widget", role: "status" });
  let disconnected = false;
  const why = () =>
    model.get("stale") ||
    (disconnected ? `The kernel restarted since this was shown: its actions are off. ${again}` : "");
  const update = () => {
    const text = why();
    line.replaceChildren(...(text ? [icon("warn"), " ", text] : []));
    line.hidden = !text;
  };
  const gone = () => {
    if (disconnected) return;
    disconnected = true;
    update();
    onChange();
  };
  const check = () => {
    if (el.classList.contains("jupyter-widgets-disconnected") || el.closest(".jupyter-widgets-disconnected")) gone();
  };
  // After a view renders, a model's comm only ever stops being live (a restart makes new models).
  listen("comm_live_update", gone);
  const kernel = model.widget_manager && model.widget_manager.kernel;
  if (kernel && kernel.statusChanged && kernel.statusChanged.connect) {
    const onStatus = (_sender, status) => {
      if (status === "restarting" || status === "autorestarting" || status === "dead") gone();
    };
    const onDisposed = () => gone();
    kernel.statusChanged.connect(onStatus);
    listen.add(() => kernel.statusChanged.disconnect(onStatus));
    if (kernel.disposed && kernel.disposed.connect) {
      kernel.disposed.connect(onDisposed);
      listen.add(() => kernel.disposed.disconnect(onDisposed));
    }
  }
  listen("change:stale", () => {
    update();
    onChange();
  });
  const observer = new MutationObserver(check);
  observer.observe(el, { attributes: true, attributeFilter: ["class"] });
  setTimeout(check, 0);
  update();
  listen.add(() => observer.disconnect());
  return { line, why, disconnected: () => disconnected };
}

/**
 * A link to a notebook cell (a stale cell after a rewind). With agent-magic's JupyterLab extension
 * the click selects the cell (the extension answers the "agent-magic:select-cell" event and also
 * marks the cell until it runs again, from the data-am-stale-* attributes); without it, the cell
 * at that position in this notebook is scrolled to and selected.
 */
function cellLink(s, el) {
  const a = h(
    "a",
    {
      class: "am-stale-cell",
      href: s.href,
      title: `Go to ${s.label} (${s.cell_id})`,
      dataset: { amStaleCell: s.cell_id, amStaleHref: s.href, amStaleSince: String(s.since), amStalePath: s.path, amStaleIndex: String(s.index) },
    },
    s.label
  );
  a.addEventListener("click", event => {
    event.preventDefault();
    event.stopPropagation();
    const detail = { cell_id: s.cell_id, path: s.path, index: s.index };
    const ask = new CustomEvent("agent-magic:select-cell", { bubbles: true, cancelable: true, detail });
    if (!a.dispatchEvent(ask)) return; // the extension selected it
    const cells = el.closest(".jp-Notebook")?.querySelectorAll(":scope .jp-Cell");
    const cell = cells && s.index >= 0 ? cells[s.index] : null;
    if (!cell) return;
    cell.scrollIntoView({ block: "center" });
    // The notebook selects a cell on a mouse press in it (on its prompt, so no editor gets focus).
    const target = cell.querySelector(".jp-InputPrompt") || cell;
    target.dispatchEvent(new MouseEvent("mousedown", { bubbles: true, cancelable: true, button: 0 }));
    target.dispatchEvent(new MouseEvent("mouseup", { bubbles: true, cancelable: true, button: 0 }));
  });
  return a;
}

/** A line that shows the model's `error` trait (actions report their failures there). */
function errorLine(model, listen) {
  const line = h("div", { class: "am-error", role: "alert" });
  const update = () => {
    const text = model.get("error");
    line.replaceChildren(...(text ? [icon("warn"), " ", text] : []));
    line.hidden = !text;
  };
  listen("change:error", update);
  update();
  return line;
}
