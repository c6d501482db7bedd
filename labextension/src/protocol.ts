/**
 * The messages of the `agent_magic` comm, kernel <-> JupyterLab.
 *
 * Every message is `{v: 1, type, ...}`; agent_magic/notebook/_comm.py holds
 * the kernel's end and the full description.
 */

import type * as nbformat from '@jupyterlab/nbformat';
import type { PartialJSONObject } from '@lumino/coreutils';

/** The comm target name, registered by the kernel and by this extension. */
export const TARGET = 'agent_magic';

/** Version of the message format; messages with another `v` are refused. */
export const PROTOCOL_VERSION = 1;

/** One cell edit, as the kernel's `CellEdit` dataclass serialises it. */
export interface ICellEdit {
  op: 'replace' | 'insert' | 'delete';
  cell_id: string;
  before_cell: nbformat.ICell | null;
  after_cell: nbformat.ICell | null;
  /** The cell's position before the edit (an insert: where it goes). */
  index: number;
  /** The id of the cell just before it (null: at the start). */
  prev_cell_id: string | null;
}

/** What to do to an open notebook: the same shape for kernel requests and REST rewinds. */
export type LiveOp =
  | { method: 'read' }
  | { method: 'apply'; edit: ICellEdit }
  | { method: 'replace_all'; notebook: nbformat.INotebookContent };

/** A request from the kernel, on the comm. */
export type KernelRequest = LiveOp & {
  v: number;
  type: 'request';
  id: string;
  /** The notebook's path relative to the server root (the front end's own path for it). */
  path: string;
};

/** Messages the kernel sends. */
export type KernelMessage =
  | { v: number; type: 'announce' }
  | { v: number; type: 'welcome'; version: string }
  | { v: number; type: 'error'; error: string }
  | KernelRequest;

/** The cell metadata agent_magic records on the cells the agent inserted or replaced. */
export interface IProvenance {
  session_id: string;
  turn: number | null;
  checkpoint_id: string;
  op: 'insert' | 'replace';
}

/** The provenance recorded in a cell's metadata, if any. */
export function provenanceOf(
  metadata: PartialJSONObject | undefined
): IProvenance | null {
  const raw = metadata?.['agent_magic'];
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    return null;
  }
  const p = raw as PartialJSONObject;
  if (typeof p.session_id !== 'string' || typeof p.checkpoint_id !== 'string') {
    return null;
  }
  return {
    session_id: p.session_id,
    turn: typeof p.turn === 'number' ? p.turn : null,
    checkpoint_id: p.checkpoint_id,
    op: p.op === 'insert' ? 'insert' : 'replace'
  };
}
