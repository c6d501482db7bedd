/** Small DOM helpers shared by the sidebar and the badges (no framework needed for these). */

/** Create an element with classes, attributes and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: {
    className?: string;
    text?: string;
    title?: string;
    dataset?: Record<string, string>;
    attrs?: Record<string, string>;
    onClick?: (event: Event) => void;
  } = {},
  children: (Node | string | null)[] = []
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.className) {
    el.className = props.className;
  }
  if (props.text !== undefined) {
    el.textContent = props.text;
  }
  if (props.title) {
    el.title = props.title;
  }
  for (const [k, v] of Object.entries(props.dataset ?? {})) {
    el.dataset[k] = v;
  }
  for (const [k, v] of Object.entries(props.attrs ?? {})) {
    el.setAttribute(k, v);
  }
  if (props.onClick) {
    const handler = props.onClick;
    el.addEventListener('click', event => {
      event.stopPropagation();
      handler(event);
    });
  }
  for (const child of children) {
    if (child !== null) {
      el.append(child);
    }
  }
  return el;
}

/** A unified diff, lines coloured by kind. */
export function diffView(diff: string): HTMLElement {
  const pre = h('pre', { className: 'jp-AgentMagic-diff' });
  if (!diff.trim()) {
    pre.textContent = '(no change in the source)';
    return pre;
  }
  for (const line of diff.replace(/\n$/, '').split('\n')) {
    let kind = '';
    if (line.startsWith('+++') || line.startsWith('---')) {
      kind = 'jp-AgentMagic-diffFile';
    } else if (line.startsWith('+')) {
      kind = 'jp-AgentMagic-diffAdd';
    } else if (line.startsWith('-')) {
      kind = 'jp-AgentMagic-diffDel';
    } else if (line.startsWith('@@')) {
      kind = 'jp-AgentMagic-diffHunk';
    }
    pre.append(h('span', { className: kind, text: line + '\n' }));
  }
  return pre;
}

/** A short session id, as the CLI and the magic show them. */
export function shortId(id: string): string {
  return id.slice(0, 8);
}
