/**
 * Cell provenance: a small badge on every cell the agent inserted or replaced
 * (from `metadata.agent_magic`, saved with the notebook), with a tooltip, and
 * on click the agent's change to that cell as a diff, and "Restore cell",
 * which puts the cell back as it was before that turn (an ordinary edit in
 * the open notebook: unsaved, and undoable with Ctrl+Z).
 */

import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import type { Cell, ICellModel, ICodeCellModel } from '@jupyterlab/cells';
import { PathExt } from '@jupyterlab/coreutils';
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { PartialJSONObject } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import type { ICellHistory, SessionsApi } from './api';
import { diffView, h, shortId } from './dom';
import { applyEdit } from './edits';
import { provenanceOf, type IProvenance } from './protocol';

const BADGE_CLASS = 'jp-AgentMagic-badge';

function label(p: IProvenance): string {
  return `agent · ${shortId(p.session_id)}${p.turn !== null ? ` · turn ${p.turn}` : ''}`;
}

function tooltip(p: IProvenance): string {
  const verb = p.op === 'insert' ? 'Added' : 'Rewritten';
  const turn = p.turn !== null ? `, turn ${p.turn}` : '';
  return `${verb} by agent session ${shortId(p.session_id)}${turn} (checkpoint ${shortId(p.checkpoint_id)}). Click for the diff, or to restore the cell.`;
}

function sourceOf(cell: { source?: unknown } | null): string {
  const src = cell?.source;
  return Array.isArray(src) ? src.join('') : typeof src === 'string' ? src : '';
}

/** Keeps the badges of one notebook panel in step with its cells' metadata. */
export class ProvenanceBadges implements IDisposable {
  constructor(
    private readonly panel: NotebookPanel,
    private readonly api: SessionsApi
  ) {
    void panel.context.ready.then(() => {
      if (this._disposed) {
        return;
      }
      const model = panel.context.model;
      model.cells.changed.connect(this.schedule, this);
      panel.content.modelContentChanged.connect(this.schedule, this);
      this.schedule();
    });
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
  }

  private schedule(): void {
    if (this._timer !== null || this._disposed) {
      return;
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      this.render();
    }, 100);
  }

  private render(): void {
    if (this._disposed || this.panel.isDisposed) {
      return;
    }
    for (const cell of this.panel.content.widgets) {
      this.renderCell(cell);
    }
  }

  private renderCell(cell: Cell): void {
    const prov = provenanceOf(cell.model.metadata as PartialJSONObject);
    let badge = cell.node.querySelector<HTMLElement>(`:scope > .${BADGE_CLASS}`);
    if (!prov) {
      badge?.remove();
      return;
    }
    const key = JSON.stringify(prov);
    if (badge && badge.dataset.provenance === key) {
      return;
    }
    badge?.remove();
    badge = h('button', {
      className: BADGE_CLASS,
      text: label(prov),
      title: tooltip(prov),
      dataset: { provenance: key, sessionId: prov.session_id, checkpointId: prov.checkpoint_id, op: prov.op },
      onClick: () => void this.show(cell, prov)
    });
    cell.node.append(badge);
  }

  /** The agent's change to the cell, with "Restore cell". */
  private async show(cell: Cell, prov: IProvenance): Promise<void> {
    const cellId = cell.model.id;
    let history: ICellHistory;
    try {
      history = await this.api.cell(prov.session_id, prov.checkpoint_id, cellId, this.panel.context.path);
    } catch (err) {
      await showErrorMessage('Agent change', String((err as Error).message ?? err));
      return;
    }
    const edited = sourceOf(history.after) !== cell.model.sharedModel.getSource();
    const body = new Widget();
    body.addClass('jp-AgentMagic-cellHistory');
    body.node.append(
      h('p', { text: tooltip(prov).replace(/ Click.*$/, '') }),
      h('p', { text: `What the agent did (${history.ops.join(', ')}):` }),
      diffView(history.diff)
    );
    if (edited) {
      body.node.append(
        h('p', { className: 'jp-AgentMagic-conflict', text: 'The cell changed since; restoring it discards those changes too.' })
      );
    }
    const restoreLabel = history.before ? 'Restore cell' : 'Remove cell';
    const answer = await showDialog({
      title: `Cell ${cellId}: agent session ${shortId(prov.session_id)}`,
      body,
      buttons: [Dialog.cancelButton({ label: 'Close' }), Dialog.warnButton({ label: restoreLabel })],
      // Enter (and the focus) go to Close: changing the notebook takes a deliberate click.
      defaultButton: 0,
      hasClose: true
    });
    if (!answer.button.accept) {
      return;
    }
    const model = this.panel.context.model;
    const index = model.sharedModel.cells.findIndex(c => c.id === cellId);
    const ok = applyEdit(model, {
      op: history.before ? 'replace' : 'delete',
      cell_id: cellId,
      before_cell: null,
      after_cell: history.before,
      index: Math.max(index, 0),
      prev_cell_id: null
    });
    if (!ok) {
      await showErrorMessage('Agent change', `Cell ${cellId} is no longer in the notebook.`);
    }
  }

  private _timer: number | null = null;
  private _disposed = false;
}

