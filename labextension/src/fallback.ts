/**
 * Saved views of agent-magic's widgets.
 *
 * Where JupyterLab's widget renderer (@jupyter-widgets/jupyterlab-manager)
 * cannot show one of our widgets because its model went with the kernel that
 * made it (a notebook reopened after its kernel stopped), it leaves "Error
 * displaying widget: model not found"; with no kernel at all, "Loading
 * widget..." for good. Our widgets keep a readable summary in the same output
 * (`text/html`, rewritten after every change); for those outputs only, this
 * shows that summary instead, rendered by the notebook's rendermime and
 * sanitized, with a note that the widget is not live.
 *
 * The widget renderer is left alone: a MutationObserver on the notebook finds
 * renderers in those states and fills their node with the summary. When a
 * renderer renders again (the output changed, its model appeared) it replaces
 * its node's content itself, and the summary goes with it.
 */

import { CodeCell } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { ReadonlyPartialJSONObject, ReadonlyPartialJSONValue } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';

import { h } from './dom';

type OutputArea = CodeCell['outputArea'];
type OutputModel = ReturnType<OutputArea['model']['get']>;
type Renderer = ReturnType<OutputArea['rendermime']['createRenderer']>;
type MimeModel = Parameters<Renderer['renderModel']>[0];

const WIDGET_VIEW_MIMETYPE = 'application/vnd.jupyter.widget-view+json';

/**
 * What the kernel side adds to our widgets' outputs, next to the widget view:
 * `"application/vnd.agent-magic.widget+json": {"widget": "SessionBar"}`.
 * No renderer claims it, so every front end ignores it.
 */
const WIDGET_MARKER_MIMETYPE = 'application/vnd.agent-magic.widget+json';

