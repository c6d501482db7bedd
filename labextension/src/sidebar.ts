/**
 * The "Agent sessions" sidebar: the active notebook's sessions as a tree of
 * forks, with their turns, last activity and cost; resume, fork, rename,
 * delete; a session's checkpoints with rewind (previewed first).
 *
 * Its data comes from the server extension, so it works with no kernel and
 * across kernel restarts. It follows the active notebook, and refreshes when
 * that notebook's kernel goes idle (a turn ended), when shown, and every few
 * seconds while visible (sessions run from the command line appear too).
 */

import { Dialog, InputDialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Time } from '@jupyterlab/coreutils';
import type { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel } from '@jupyterlab/services';
import { listIcon } from '@jupyterlab/ui-components';
import type { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import type { ICheckpoint, ISessionInfo, ISessionList, SessionsApi } from './api';
import { h, shortId } from './dom';
import { pathInRoot } from './kernelvars';
import type { OpenNotebooks } from './notebooks';
import { rewindWithPreview } from './rewind';

/** The id of the sessions panel in the left sidebar; browser tests select on it. */
export const SESSIONS_PANEL_ID = 'agent-magic-sessions';

const POLL_MS = 10_000;

/** "1 turn", "2 turns". */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function describe(info: ISessionInfo): string {
  const parts = [shortId(info.session_id), plural(info.num_turns, 'turn')];
  if (info.cost_known && info.total_cost_usd !== null) {
    parts.push(`$${info.total_cost_usd.toFixed(4)}`);
  } else {
    parts.push('cost unknown');
  }
  parts.push(Time.formatHuman(new Date(info.last_modified)));
  return parts.join(' · ');
}

export class SessionsPanel extends Widget {
  constructor(
    private readonly api: SessionsApi,
    private readonly notebooks: OpenNotebooks,
    tracker: INotebookTracker
  ) {
    super();
    this.id = SESSIONS_PANEL_ID;
    this.addClass('jp-AgentMagic-sessions');
    this.title.caption = 'Agent sessions';
    this.title.label = 'Agent sessions';
    this.title.icon = listIcon;
    tracker.currentChanged.connect((_, panel) => this.follow(panel));
    this.follow(tracker.currentWidget);
  }

  /** Show the sessions of this notebook (null: none is open). */
  follow(panel: NotebookPanel | null): void {
    if (panel === this._panel) {
      return;
    }
    this._panel?.sessionContext.statusChanged.disconnect(this.onKernelStatus, this);
    this._panel = panel;
    this._data = null;
    this._error = null;
    this._expanded.clear();
    this._checkpoints.clear();
    panel?.sessionContext.statusChanged.connect(this.onKernelStatus, this);
    panel?.disposed.connect(() => {
      if (this._panel === panel) {
        this.follow(null);
      }
    });
    this.render();
    if (panel) {
      void panel.context.ready.then(() => this.refresh());
    }
  }

  /** Reload the sessions (and expanded checkpoints) from the server. */
  async refresh(): Promise<void> {
    const panel = this._panel;
    if (!panel || !panel.context.isReady) {
      this.render();
      return;
    }
    const path = panel.context.path;
    try {
      const data = await this.api.sessions(path);
      const cps = new Map<string, ICheckpoint[]>();
      for (const sid of this._expanded) {
        if (data.sessions.some(s => s.session_id === sid)) {
          cps.set(sid, (await this.api.checkpoints(sid)).checkpoints);
        }
      }
      if (this._panel !== panel) {
        return; // the active notebook changed meanwhile
      }
      this._data = data;
      this._checkpoints = cps;
      this._error = null;
    } catch (err) {
      this._error = String((err as Error).message ?? err);
    }
    this.render();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refresh();
    this._poll = window.setInterval(() => void this.refresh(), POLL_MS);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    if (this._poll !== null) {
      window.clearInterval(this._poll);
      this._poll = null;
    }
  }

  private onKernelStatus(_: unknown, status: Kernel.Status): void {
    if (status !== 'idle' || !this.isVisible) {
      return;
    }
    if (this._idleTimer !== null) {
      window.clearTimeout(this._idleTimer);
    }
    this._idleTimer = window.setTimeout(() => {
      this._idleTimer = null;
      void this.refresh();
    }, 300);
  }

  // -- rendering ---------------------------------------------------------------
  private render(): void {
    const node = this.node;
    node.replaceChildren();
    const panel = this._panel;
    if (!panel) {
      node.append(
        h('p', {
          className: 'jp-AgentMagic-sessions-empty',
          text: 'No sessions yet',
          title: 'Open a notebook to see its agent sessions'
        })
      );
      return;
    }
    node.append(
      h('div', { className: 'jp-AgentMagic-header' }, [
        h('span', { className: 'jp-AgentMagic-notebook', text: panel.context.path, title: this._data?.scope ?? '' }),
        h('button', {
          className: 'jp-AgentMagic-button',
          text: 'Refresh',
          dataset: { action: 'refresh' },
          onClick: () => void this.refresh()
        })
      ])
    );
    if (this._error) {
      node.append(h('p', { className: 'jp-AgentMagic-error', text: this._error }));
    }
    const data = this._data;
    if (!data) {
      node.append(h('p', { className: 'jp-AgentMagic-sessions-empty', text: 'Loading…' }));
      return;
    }
    if (!data.sessions.length) {
      node.append(
        h('p', {
          className: 'jp-AgentMagic-sessions-empty',
          text: 'No sessions yet',
          title: 'Run a %%agent cell in this notebook to start one'
        })
      );
      return;
    }
    const ids = new Set(data.sessions.map(s => s.session_id));
    const children = new Map<string, ISessionInfo[]>();
    const roots: ISessionInfo[] = [];
    for (const s of data.sessions) {
      if (s.parent_session_id && ids.has(s.parent_session_id)) {
        const list = children.get(s.parent_session_id) ?? [];
        list.push(s);
        children.set(s.parent_session_id, list);
      } else {
        roots.push(s);
      }
    }
    const tree = h('ul', { className: 'jp-AgentMagic-tree' });
    for (const s of roots) {
      tree.append(this.renderSession(s, children, data));
    }
    node.append(tree);
  }

  private renderSession(
    info: ISessionInfo,
    children: Map<string, ISessionInfo[]>,
    data: ISessionList
  ): HTMLElement {
    const sid = info.session_id;
    const current = data.current === sid;
    const expanded = this._expanded.has(sid);
    const action = (name: string, label: string, title: string, fn: () => Promise<void>) =>
      h('button', {
        className: 'jp-AgentMagic-button',
        text: label,
        title,
        dataset: { action: name },
        onClick: () => void this.guard(fn)
      });
    const row = h('div', { className: 'jp-AgentMagic-row' }, [
      // The name shrinks with an ellipsis; the "current" pill beside it keeps its size.
      h('div', { className: 'jp-AgentMagic-titleRow' }, [
        h('span', {
          className: 'jp-AgentMagic-title',
          // The summary: the title, an untitled fork's "fork of … at turn N", else the first prompt.
          text: info.summary,
          title: [info.summary, info.first_prompt && info.first_prompt !== info.summary ? `First prompt: ${info.first_prompt}` : '']
            .filter(Boolean)
            .join('\n')
        }),
        current
          ? h('span', { className: 'jp-AgentMagic-current', text: 'current', title: 'The next %%agent cell continues this session' })
          : null
      ]),
      h('div', { className: 'jp-AgentMagic-meta', text: describe(info), title: info.session_id }),
      h('div', { className: 'jp-AgentMagic-actions' }, [
        current ? null : action('resume', 'Resume', 'Continue this session in the next %%agent cell', () => this.resume(sid)),
        action('fork', 'Fork', 'Copy this session and continue the copy', () => this.fork(sid)),
        action('rename', 'Rename', 'Give this session a title', () => this.rename(info)),
        action('delete', 'Delete', 'Delete this session and its checkpoints', () => this.remove(info)),
        action('checkpoints', expanded ? 'Hide checkpoints' : 'Checkpoints', 'Turns you can rewind to', async () => {
          if (expanded) {
            this._expanded.delete(sid);
          } else {
            this._expanded.add(sid);
          }
          await this.refresh();
        })
      ])
    ]);
    const li = h('li', {
      className: 'jp-AgentMagic-session' + (current ? ' jp-mod-current' : ''),
      dataset: { sessionId: sid }
    }, [row]);
    if (expanded) {
      li.append(this.renderCheckpoints(info));
    }
    const forks = children.get(sid);
    if (forks?.length) {
      const ul = h('ul', { className: 'jp-AgentMagic-forks' });
      for (const f of forks) {
        ul.append(this.renderSession(f, children, data));
      }
      li.append(ul);
    }
    return li;
  }

  private renderCheckpoints(info: ISessionInfo): HTMLElement {
    const sid = info.session_id;
    const cps = this._checkpoints.get(sid) ?? [];
    const list = h('ol', { className: 'jp-AgentMagic-checkpoints' });
    if (!cps.length) {
      list.append(h('li', { className: 'jp-AgentMagic-sessions-empty', text: 'No checkpoints (checkpointing was off)' }));
    }
    for (const cp of cps) {
      let changed = cp.cells.length ? plural(cp.cells.length, 'cell') : plural(cp.files.length, 'file');
      if (cp.variables?.length) {
        changed += `, ${plural(cp.variables.length, 'variable')}`;
      }
      list.append(
        h('li', { className: 'jp-AgentMagic-checkpoint', dataset: { checkpointId: cp.checkpoint_id } }, [
          h('div', { className: 'jp-AgentMagic-title', text: `Turn ${cp.turn}: ${cp.prompt}`, title: cp.prompt }),
          h('div', {
            className: 'jp-AgentMagic-meta',
            text: `${shortId(cp.checkpoint_id)} · ${cp.timestamp ? Time.formatHuman(cp.timestamp) : ''} · ${changed}`
          }),
          h('button', {
            className: 'jp-AgentMagic-button',
            text: 'Rewind…',
            title: 'Preview putting files, cells and kernel variables back as they were before this turn',
            dataset: { action: 'rewind' },
            onClick: () =>
              void this.guard(async () => {
                const kernel = await this.kernelOf(info);
                if (await rewindWithPreview(this.api, this.notebooks, sid, cp.checkpoint_id, `turn ${cp.turn}`, kernel)) {
                  await this.refresh();
                }
              })
          })
        ])
      );
    }
    return list;
  }

  // -- actions -------------------------------------------------------------------
  private async guard(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      await showErrorMessage('Agent sessions', String((err as Error).message ?? err));
    }
  }

  /** The kernel of the session's notebook (its scope) if that notebook is open here. */
  private async kernelOf(info: ISessionInfo): Promise<Kernel.IKernelConnection | null> {
    // The server mapped the notebook this sidebar follows to its scope (symlinks resolved): trust that first.
    let panel = this._panel && this._data?.scope === info.scope ? this._panel : null;
    if (!panel) {
      this._root ??= this.api.config().then(c => c.root_dir);
      try {
        const path = pathInRoot(await this._root, info.scope);
        panel = path !== null ? this.notebooks.find(path) : null;
      } catch {
        this._root = null; // ask again next time; without the root, only the followed notebook is found
      }
    }
    return panel?.sessionContext.session?.kernel ?? null;
  }

  private path(): string {
    if (!this._panel) {
      throw new Error('No notebook is open.');
    }
    return this._panel.context.path;
  }

  private async resume(sid: string): Promise<void> {
    await this.api.resume(sid, this.path());
    await this.refresh();
  }

  private async fork(sid: string): Promise<void> {
    const path = this.path();
    const { session_id } = await this.api.fork(sid, path);
    // As `%agent fork`: the next %%agent cell continues the fork.
    await this.api.resume(session_id, path);
    await this.refresh();
  }

  private async rename(info: ISessionInfo): Promise<void> {
    const answer = await InputDialog.getText({
      title: `Rename session ${shortId(info.session_id)}`,
      text: info.title ?? info.summary,
      okLabel: 'Rename'
    });
    if (answer.button.accept && answer.value && answer.value.trim()) {
      await this.api.rename(info.session_id, answer.value.trim());
      await this.refresh();
    }
  }

  private async remove(info: ISessionInfo): Promise<void> {
    const answer = await showDialog({
      title: `Delete session ${shortId(info.session_id)}?`,
      body: `“${info.summary}”, ${plural(info.num_turns, 'turn')}. Its transcript and checkpoints are deleted; files and cells stay as they are.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })],
      defaultButton: 0 // Enter keeps the session
    });
    if (answer.button.accept) {
      await this.api.remove(info.session_id);
      await this.refresh();
    }
  }

  private _panel: NotebookPanel | null = null;
  private _data: ISessionList | null = null;
  private _error: string | null = null;
  private _expanded = new Set<string>();
  private _checkpoints = new Map<string, ICheckpoint[]>();
  private _poll: number | null = null;
  private _idleTimer: number | null = null;
  private _root: Promise<string> | null = null;
}