const RERUN_CLASS = 'jp-AgentMagic-rerun';
/** Sent by the widgets' cell links; answered (prevented) by the notebook holding the cell. */
export const SELECT_CELL_EVENT = 'agent-magic:select-cell';
/** Links to cells a rewind made stale, in outputs (the slider's result, `%agent rewind`). */
const STALE_LINK = '[data-am-stale-cell]';

/**
 * "Re-run" markers on the cells a rewind restored after the kernel had run them
 * (their variables may not match the restored code). The outputs that list
 * those cells carry `data-am-stale-*` attributes: the cell id, the notebook
 * (relative to this one) and `since`, the kernel's execution count at the
 * rewind. A marker stays until the cell runs again (an execution count of at
 * least `since`) or the kernel restarts; clicking it, or a link to the cell,
 * selects the cell.
 */
export class StaleMarkers implements IDisposable {
  constructor(private readonly panel: NotebookPanel) {
    this._observer = new MutationObserver(() => this.schedule());
    this._observer.observe(panel.content.node, { childList: true, subtree: true });
    panel.content.node.addEventListener(SELECT_CELL_EVENT, this._onSelect);
    panel.content.node.addEventListener('click', this._onClick, true);
    panel.sessionContext.statusChanged.connect(this.onKernelStatus, this);
    void panel.context.ready.then(() => {
      if (!this._disposed) {
        panel.content.modelContentChanged.connect(this.schedule, this);
        this.schedule();
      }
    });
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
    this.panel.content.node.removeEventListener(SELECT_CELL_EVENT, this._onSelect);
    this.panel.content.node.removeEventListener('click', this._onClick, true);
    this.panel.sessionContext.statusChanged.disconnect(this.onKernelStatus, this);
    if (!this.panel.isDisposed) {
      this.panel.content.modelContentChanged.disconnect(this.schedule, this);
    }
    this._watched.forEach(model => model.stateChanged.disconnect(this.schedule, this));
    this._watched.clear();
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
  }

  /** Select the cell with this id, scrolled into view; false if it is not in this notebook. */
  select(cellId: string): boolean {
    const notebook = this.panel.content;
    const index = notebook.widgets.findIndex(c => c.model.id === cellId);
    if (index < 0) {
      return false;
    }
    notebook.deselectAll();
    notebook.activeCellIndex = index;
    notebook.mode = 'command';
    void notebook.scrollToItem(index, 'center');
    notebook.activate();
    return true;
  }

