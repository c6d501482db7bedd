/**
 * The agent-magic server extension's REST API (agent_magic/_server_ext.py).
 *
 * Requests go through ServerConnection, so they carry the server's token or
 * login cookie and the XSRF header like every other Jupyter API call.
 */

import type * as nbformat from '@jupyterlab/nbformat';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { LiveOp } from './protocol';

/** A stored session, as `SessionInfo` serialises. */
export interface ISessionInfo {
  session_id: string;
  summary: string;
  title: string | null;
  first_prompt: string | null;
  created_at: number;
  last_modified: number;
  num_turns: number;
  cwd: string;
  scope: string;
  parent_session_id: string | null;
  forked_at: string | null;
  tag: string | null;
  model: string | null;
  total_cost_usd: number | null;
  cost_known: boolean;
}

export interface ISessionList {
  scope: string;
  current: string | null;
  sessions: ISessionInfo[];
}

export interface ICheckpoint {
  checkpoint_id: string;
  turn: number;
  timestamp: string;
  prompt: string;
  files: string[];
  cells: string[];
  /** Kernel variables the agent's code could change in that turn (snapshotted before it ran). */
  variables?: string[];
}

export interface ICellChange {
  cell_id: string;
  action: string;
  diff: string;
}

export interface IFileChange {
  path: string;
  action: string;
  diff: string;
  cells: ICellChange[];
  note: string | null;
}

export interface IRewindResult {
  checkpoint_id: string;
  dry_run: boolean;
  ok: boolean;
  summary: string;
  changes: IFileChange[];
  conflicts: { path: string; reason: string; cell_id: string | null }[];
  unrestorable: string[];
  dirs_removed?: string[];
  dirs_created?: string[];
  notes: string[];
  new_session_id: string | null;
  /** The kernel's variables: always empty from the server, which has no kernel (see kernelvars.ts). */
  variables: unknown[];
  /** Set when the turns undone changed kernel variables that this (server-side) rewind leaves alone. */
  kernel_note: string | null;
  /** Edits for the notebooks open in this browser, to apply to their models. */
  live: { path: string; ops: LiveOp[] }[];
}

export interface ICellHistory {
  checkpoint_id: string;
  cell_id: string;
  ops: string[];
  before: nbformat.ICell | null;
  after: nbformat.ICell | null;
  diff: string;
}

/** An error answer of the API, with the server's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

/** Client of `/agent-magic/api`. */
export class SessionsApi {
  constructor(
    private readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  private async call<T>(
    path: string,
    init: RequestInit = {},
    query: Record<string, string> = {}
  ): Promise<T> {
    let url = URLExt.join(this.settings.baseUrl, 'agent-magic/api', path);
    const params = new URLSearchParams(query).toString();
    if (params) {
      url += '?' + params;
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (err) {
      throw new ApiError(0, `The Jupyter server did not answer: ${String(err)}`);
    }
    if (response.status === 204) {
      return undefined as T;
    }
    let data: unknown = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message =
        data && typeof data === 'object' && 'message' in data
          ? String((data as { message: unknown }).message)
          : response.statusText;
      if (response.status === 404 && !data) {
        throw new ApiError(
          404,
          'The agent-magic server extension is not enabled: run `jupyter server extension enable agent_magic` and restart JupyterLab.'
        );
      }
      throw new ApiError(response.status, message);
    }
    return data as T;
  }

  private post<T>(path: string, body: unknown, method = 'POST'): Promise<T> {
    return this.call<T>(path, {
      method,
      body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  config(): Promise<{ version: string; root_dir: string }> {
    return this.call('config');
  }

  sessions(notebookPath: string): Promise<ISessionList> {
    return this.call('sessions', {}, { path: notebookPath });
  }

  rename(sessionId: string, title: string): Promise<ISessionInfo> {
    return this.post(`sessions/${sessionId}`, { title }, 'PATCH');
  }

  remove(sessionId: string): Promise<void> {
    return this.call(`sessions/${sessionId}`, { method: 'DELETE' });
  }

  fork(
    sessionId: string,
    notebookPath: string,
    title?: string
  ): Promise<{ session_id: string; session: ISessionInfo }> {
    return this.post(`sessions/${sessionId}/fork`, { path: notebookPath, title });
  }

  resume(sessionId: string, notebookPath: string): Promise<{ current: string }> {
    return this.post(`sessions/${sessionId}/resume`, { path: notebookPath });
  }

  checkpoints(sessionId: string): Promise<{ checkpoints: ICheckpoint[] }> {
    return this.call(`sessions/${sessionId}/checkpoints`);
  }

  rewind(
    sessionId: string,
    options: {
      checkpoint_id: string;
      dry_run: boolean;
      conversation?: boolean;
      force?: boolean;
      open: Record<string, nbformat.INotebookContent>;
    }
  ): Promise<IRewindResult> {
    return this.post(`sessions/${sessionId}/rewind`, options);
  }

  cell(
    sessionId: string,
    checkpointId: string,
    cellId: string,
    notebookPath: string
  ): Promise<ICellHistory> {
    return this.call(`sessions/${sessionId}/cell`, {}, {
      checkpoint: checkpointId,
      cell_id: cellId,
      path: notebookPath
    });
  }
}
