/**
 * JupyterLab front end for agent-magic.
 *
 * - live edits: the agent's NotebookEdit/Read reach notebooks open here over
 *   the `agent_magic` comm (link.ts, notebooks.ts, edits.ts);
 * - the "Agent sessions" sidebar, served by the server extension (sidebar.ts, rewind.ts);
 * - cell provenance badges, and "re-run" marks on cells a rewind made stale (badges.ts);
 * - saved views of our widgets where their models are gone (fallback.ts).
 */

import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, type NotebookPanel } from '@jupyterlab/notebook';

import { SessionsApi } from './api';
import { ProvenanceBadges, StaleMarkers } from './badges';
import { WidgetFallbacks } from './fallback';
import { KernelLink } from './link';
import { OpenNotebooks } from './notebooks';
import { SESSIONS_PANEL_ID, SessionsPanel } from './sidebar';

export { SESSIONS_PANEL_ID };

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'agent-magic:plugin',
  description: 'Agent sessions sidebar, live notebook edits, cell provenance and saved widget views for agent-magic.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker): void => {
    const api = new SessionsApi(app.serviceManager.serverSettings);
    const notebooks = new OpenNotebooks(tracker);
    const panel = new SessionsPanel(api, notebooks, tracker);
    app.shell.add(panel, 'left', { rank: 600 });

    const links = new Set<KernelLink>();
    const attach = (nb: NotebookPanel): void => {
      const link = new KernelLink(nb, notebooks);
      const badges = new ProvenanceBadges(nb, api);
      const fallbacks = new WidgetFallbacks(nb);
      const stale = new StaleMarkers(nb);
      links.add(link);
      nb.disposed.connect(() => {
        links.delete(link);
        link.dispose();
        badges.dispose();
        fallbacks.dispose();
        stale.dispose();
      });
    };
    // Closing the tab: tell the kernels (best effort), so they stop asking this page
    // instead of waiting for it to answer. (`pagehide`, not `beforeunload`: the
    // person may still cancel leaving a page with unsaved changes.)
    window.addEventListener('pagehide', () => links.forEach(link => link.dispose()));
    tracker.forEach(attach);
    tracker.widgetAdded.connect((_, nb) => attach(nb));
    console.log('agent-magic: JupyterLab extension activated');
  }
};

export default plugin;