  private onKernelStatus(_: unknown, status: string): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // A new kernel has no variables to be stale: drop every marker shown so far.
      for (const key of this.staleKeys()) {
        this._dropped.add(key);
      }
      this.schedule();
    }
  }

  private schedule(): void {
    if (this._timer !== null || this._disposed) {
      return;
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      this.render();
    }, 100);
  }

  /** Whether a link's notebook (relative to this one) is this notebook. */
  private isHere(link: HTMLElement): boolean {
    // data-am-stale-href: the link as written (JupyterLab rewrites a Markdown link's href).
    const href = link.dataset.amStaleHref ?? link.getAttribute('href') ?? '';
    const rel = decodeURIComponent(href.split('#')[0]);
    if (!rel) {
      return true;
    }
    const here = this.panel.context.path;
    return PathExt.normalize(PathExt.join(PathExt.dirname(here), rel)) === PathExt.normalize(here);
  }

  /** "cellId:since" of every stale-cell link in this notebook's outputs that names a cell of it. */
  private staleKeys(): Set<string> {
    const keys = new Set<string>();
    this.panel.content.node.querySelectorAll<HTMLElement>(STALE_LINK).forEach(link => {
      const id = link.dataset.amStaleCell;
      if (id && this.isHere(link)) {
        keys.add(`${id}:${Number(link.dataset.amStaleSince ?? 0)}`);
      }
    });
    return keys;
  }

  private render(): void {
    if (this._disposed || this.panel.isDisposed) {
      return;
    }
    const since = new Map<string, number>();
    for (const key of this.staleKeys()) {
      if (this._dropped.has(key)) {
        continue;
      }
      const cut = key.lastIndexOf(':');
      const id = key.slice(0, cut);
      since.set(id, Math.max(since.get(id) ?? 0, Number(key.slice(cut + 1))));
    }
    const present = new Set(this.panel.content.widgets.map(c => c.model));
    this._watched.forEach(model => {
      if (!present.has(model)) {
        model.stateChanged.disconnect(this.schedule, this);
        this._watched.delete(model);
      }
    });
    for (const cell of this.panel.content.widgets) {
      const model = cell.model;
      if (!this._watched.has(model)) {
        this._watched.add(model);
        model.stateChanged.connect(this.schedule, this);
      }
      const after = since.get(model.id);
      const count = model.type === 'code' ? (model as ICodeCellModel).executionCount : null;
      const stale = after !== undefined && !(count !== null && count >= after);
      let marker = cell.node.querySelector<HTMLElement>(`:scope > .${RERUN_CLASS}`);
      if (!stale) {
        marker?.remove();
        continue;
      }
      if (!marker) {
        marker = h('button', {
          className: RERUN_CLASS,
          text: 're-run',
          title:
            'A rewind restored this cell after the kernel had run it: its variables may not match the code. ' +
            'Run the cell again (this mark goes away when it runs).',
          dataset: { cellId: model.id },
          onClick: () => void this.select(model.id)
        });
        cell.node.append(marker);
      }
    }
  }

  private _onSelect = (event: Event): void => {
    const detail = (event as CustomEvent<{ cell_id?: string }>).detail;
    if (detail?.cell_id && this.select(detail.cell_id)) {
      event.preventDefault();
      event.stopPropagation();
    }
  };

  /** A stale-cell link in a Markdown output (`%agent rewind`): select the cell instead of following the link. */
  private _onClick = (event: MouseEvent): void => {
    const link = (event.target as Element | null)?.closest<HTMLElement>(`a${STALE_LINK}`);
    if (!link || link.closest('.am-widget') || !this.isHere(link)) {
      return; // widgets handle their own links (with SELECT_CELL_EVENT)
    }
    const id = link.dataset.amStaleCell ?? '';
    if (this.select(id)) {
      event.preventDefault();
      event.stopPropagation();
    }
  };

  private readonly _observer: MutationObserver;
  private readonly _dropped = new Set<string>();
  /** Cell models whose state (execution count) this listens to. */
  private readonly _watched = new Set<ICellModel>();
  private _timer: number | null = null;
  private _disposed = false;
}
