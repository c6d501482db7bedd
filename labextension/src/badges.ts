/**
 * Cell provenance: a small badge on every cell the agent inserted or replaced
 * (from `metadata.agent_magic`, saved with the notebook), with a tooltip, and
 * on click the agent's change to that cell as a diff, and "Restore cell",
 * which puts the cell back as it was before that turn (an ordinary edit in
 * the open notebook: unsaved, and undoable with Ctrl+Z).
 */

import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import type { Cell } from '@jupyterlab/cells';
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
