/**
 * The kernel-variable part of a rewind from the sidebar.
 *
 * The server rewinds files and cells, but the variables live in the notebook's
 * kernel: the sidebar asks that kernel to preview or restore them, evaluating
 * `agent_magic.notebook._kernel_state.kernel_rewind(...)` as a `user_expression`
 * of a silent execute request. That runs on the kernel's main thread, after any
 * running cell, with the rewinder `%load_ext agent_magic` registered; no comm
 * protocol is involved, so it works whenever the extension is loaded there.
 */

import type { Kernel } from '@jupyterlab/services';

/** One variable a rewind puts back (restore) or removes (delete: the undone code created it). */
export interface IKernelVariable {
  name: string;
  action: 'restore' | 'delete';
  type: string | null;
  size: number | null;
  in_place: boolean;
}

/** What `kernel_rewind` answers (the variable fields of a RewindResult). */
export interface IVariableRewind {
  loaded: boolean;
  dry_run: boolean;
  variables: IKernelVariable[];
  variables_not_restored: Record<string, string>;
  variable_warnings: string[];
  kernel_note: string | null;
}

/** The kernel answered, or why it could not (one line for the person). */
export type KernelAnswer = { ok: true; rewind: IVariableRewind } | { ok: false; reason: string };

/** How long a kernel may stay busy (a cell running) before the sidebar gives up on it. */
export const BUSY_WAIT_MS = 5_000;

/** How long the kernel may take to answer once idle (restoring GBs takes seconds). */
export const ANSWER_WAIT_MS = 120_000;

/**
 * The Python expression the kernel evaluates. It looks the module up in
 * `sys.modules` rather than importing it: a kernel where agent_magic was never
 * loaded is left untouched and answers None.
 */
export function rewindExpression(sessionId: string, checkpointId: string, dryRun: boolean): string {
  // JSON string literals are Python string literals too (JSON.stringify never writes `\/`).
  const args = [JSON.stringify(sessionId), JSON.stringify(checkpointId), dryRun ? 'True' : 'False'].join(', ');
  return (
    "(lambda m: m.kernel_rewind(" +
    args +
    ") if m is not None else None)(__import__('sys').modules.get('agent_magic.notebook._kernel_state'))"
  );
}

/**
 * A Python `str` from its repr (`text/plain` of a user expression). `kernel_rewind`
 * returns ASCII JSON, whose repr escapes only backslashes and the quote.
 */
export function fromPythonRepr(text: string): string {
  const quote = text[0];
  if (text.length < 2 || (quote !== "'" && quote !== '"') || text[text.length - 1] !== quote) {
    throw new Error(`not a Python string: ${text.slice(0, 80)}`);
  }
  return text.slice(1, -1).replace(/\\(.)/g, '$1');
}

function sleep(ms: number): { promise: Promise<'timeout'>; cancel: () => void } {
  let timer = 0;
  const promise = new Promise<'timeout'>(resolve => {
    timer = window.setTimeout(() => resolve('timeout'), ms);
  });
  return { promise, cancel: () => window.clearTimeout(timer) };
}

/** Resolves true once the kernel is idle, false if it stays busy (or goes away) for `ms`. */
async function whenIdle(kernel: Kernel.IKernelConnection, ms: number): Promise<boolean> {
  if (kernel.status === 'idle') {
    return true;
  }
  let onStatus: ((_: unknown, status: Kernel.Status) => void) | null = null;
  const idle = new Promise<boolean>(resolve => {
    onStatus = (_, status) => {
      if (status === 'idle') {
        resolve(true);
      } else if (status === 'dead') {
        resolve(false);
      }
    };
    kernel.statusChanged.connect(onStatus);
  });
  const timer = sleep(ms);
  try {
    return (await Promise.race([idle, timer.promise])) === true;
  } finally {
    timer.cancel();
    if (onStatus) {
      kernel.statusChanged.disconnect(onStatus);
    }
  }
}

/**
 * Preview (`dryRun`) or carry out the variable part of a rewind in `kernel`.
 * Never throws: a missing kernel, a busy one, or one without agent_magic is a reason.
 */
