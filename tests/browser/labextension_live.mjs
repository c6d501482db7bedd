// Live edits, provenance badges, rewinds and the sessions sidebar, in JupyterLab.
//
// NB_PATH is a notebook in the server root with cells load / one / two / three / ask / rewind;
// the fake API answers "Improve the notebook" with Read, then NotebookEdit insert after "two"
// and replace "three", then "Done.".
import {
  agentLinkState,
  cellIndex,
  dialogCount,
  fileContent,
  isDirty,
  notebookCells,
  openLab,
  openNotebook,
  openSidebarPanel,
  report,
  runCellAt,
  saveNotebook,
  screenshot,
  typeInCell,
  waitForAgentLink,
  waitForKernelIdle,
  waitForOutputText,
  withPage
} from './lab.mjs';

const NB = process.env.NB_PATH;
const TURN_TIMEOUT = 90_000;
const timings = {};

async function timed(name, fn) {
  const t0 = Date.now();
  const out = await fn();
  timings[name] = Date.now() - t0;
  return out;
}

async function runTurn(page) {
  await runCellAt(page, await cellIndex(page, 'ask'), { timeout: TURN_TIMEOUT });
  return waitForOutputText(page, 'Done.', { cell: await cellIndex(page, 'ask') });
}

async function badgeTexts(page) {
  return page.locator('.jp-NotebookPanel:visible .jp-AgentMagic-badge').allInnerTexts();
}

await withPage('labextension-live', async page => {
  const out = { timings };
  await openLab(page);
  await openNotebook(page, NB);

  // 1. Load the extension: the kernel announces itself and the page links to it.
  await timed('link', async () => {
    await runCellAt(page, await cellIndex(page, 'load'));
    await waitForAgentLink(page);
  });

  // 2. The person edits cell "one" and does not save.
  await typeInCell(page, await cellIndex(page, 'one'), 'x = 100  # my unsaved edit');
  out.dirtyBeforeTurn = await isDirty(page);

  // 3. An agent turn edits the open notebook.
  out.turn1Output = await timed('turn1', () => runTurn(page));
  await page.locator('.jp-NotebookPanel:visible .jp-AgentMagic-badge').nth(1).waitFor();
  out.afterTurn1 = await notebookCells(page);
  out.dialogsAfterTurn1 = await dialogCount(page);
  out.dirtyAfterTurn1 = await isDirty(page);
  out.badgesAfterTurn1 = await badgeTexts(page);
  out.badgeTitle = await page.locator('.jp-NotebookPanel:visible .jp-AgentMagic-badge').first().getAttribute('title');
  await screenshot(page, 'labextension-live-edit');

  // 4. The badge shows the agent's change to the cell.
  await page.locator('.jp-NotebookPanel:visible .jp-AgentMagic-badge').nth(1).click();
  await page.locator('.jp-AgentMagic-cellHistory').waitFor();
  out.cellHistory = await page.locator('.jp-AgentMagic-cellHistory').innerText();
  await screenshot(page, 'labextension-cell-diff');
  await page.locator('.jp-Dialog button', { hasText: 'Close' }).first().click();
  await page.locator('.jp-Dialog').waitFor({ state: 'detached' });

  // 5. Saving works, with no "file changed on disk" dialog.
  await saveNotebook(page);
  out.dialogsAfterSave = await dialogCount(page);
  out.savedFile = await fileContent(page, NB);

  // 6. `%agent rewind` in a cell restores the agent's cells live.
  const checkpoint = out.afterTurn1.find(c => c.provenance).provenance.checkpoint_id;
  const rewindCell = await cellIndex(page, 'rewind');
  await typeInCell(page, rewindCell, `%agent rewind ${checkpoint.slice(0, 8)}`);
  await timed('magicRewind', () => runCellAt(page, rewindCell));
  await page.locator('.jp-NotebookPanel:visible .jp-AgentMagic-badge').first().waitFor({ state: 'detached' });
  out.afterMagicRewind = await notebookCells(page);
  out.dialogsAfterMagicRewind = await dialogCount(page);
  out.badgesAfterMagicRewind = await badgeTexts(page);
  await screenshot(page, 'labextension-rewind-magic');

  // 7. A second turn, then the sidebar: the session, a fork, and a rewind with preview.
  await timed('turn2', () => runTurn(page));
  out.afterTurn2 = await notebookCells(page);
  const panel = await openSidebarPanel(page, 'agent-magic-sessions');
  const root = panel.locator('ul.jp-AgentMagic-tree > li.jp-AgentMagic-session').first();
  await root.waitFor();
  await root.locator(':scope > .jp-AgentMagic-row [data-action="fork"]').click();
  const fork = root.locator(':scope > ul.jp-AgentMagic-forks > li.jp-AgentMagic-session');
  await fork.waitFor();
  out.sessionIds = {
    root: await root.getAttribute('data-session-id'),
    fork: await fork.getAttribute('data-session-id'),
    forkIsCurrent: (await fork.getAttribute('class')).includes('jp-mod-current')
  };
  out.sidebarText = await panel.innerText();
  await screenshot(page, 'labextension-sidebar');

  await root.locator(':scope > .jp-AgentMagic-row [data-action="checkpoints"]').click();
  const checkpoints = root.locator(':scope > ol.jp-AgentMagic-checkpoints > li.jp-AgentMagic-checkpoint');
  await checkpoints.nth(1).waitFor();
  out.checkpointCount = await checkpoints.count();
  await checkpoints.nth(1).locator('[data-action="rewind"]').click();
  const preview = page.locator('.jp-AgentMagic-rewindPreview');
  await preview.waitFor();
  out.previewText = await preview.innerText();
  await screenshot(page, 'labextension-rewind-preview');
  await timed('sidebarRewind', async () => {
    await page.locator('.jp-Dialog button', { hasText: 'Rewind' }).last().click();
    await page.waitForFunction(() => {
      const cells = window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells;
      return cells.length === 6 && cells.find(c => c.id === 'three')?.getSource() === 'z = 3';
    });
  });
  await page.locator('.jp-NotebookPanel:visible .jp-AgentMagic-badge').first().waitFor({ state: 'detached' });
  out.afterSidebarRewind = await notebookCells(page);
  out.badgesAfterSidebarRewind = await badgeTexts(page);
  out.dialogsAfterSidebarRewind = await dialogCount(page);
  await screenshot(page, 'labextension-rewind-sidebar');
  await saveNotebook(page);
  out.finalFile = await fileContent(page, NB);

  // 8. A kernel restart ends the link; the sidebar still works; %load_ext links again.
  await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart());
  await waitForKernelIdle(page);
  out.linkAfterRestart = await agentLinkState(page);
  await panel.locator('[data-action="refresh"]').click();
  await root.waitFor();
  out.sessionsAfterRestart = await panel.locator('li.jp-AgentMagic-session').count();
  await timed('relink', async () => {
    await runCellAt(page, await cellIndex(page, 'load'));
    await waitForAgentLink(page);
  });
  out.linkAfterReload = await agentLinkState(page);
  await screenshot(page, 'labextension-after-restart');
  report(out);
});
