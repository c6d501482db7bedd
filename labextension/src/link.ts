/**
 * One notebook panel's link to agent_magic in its kernel, over the `agent_magic` comm.
 *
 * The kernel announces itself when `%load_ext agent_magic` runs (a comm it
 * opens and closes at once); a page loaded later asks `comm_info` whether the
 * kernel has agent_magic's comm registered. Either way the front end then
 * opens its own comm with a `hello` listing the open notebooks, and answers the
 * kernel's requests on it. A kernel restart ends the link; the next
 * announcement starts it again. Kernels without agent_magic get no comm at all.
 */

import type { NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import { PageConfig } from '@jupyterlab/coreutils';
import { UUID, type JSONObject } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';

import type { OpenNotebooks } from './notebooks';
import { PROTOCOL_VERSION, TARGET, type KernelMessage as AgentMessage } from './protocol';

/** This page's id, sent in `hello` (one page may link to many kernels). */
const CLIENT_ID = UUID.uuid4();

/** How long to wait for the comm's kernel subshell before opening it on the main shell. */
const SUBSHELL_WAIT_MS = 3000;

export type LinkState = 'none' | 'connecting' | 'connected';

export class KernelLink implements IDisposable {
  constructor(
    private readonly panel: NotebookPanel,
    private readonly notebooks: OpenNotebooks
  ) {
    const ctx = panel.sessionContext;
    ctx.kernelChanged.connect(this.onKernelChanged, this);
    ctx.statusChanged.connect(this.onStatusChanged, this);
    notebooks.changed.connect(this.sendOpen, this);
    this.setState('none');
    void ctx.ready.then(() => this.attach(ctx.session?.kernel ?? null));
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  get state(): LinkState {
    return this._state;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this.notebooks.changed.disconnect(this.sendOpen, this);
    this.detach(true);
  }

  // -- kernel lifecycle ---------------------------------------------------
  private onKernelChanged(
    _: unknown,
    change: { newValue: Kernel.IKernelConnection | null }
  ): void {
    this.detach(false);
    this.attach(change.newValue);
  }

  private onStatusChanged(_: unknown, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // The kernel's comms are gone; it announces itself again once agent_magic is loaded.
      this.dropComm();
    }
  }

  private attach(kernel: Kernel.IKernelConnection | null): void {
    if (this._disposed || !kernel || this._kernel === kernel) {
      return;
    }
    this._kernel = kernel;
    kernel.registerCommTarget(TARGET, this.onAnnounce);
    void this.probe(kernel);
  }

  private detach(closeComm: boolean): void {
    const kernel = this._kernel;
    this._kernel = null;
    if (kernel && !kernel.isDisposed) {
      kernel.removeCommTarget(TARGET, this.onAnnounce);
    }
    if (closeComm && this._comm && !this._comm.isDisposed && kernel && !kernel.isDisposed) {
      try {
        this._comm.close();
      } catch {
        // the kernel connection is going away anyway
      }
    }
    this.dropComm();
  }

  private dropComm(): void {
    this._comm = null;
    this.setState('none');
  }

  /** A page loaded after `%load_ext`: is agent_magic's comm target there? */
  private async probe(kernel: Kernel.IKernelConnection): Promise<void> {
    try {
      await kernel.info;
      const reply = await kernel.requestCommInfo({ target_name: TARGET });
      const content = reply.content;
      if (content.status === 'ok' && Object.keys(content.comms).length > 0) {
        await this.connect(kernel);
      }
    } catch {
      // no kernel info (restarting): the announcement will come
    }
  }

  private onAnnounce = (_comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void => {
    const data = msg.content.data as Partial<AgentMessage>;
    console.debug('agent-magic: the kernel announced agent_magic');
    if (data.v !== PROTOCOL_VERSION || data.type !== 'announce') {
      console.warn('agent-magic: ignoring a comm_open', data);
      return;
    }
    const kernel = this._kernel;
    if (kernel) {
      this.dropComm();
      void this.connect(kernel);
    }
  };

  private async connect(kernel: Kernel.IKernelConnection): Promise<void> {
    if (this._comm || this._kernel !== kernel || kernel.isDisposed) {
      return;
    }
    const comm = kernel.createComm(TARGET);
    this._comm = comm;
    this.setState('connecting');
    comm.onMsg = msg => this.onMsg(comm, msg);
    comm.onClose = () => {
      if (this._comm === comm) {
        this.dropComm();
      }
    };
    // Messages on a kernel subshell are handled even while a cell runs synchronously
    // (`%agent rewind`): wait for JupyterLab to start the comm's subshell first.
    const started = (comm as unknown as { subshellStarted?: Promise<void> }).subshellStarted;
    if (kernel.supportsSubshells && started) {
      await Promise.race([
        started.catch(() => undefined),
        new Promise(resolve => setTimeout(resolve, SUBSHELL_WAIT_MS))
      ]);
    }
    if (this._comm !== comm || comm.isDisposed) {
      return;
    }
    comm.open({
      v: PROTOCOL_VERSION,
      type: 'hello',
      client: CLIENT_ID,
      root: PageConfig.getOption('serverRoot'),
      open: this.notebooks.paths()
    });
  }

  // -- messages --------------------------------------------------------------
  private async onMsg(comm: Kernel.IComm, msg: KernelMessage.ICommMsgMsg): Promise<void> {
    const data = msg.content.data as unknown as AgentMessage;
    if (data.v !== PROTOCOL_VERSION) {
      console.warn(`agent-magic: the kernel speaks protocol v${data.v}, this extension v${PROTOCOL_VERSION}`);
      return;
    }
    switch (data.type) {
      case 'welcome':
        this.setState('connected');
        this.sendOpen(); // notebooks opened or closed while the comm was opening
        return;
      case 'error':
        console.warn('agent-magic: the kernel refused a message:', data.error);
        return;
      case 'request': {
        const answer = await this.notebooks.handle(data.path, data);
        if (!comm.isDisposed) {
          const reply = { v: PROTOCOL_VERSION, type: 'reply', id: data.id, ...answer };
          comm.send(reply as unknown as JSONObject);
        }
        return;
      }
      default:
        return;
    }
  }

  private sendOpen(): void {
    const comm = this._comm;
    if (!comm || comm.isDisposed || this._state !== 'connected') {
      return;
    }
    comm.send({
      v: PROTOCOL_VERSION,
      type: 'open',
      root: PageConfig.getOption('serverRoot'),
      open: this.notebooks.paths()
    });
  }

  private setState(state: LinkState): void {
    if (state !== this._state) {
      console.debug(`agent-magic: ${this.panel.context.path}: link ${this._state} -> ${state}`);
    }
    this._state = state;
    // For people inspecting the page, and for the browser tests.
    this.panel.node.dataset.agentMagicLink = state;
  }

  private _comm: Kernel.IComm | null = null;
  private _kernel: Kernel.IKernelConnection | null = null;
  private _state: LinkState = 'none';
  private _disposed = false;
}
