/**
 * JupyterLab front end for agent-magic.
 *
 * For now a placeholder: a left-sidebar panel listing agent sessions.
 */

import type {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { listIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

/** The id of the sessions panel in the left sidebar; browser tests select on it. */
export const SESSIONS_PANEL_ID = 'agent-magic-sessions';

/** Build the (placeholder) sessions panel. */
function createSessionsPanel(): Widget {
  const panel = new Widget();
  panel.id = SESSIONS_PANEL_ID;
  panel.addClass('jp-AgentMagic-sessions');
  panel.title.caption = 'Agent sessions';
  panel.title.label = 'Agent sessions';
  panel.title.icon = listIcon;

  const empty = document.createElement('p');
  empty.className = 'jp-AgentMagic-sessions-empty';
  empty.textContent = 'No sessions yet';
  panel.node.appendChild(empty);
  return panel;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'agent-magic:plugin',
  description: 'Agent sessions panel for agent-magic.',
  autoStart: true,
  activate: (app: JupyterFrontEnd): void => {
    app.shell.add(createSessionsPanel(), 'left', { rank: 600 });
    console.log('agent-magic: JupyterLab extension activated');
  }
};

export default plugin;
