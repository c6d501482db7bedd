/**
 * Rewinding from the browser: preview (a dry run, with diffs), confirm, rewind,
 * and apply the rewind's edits to the notebooks open here, live.
 */

import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import type { IRewindResult, SessionsApi } from './api';
import { diffView, h, shortId } from './dom';
import type { OpenNotebooks } from './notebooks';

/** The preview in the confirmation dialog; its value says whether to rewind the conversation too. */
class RewindPreview extends Widget implements Dialog.IBodyWidget<boolean> {
  constructor(result: IRewindResult) {
    super();
    this.addClass('jp-AgentMagic-rewindPreview');
    this.node.append(h('p', { className: 'jp-AgentMagic-summary', text: result.summary }));
    const node = h('div', { className: 'jp-AgentMagic-scroll' });
    this.node.append(node);
    for (const change of result.changes) {
      const section = h('section', { className: 'jp-AgentMagic-change', dataset: { path: change.path } }, [
        h('h4', { text: `${change.path}: ${change.action}` })
      ]);
      if (change.note) {
        section.append(h('p', { text: change.note }));
      }
      for (const cell of change.cells) {
        section.append(
          h('div', { className: 'jp-AgentMagic-cellChange', dataset: { cellId: cell.cell_id } }, [
            h('div', { text: `cell ${cell.cell_id}: ${cell.action}` }),
            diffView(cell.diff)
          ])
        );
      }
      if (change.diff) {
        section.append(diffView(change.diff));
      }
      node.append(section);
    }
    for (const conflict of result.conflicts) {
      node.append(
        h('p', {
          className: 'jp-AgentMagic-conflict',
          text: `Left alone: ${conflict.path}${conflict.cell_id ? ` cell ${conflict.cell_id}` : ''}: ${conflict.reason}`
        })
      );
    }
    for (const note of [...result.notes, ...result.unrestorable.map(p => `${p}: cannot be restored`)]) {
      node.append(h('p', { className: 'jp-AgentMagic-note', text: note }));
    }
    this._conversation = h('input', { attrs: { type: 'checkbox' } });
    this.node.append(
      h('label', { className: 'jp-AgentMagic-conversation' }, [
        this._conversation,
        ' Also rewind the conversation (the session continues in a fork)'
      ])
    );
  }

  getValue(): boolean {
    return this._conversation.checked;
  }

  private _conversation: HTMLInputElement;
}

/** Apply a rewind's live edits to the open notebooks; returns the problems. */
export async function applyLive(
  notebooks: OpenNotebooks,
  result: IRewindResult
): Promise<string[]> {
  const problems: string[] = [];
  for (const { path, ops } of result.live) {
    for (const op of ops) {
      const answer = await notebooks.handle(path, op);
      if (!answer.ok) {
        problems.push(`${path}: ${answer.error ?? 'not applied'}`);
        break;
      }
    }
  }
  return problems;
}

/**
 * Preview a rewind of `sessionId` to before `checkpointId`, ask, and do it.
 * Returns true when it rewound.
 */
export async function rewindWithPreview(
  api: SessionsApi,
  notebooks: OpenNotebooks,
  sessionId: string,
  checkpointId: string,
  label: string
): Promise<boolean> {
  let preview: IRewindResult;
  try {
    preview = await api.rewind(sessionId, {
      checkpoint_id: checkpointId,
      dry_run: true,
      open: notebooks.contents()
    });
  } catch (err) {
    await showErrorMessage('Rewind preview failed', String((err as Error).message ?? err));
    return false;
  }
  const answer = await showDialog<boolean>({
    title: `Rewind to before ${label} (session ${shortId(sessionId)})`,
    body: new RewindPreview(preview),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Rewind' })],
    // Enter must not rewind: the safe action is the default.
    defaultButton: 0,
    hasClose: true
  });
  if (!answer.button.accept) {
    return false;
  }
  let result: IRewindResult;
  try {
    result = await api.rewind(sessionId, {
      checkpoint_id: checkpointId,
      dry_run: false,
      conversation: answer.value ?? false,
      open: notebooks.contents()
    });
  } catch (err) {
    await showErrorMessage('Rewind failed', String((err as Error).message ?? err));
    return false;
  }
  const problems = await applyLive(notebooks, result);
  if (problems.length) {
    await showErrorMessage(
      'Some cells were not restored',
      `They changed while the rewind ran:\n${problems.join('\n')}`
    );
  }
  return true;
}
