/**
 * Rewinding from the browser: preview (a dry run, with diffs), confirm, rewind,
 * and apply the rewind's edits to the notebooks open here, live.
 *
 * The server rewinds files and cells; the notebook's kernel, when one runs here
 * with agent_magic loaded, previews and restores the variables (kernelvars.ts).
 */

import { Dialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import type { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import type { IRewindResult, SessionsApi } from './api';
import { diffView, h, shortId } from './dom';
import { type KernelAnswer, rewindKernelVariables, variableLines } from './kernelvars';
import type { OpenNotebooks } from './notebooks';

/**
 * The kernel-variable part of a preview or a result: a line per variable, or one
 * line saying why the kernel was not rewound; null when there is nothing to say
 * (the turns undone changed no variables).
 */
export function kernelSection(answer: KernelAnswer, server: IRewindResult, dryRun: boolean): HTMLElement | null {
  if (!answer.ok) {
    // The server's note is set only when the turns undone have variable snapshots.
    if (!server.kernel_note) {
      return null;
    }
    const verb = dryRun ? 'will not be' : 'were not';
    return h('section', { className: 'jp-AgentMagic-kernelVars', dataset: { kernel: 'unavailable' } }, [
      h('p', { className: 'jp-AgentMagic-conflict', text: `Kernel variables ${verb} rewound: ${answer.reason}` })
    ]);
  }
  const lines = variableLines(answer.rewind);
  if (!lines.length) {
    return null;
  }
  const list = h('ul', { className: 'jp-AgentMagic-variables' });
  for (const line of lines) {
    const cls = line.kind === 'not-restorable' || line.kind === 'warning' ? 'jp-AgentMagic-conflict' : 'jp-AgentMagic-variable';
    list.append(h('li', { className: cls, text: line.text, dataset: { kind: line.kind, name: line.name ?? '' } }));
  }
  const n = answer.rewind.variables.length;
  const title = dryRun ? `Kernel variables (${n} to put back)` : `Kernel variables (${n} put back)`;
  return h('section', { className: 'jp-AgentMagic-kernelVars', dataset: { kernel: 'answered' } }, [h('h4', { text: title }), list]);
}

/**
 * The server's summary, which cannot count the kernel's variables: when files
 * and cells are untouched, say just that, not "Nothing to change".
 */
function filesSummary(result: IRewindResult): string {
  const untouched = [result.changes, result.conflicts, result.unrestorable, result.dirs_removed ?? [], result.dirs_created ?? []]
    .every(list => list.length === 0);
  if (!untouched) {
    return result.summary;
  }
  return result.dry_run ? 'No files or cells to change.' : 'No files or cells changed.';
}

/** The preview in the confirmation dialog; its value says whether to rewind the conversation too. */
class RewindPreview extends Widget implements Dialog.IBodyWidget<boolean> {
  constructor(result: IRewindResult, kernel: KernelAnswer) {
    super();
    this.addClass('jp-AgentMagic-rewindPreview');
    const variables = kernelSection(kernel, result, true);
    const summary = variables ? filesSummary(result) : result.summary;
    this.node.append(h('p', { className: 'jp-AgentMagic-summary', text: summary }));
    const node = h('div', { className: 'jp-AgentMagic-scroll' });
    this.node.append(node);
    if (variables) {
      node.append(variables);
    }
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

/** The person's view of what a rewind did: a notification, with the kernel part in "Details". */
function notifyResult(result: IRewindResult, kernel: KernelAnswer | null, label: string): void {
  const section = kernel ? kernelSection(kernel, result, false) : null;
  let message = `Rewound to before ${label}. ${section ? filesSummary(result) : result.summary}`;
  let problem = false;
  if (kernel?.ok) {
    const v = kernel.rewind;
    const missed = Object.keys(v.variables_not_restored).length;
    const parts = [
      v.variables.length ? `${v.variables.length} variable${v.variables.length === 1 ? '' : 's'} put back` : '',
      missed ? `${missed} not restorable` : ''
    ].filter(Boolean);
    if (parts.length) {
      message += ` Kernel: ${parts.join(', ')}.`;
    } else if (v.kernel_note) {
      message += ` Kernel: ${v.kernel_note}`;
    }
    problem = missed > 0 || v.variable_warnings.length > 0 || Boolean(v.kernel_note);
  } else if (section) {
    message += ` ${section.textContent ?? ''}`;
    problem = true;
  }
  const actions =
    kernel && section
      ? [
          {
            label: 'Details',
            caption: 'What the rewind did to the kernel variables',
            callback: () =>
              void showDialog({
                title: `Rewound to before ${label}`,
                body: new Widget({
                  node: h('div', { className: 'jp-AgentMagic-rewindResult' }, [kernelSection(kernel, result, false)])
                }),
                buttons: [Dialog.okButton()]
              })
          }
        ]
      : [];
  // A problem stays until dismissed; a plain success goes away by itself.
  const options = { autoClose: problem ? (false as const) : 8000, actions };
  if (problem) {
    Notification.warning(message, options);
  } else {
    Notification.success(message, options);
  }
}

/**
 * Preview a rewind of `sessionId` to before `checkpointId`, ask, and do it.
 * `kernel` is the kernel of the session's notebook if it is open here: it
 * previews and restores the variables the undone turns changed.
 * Returns true when it rewound.
 */
export async function rewindWithPreview(
  api: SessionsApi,
  notebooks: OpenNotebooks,
  sessionId: string,
  checkpointId: string,
  label: string,
  kernel: Kernel.IKernelConnection | null
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
  const kernelPreview = await rewindKernelVariables(kernel, sessionId, checkpointId, true);
  const answer = await showDialog<boolean>({
    title: `Rewind to before ${label} (session ${shortId(sessionId)})`,
    body: new RewindPreview(preview, kernelPreview),
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
  // Only what the preview showed: if the kernel could not say what it would do, it does nothing.
  const planned =
    kernelPreview.ok &&
    (kernelPreview.rewind.variables.length > 0 || Object.keys(kernelPreview.rewind.variables_not_restored).length > 0);
  const kernelResult = planned ? await rewindKernelVariables(kernel, sessionId, checkpointId, false) : null;
  if (problems.length) {
    await showErrorMessage(
      'Some cells were not restored',
      `They changed while the rewind ran:\n${problems.join('\n')}`
    );
  }
  notifyResult(result, kernelResult ?? (kernelPreview.ok ? null : kernelPreview), label);
  return true;
}
