/**
 * The notebooks open in this JupyterLab, as the agent sees them: listed for
 * the kernels (by path relative to the server root), read and edited live.
 */

import type * as nbformat from '@jupyterlab/nbformat';
import type { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Signal, type ISignal } from '@lumino/signaling';

import { applyEdit, readNotebook, replaceAll } from './edits';
import type { LiveOp } from './protocol';

/** The answer to one request: `reply` data without the envelope. */
export interface IAnswer {
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** Registry of open notebooks; applies requests to their models. */
export class OpenNotebooks {
  constructor(private readonly tracker: INotebookTracker) {
    tracker.widgetAdded.connect((_, panel) => this.watch(panel));
    tracker.forEach(panel => this.watch(panel));
  }

  /** Emitted (debounced) when notebooks are opened, closed or renamed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Paths (relative to the server root) of the open notebooks whose content is loaded. */
  paths(): string[] {
    const out = new Set<string>();
    this.tracker.forEach(panel => {
      if (panel.context.isReady && panel.context.path.endsWith('.ipynb')) {
        out.add(panel.context.path);
      }
    });
    return [...out].sort();
  }

  /** The open panel of a notebook, by its server-relative path. */
  find(path: string): NotebookPanel | null {
    return this.tracker.find(panel => panel.context.path === path) ?? null;
  }

  /** Every open notebook's current content, by path (for rewinds from the sidebar). */
  contents(): Record<string, nbformat.INotebookContent> {
    const out: Record<string, nbformat.INotebookContent> = {};
    for (const path of this.paths()) {
      const panel = this.find(path);
      if (panel?.context.model) {
        out[path] = readNotebook(panel.context.model);
      }
    }
    return out;
  }

  /** Do `op` on the open notebook at `path`. */
  async handle(path: string, op: LiveOp): Promise<IAnswer> {
    const panel = this.find(path);
    if (!panel) {
      return { ok: false, error: `${path} is not open` };
    }
    await panel.context.ready;
    const model = panel.context.model;
    try {
      switch (op.method) {
        case 'read':
          return { ok: true, result: readNotebook(model) };
        case 'apply':
          return applyEdit(model, op.edit)
            ? { ok: true, result: true }
            : { ok: false, error: `cell ${op.edit.cell_id} is not in the open notebook` };
        case 'replace_all':
          return { ok: replaceAll(model, op.notebook), result: true };
        default:
          return { ok: false, error: 'unknown method' };
      }
    } catch (err) {
      return { ok: false, error: String(err) };
    }
  }

  private watch(panel: NotebookPanel): void {
    const ping = () => this.schedule();
    void panel.context.ready.then(ping);
    panel.context.pathChanged.connect(ping);
    panel.disposed.connect(ping);
    ping();
  }

  private schedule(): void {
    if (this._timer !== null) {
      return;
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      this._changed.emit();
    }, 50);
  }

  private _changed = new Signal<this, void>(this);
  private _timer: number | null = null;
}