/** Classes our widgets' `text/html` summaries carry (outputs saved before the marker). */
const HTML_MARKER = /\bclass\s*=\s*["'][^"']*\b(?:am-fallback|agent-magic-table)\b/;

/** What jupyterlab-manager's WidgetRenderer writes where it could not render a view. */
const RENDER_ERROR = /^Error displaying widget\b/;
/** ... and while it waits for a widget manager (forever, in a notebook without a kernel). */
const LOADING = 'Loading widget...';
/** How long a renderer may say LOADING, with no kernel, before the summary replaces it. */
const LOADING_GRACE_MS = 1000;

const OUTPUT_CLASS = 'jp-OutputArea-output';
const FALLBACK_CLASS = 'jp-AgentMagic-widgetFallback';

function textOf(value: ReadonlyPartialJSONValue | undefined): string {
  if (Array.isArray(value)) {
    return value.join('');
  }
  return typeof value === 'string' ? value : '';
}

/** Whether an output is a view of one of agent-magic's widgets. */
export function isAgentMagicWidget(data: ReadonlyPartialJSONObject): boolean {
  if (!(WIDGET_VIEW_MIMETYPE in data)) {
    return false;
  }
  return WIDGET_MARKER_MIMETYPE in data || HTML_MARKER.test(textOf(data['text/html']));
}

/** Shows the saved summary in place of the widget renderer's error, in one notebook. */
export class WidgetFallbacks implements IDisposable {
  constructor(private readonly panel: NotebookPanel) {
    this._observer = new MutationObserver(records => this.onMutations(records));
    this._observer.observe(panel.content.node, { childList: true, subtree: true });
    // Without a kernel the renderer stays at "Loading widget..."; with one it moves on.
    panel.sessionContext.kernelChanged.connect(this.checkAll, this);
    panel.sessionContext.sessionChanged.connect(this.checkAll, this);
    this.checkAll();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._observer.disconnect();
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this._waiting.clear();
    this.panel.sessionContext.kernelChanged.disconnect(this.checkAll, this);
    this.panel.sessionContext.sessionChanged.disconnect(this.checkAll, this);
    this._shown.forEach(renderer => renderer.dispose());
    this._shown.clear();
  }

  private checkAll(): void {
    if (this._disposed || this.panel.isDisposed) {
      return;
    }
    this.panel.content.node.querySelectorAll<HTMLElement>(`.${OUTPUT_CLASS}`).forEach(node => this.check(node));
  }

  private onMutations(records: MutationRecord[]): void {
    if (this._disposed || this.panel.isDisposed) {
      return;
    }
    const nodes = new Set<HTMLElement>();
    for (const record of records) {
      const target = record.target instanceof Element ? record.target : record.target.parentElement;
      const output = target?.closest<HTMLElement>(`.${OUTPUT_CLASS}`);
      if (output) {
        nodes.add(output);
      }
      record.addedNodes.forEach(added => {
        if (added instanceof HTMLElement) {
          if (added.classList.contains(OUTPUT_CLASS)) {
            nodes.add(added);
          }
          added.querySelectorAll<HTMLElement>(`.${OUTPUT_CLASS}`).forEach(node => nodes.add(node));
        }
      });
    }
    this.prune();
    nodes.forEach(node => this.check(node));
  }

  /**
   * Show the summary if `node` is a widget renderer that gave up on one of our
   * widgets, or (after `LOADING_GRACE_MS`) is waiting for a kernel there is not.
   */
  private check(node: HTMLElement, waited = false): void {
    // A live view, our summary, or any other output has elements; the renderer's messages are bare text.
    if (node.childElementCount > 0) {
      return;
    }
    const message = node.textContent ?? '';
    const waiting = message === LOADING && this.panel.sessionContext.hasNoKernel;
    if (!waiting && !RENDER_ERROR.test(message)) {
      return;
    }
    const found = this.outputOf(node);
    if (!found) {
      return;
    }
    const { area, model } = found;
    const mimeType = area.rendermime.preferredMimeType(model.data, model.trusted ? 'any' : 'ensure');
    if (mimeType !== WIDGET_VIEW_MIMETYPE || !isAgentMagicWidget(model.data)) {
      return;
    }
    if (waiting && !waited) {
      // While a notebook opens, there is no kernel yet either: give it a moment.
      this.recheckLater(node);
      return;
    }
    this.show(node, area, model);
  }

  private recheckLater(node: HTMLElement): void {
    this._waiting.add(node);
    if (this._timer !== null) {
      return;
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      const nodes = [...this._waiting];
      this._waiting.clear();
      if (!this._disposed && !this.panel.isDisposed) {
        nodes.forEach(n => this.check(n, true));
      }
    }, LOADING_GRACE_MS);
  }

  /** The output area and output model a renderer node belongs to (outputs are the area's children, in order). */
  private outputOf(node: HTMLElement): { area: OutputArea; model: OutputModel } | null {
    const item = node.parentElement;
    const areaNode = item?.parentElement;
    if (!item || !areaNode) {
      return null;
    }
    for (const cell of this.panel.content.widgets) {
      if (!(cell instanceof CodeCell) || cell.outputArea.node !== areaNode) {
        continue;
      }
      const area = cell.outputArea;
      const index = area.widgets.findIndex(widget => widget.node === item);
      return index >= 0 && index < area.model.length ? { area, model: area.model.get(index) } : null;
    }
    return null;
  }

  private show(node: HTMLElement, area: OutputArea, model: OutputModel): void {
    const note = h('div', { className: `${FALLBACK_CLASS}-note` }, [
      'Widget not live (saved view). To interact, run the cell again, or continue its session with ',
      h('code', { text: '%agent resume ID' }),
      '.'
    ]);
    const html = textOf(model.data['text/html']);
    const plain = textOf(model.data['text/plain']);
    const box = h('div', { className: FALLBACK_CLASS });
    if (html) {
      const renderer = area.rendermime.createRenderer('text/html');
      const summary: MimeModel = {
        // Sanitized whatever the notebook's trust: a summary is text and never needs scripts.
        trusted: false,
        data: { 'text/html': html },
        metadata: {},
        setData: () => undefined
      };
      box.append(renderer.node, note);
      this._shown.set(box, renderer);
      renderer.renderModel(summary).catch(() => {
        renderer.node.textContent = plain;
      });
    } else {
      box.append(h('pre', { text: plain }), note);
    }
    node.replaceChildren(box);
  }

  /** Dispose the renderers of summaries the widget renderer has since replaced. */
  private prune(): void {
    this._shown.forEach((renderer, box) => {
      if (!box.parentElement?.classList.contains(OUTPUT_CLASS)) {
        renderer.dispose();
        this._shown.delete(box);
      }
    });
  }

  private readonly _observer: MutationObserver;
  private readonly _shown = new Map<HTMLElement, Renderer>();
  private readonly _waiting = new Set<HTMLElement>();
  private _timer: number | null = null;
  private _disposed = false;
}
