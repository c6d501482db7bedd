/**
 * Cell edits applied to an open notebook's model, with the same result as
 * agent_magic's nbformat path (agent_magic/tools/notebook.py).
 *
 * The edit carries the cell as the kernel computed it (`after_cell`), so a
 * replaced code cell arrives with no outputs and no execution count, and a new
 * cell with the id the kernel chose. Everything happens in one model
 * transaction (one undo step); cells the edit does not name are not touched,
 * so the person's unsaved edits elsewhere survive. Edits are idempotent by
 * cell id, so two views of one shared model may both apply them.
 */

import type * as nbformat from '@jupyterlab/nbformat';
import type { INotebookModel } from '@jupyterlab/notebook';
import type { ISharedCell, ISharedNotebook } from '@jupyter/ydoc';
import type { PartialJSONObject } from '@lumino/coreutils';

import { fromModelJSON, toModelCell, toModelNotebook } from './convert';
import type { ICellEdit } from './protocol';

function indexOf(shared: ISharedNotebook, cellId: string): number {
  return shared.cells.findIndex(c => c.id === cellId);
}

function replaceMetadata(cell: ISharedCell, metadata: PartialJSONObject): void {
  const current = cell.getMetadata() as PartialJSONObject;
  for (const key of Object.keys(current)) {
    if (!(key in metadata)) {
      cell.deleteMetadata(key);
    }
  }
  cell.setMetadata(metadata as nbformat.IBaseCellMetadata);
}

/** Update `target` in place to be `cell` (same cell type; `cell` in the model's form). */
function overwrite(target: ISharedCell, cell: nbformat.ICell): void {
  if (cell.cell_type !== 'code') {
    // Attachments before the source that refers to them, or the page fetches `attachment:…`.
    const withAttachments = target as ISharedCell & {
      setAttachments?(a: nbformat.IAttachments | undefined): void;
    };
    withAttachments.setAttachments?.((cell as nbformat.IMarkdownCell).attachments ?? undefined);
  }
  target.setSource(cell.source as string);
  replaceMetadata(target, (cell.metadata ?? {}) as PartialJSONObject);
  if (cell.cell_type === 'code') {
    const code = target as ISharedCell & {
      setOutputs(outputs: nbformat.IOutput[]): void;
      execution_count: nbformat.ExecutionCount;
    };
    const c = cell as nbformat.ICodeCell;
    code.setOutputs(c.outputs ?? []);
    code.execution_count = c.execution_count ?? null;
  }
}

/**
 * Apply one cell edit to an open notebook. Returns false when it cannot be
 * applied as described (the cell to replace is gone): the kernel then uses
 * the file instead.
 */
export function applyEdit(model: INotebookModel, edit: ICellEdit): boolean {
  const shared = model.sharedModel;
  let ok = true;
  const cell = edit.after_cell ? toModelCell(edit.after_cell) : null;
  shared.transact(() => {
    const at = indexOf(shared, edit.cell_id);
    if (edit.op === 'delete') {
      if (at >= 0) {
        shared.deleteCell(at);
      }
      return;
    }
    if (!cell) {
      ok = false;
      return;
    }
    if (edit.op === 'insert') {
      if (at >= 0) {
        return; // already there (another view of the same model applied it)
      }
      let pos: number;
      if (edit.prev_cell_id === null) {
        pos = 0;
      } else {
        const prev = indexOf(shared, edit.prev_cell_id);
        pos = prev >= 0 ? prev + 1 : Math.min(edit.index, shared.cells.length);
      }
      shared.insertCell(pos, cell);
      return;
    }
    // replace
    if (at < 0) {
      ok = false;
      return;
    }
    const target = shared.cells[at];
    if (target.cell_type === cell.cell_type) {
      overwrite(target, cell);
    } else {
      shared.deleteCell(at);
      shared.insertCell(at, cell);
    }
  });
  return ok;
}

/** Replace every cell (and the notebook metadata) by those of `nb`. */
export function replaceAll(
  model: INotebookModel,
  nb: nbformat.INotebookContent
): boolean {
  if (!Array.isArray(nb.cells)) {
    return false;
  }
  const content = toModelNotebook(nb);
  const shared = model.sharedModel;
  shared.transact(() => {
    shared.deleteCellRange(0, shared.cells.length);
    shared.insertCells(0, content.cells);
    if (content.metadata) {
      shared.setMetadata(content.metadata);
    }
  });
  return true;
}

/** The open notebook's content as nbformat JSON (what the person sees, saved or not). */
export function readNotebook(model: INotebookModel): nbformat.INotebookContent {
  return fromModelJSON(model.toJSON() as nbformat.INotebookContent);
}