export async function rewindKernelVariables(
  kernel: Kernel.IKernelConnection | null,
  sessionId: string,
  checkpointId: string,
  dryRun: boolean
): Promise<KernelAnswer> {
  if (!kernel || kernel.isDisposed || kernel.status === 'dead') {
    return { ok: false, reason: 'no kernel is running for this notebook.' };
  }
  try {
    const wait = sleep(BUSY_WAIT_MS);
    const info = await Promise.race([kernel.info, wait.promise]);
    wait.cancel();
    if (info === 'timeout') {
      return { ok: false, reason: `the kernel did not start within ${BUSY_WAIT_MS / 1000} s.` };
    }
    if (info.language_info.name !== 'python') {
      return { ok: false, reason: `the notebook's kernel runs ${info.language_info.name}, not Python.` };
    }
    if (!(await whenIdle(kernel, BUSY_WAIT_MS))) {
      // Not sent at all: a request queued behind a long cell would rewind long after the person looked.
      return { ok: false, reason: `the kernel stayed busy for ${BUSY_WAIT_MS / 1000} s (a cell is running); try again when it is idle.` };
    }
    const future = kernel.requestExecute(
      {
        code: '',
        silent: true,
        store_history: false,
        allow_stdin: false,
        stop_on_error: false,
        user_expressions: { rewind: rewindExpression(sessionId, checkpointId, dryRun) }
      },
      true
    );
    const timer = sleep(ANSWER_WAIT_MS);
    const reply = await Promise.race([future.done, timer.promise]);
    timer.cancel();
    if (reply === 'timeout') {
      return { ok: false, reason: `the kernel did not answer within ${ANSWER_WAIT_MS / 1000} s.` };
    }
    const content = reply.content;
    if (content.status !== 'ok') {
      return { ok: false, reason: `the kernel refused the request (${content.status}).` };
    }
    const value = content.user_expressions['rewind'] as
      | { status: 'ok'; data: { 'text/plain'?: string } }
      | { status: 'error'; ename: string; evalue: string };
    if (value.status !== 'ok') {
      return { ok: false, reason: `the kernel raised ${value.ename}: ${value.evalue}` };
    }
    const text = value.data['text/plain'] ?? 'None';
    if (text === 'None') {
      return { ok: false, reason: 'agent_magic is not loaded in this kernel (run `%load_ext agent_magic`).' };
    }
    const rewind = JSON.parse(fromPythonRepr(text)) as IVariableRewind;
    if (!rewind.loaded) {
      return { ok: false, reason: rewind.kernel_note ?? 'agent_magic is not loaded in this kernel.' };
    }
    return { ok: true, rewind };
  } catch (err) {
    return { ok: false, reason: String((err as Error).message ?? err) };
  }
}

/** `12.3 MB`: a size as a person reads it, as the notebook's preview shows it. */
export function humanBytes(n: number | null): string {
  if (n === null || n === undefined) {
    return '?';
  }
  let size = n;
  for (const unit of ['B', 'KB', 'MB', 'GB']) {
    if (size < 1024 || unit === 'GB') {
      return unit === 'B' ? `${size.toFixed(0)} ${unit}` : `${size.toFixed(1)} ${unit}`;
    }
    size /= 1024;
  }
  return `${n} B`;
}

/** One line of the variable part, and its kind (for styling and for tests). */
export interface IVariableLine {
  kind: 'restore' | 'delete' | 'not-restorable' | 'warning' | 'note';
  name?: string;
  text: string;
}

/** The lines a preview or a result shows, in the notebook's words (`%agent rewind`). */
export function variableLines(rewind: IVariableRewind): IVariableLine[] {
  const lines: IVariableLine[] = [];
  for (const v of rewind.variables) {
    if (v.action === 'delete') {
      lines.push({ kind: 'delete', name: v.name, text: `delete variable ${v.name} (the undone code created it)` });
    } else {
      const how = v.in_place ? ', in place' : '';
      lines.push({
        kind: 'restore',
        name: v.name,
        text: `restore variable ${v.name} (${v.type ?? '?'}, ${humanBytes(v.size)}${how})`
      });
    }
  }
  for (const name of Object.keys(rewind.variables_not_restored).sort()) {
    lines.push({
      kind: 'not-restorable',
      name,
      text: `not restorable (variable): ${name}: ${rewind.variables_not_restored[name]}`
    });
  }
  for (const w of rewind.variable_warnings) {
    lines.push({ kind: 'warning', text: `warning: ${w}` });
  }
  if (rewind.kernel_note) {
    lines.push({ kind: 'note', text: rewind.kernel_note });
  }
  return lines;
}

/**
 * The server-relative path of a notebook from its absolute path (a session's
 * scope) and the server's root folder; null when it lies outside the root.
 */
export function pathInRoot(root: string, scope: string): string | null {
  const sep = root.includes('\\') && !root.includes('/') ? '\\' : '/';
  const prefix = root.endsWith(sep) ? root : root + sep;
  if (!scope.startsWith(prefix)) {
    return null;
  }
  return scope.slice(prefix.length).split(sep).join('/');
}
