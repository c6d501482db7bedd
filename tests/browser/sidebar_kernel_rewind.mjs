// The sidebar's rewind puts the kernel's variables back too.
//
// NB_PATH is a notebook in the server root with cells setup / ask / sleep / check; the fake
// API answers the "ask" prompt with one Python tool call that appends to `items`, writes
// into the numpy array `arr` and creates `made`, then "Done.". The script rewinds from the
// sidebar three times: while a cell runs (the kernel is busy: said, nothing done), for real
// (the preview lists the variables; the kernel's state is checked with the "check" cell
// before and after), and after a restart without agent_magic (said, nothing done).
import {
  cellIndex,
  openLab,
  openNotebook,
  openSidebarPanel,
  report,
  runCellAt,
  screenshot,
  selectCell,
  waitForAgentLink,
  waitForKernelIdle,
  waitForOutputText,
  withPage
} from './lab.mjs';

const NB = process.env.NB_PATH;
const TURN_TIMEOUT = 90_000;

/** Run the "check" cell and return what it printed: the variables as the kernel has them now. */
async function kernelState(page) {
  const index = await cellIndex(page, 'check');
  await runCellAt(page, index);
  return waitForOutputText(page, 'STATE', { cell: index });
}

/** Click "Rewind…" on the session's only checkpoint; resolves once the preview is shown. */
async function openPreview(page, panel) {
  const session = panel.locator('ul.jp-AgentMagic-tree > li.jp-AgentMagic-session').first();
  await session.waitFor();
  const checkpoint = session.locator(':scope > ol.jp-AgentMagic-checkpoints > li.jp-AgentMagic-checkpoint').first();
  if (!(await checkpoint.isVisible())) {
    await session.locator(':scope > .jp-AgentMagic-row [data-action="checkpoints"]').click();
  }
  await checkpoint.locator('[data-action="rewind"]').click();
  const preview = page.locator('.jp-AgentMagic-rewindPreview');
  await preview.waitFor();
  return preview;
}

async function cancel(page) {
  await page.locator('.jp-Dialog button', { hasText: 'Cancel' }).click();
  await page.locator('.jp-Dialog').waitFor({ state: 'detached' });
}

async function variableItems(root) {
  return root.locator('.jp-AgentMagic-kernelVars li').evaluateAll(items =>
    items.map(li => ({ kind: li.dataset.kind, name: li.dataset.name, text: li.textContent }))
  );
}

await withPage('sidebar-kernel-rewind', async page => {
  const out = {};
  await openLab(page);
  await openNotebook(page, NB);
  await runCellAt(page, await cellIndex(page, 'setup'));
  await waitForAgentLink(page);
  const ask = await cellIndex(page, 'ask');
  await runCellAt(page, ask, { timeout: TURN_TIMEOUT });
  await waitForOutputText(page, 'Done.', { cell: ask });
  await waitForKernelIdle(page);
  out.stateAfterTurn = await kernelState(page);

  const panel = await openSidebarPanel(page, 'agent-magic-sessions');
  out.sessionId = await panel.locator('li.jp-AgentMagic-session').first().getAttribute('data-session-id');

  // 1. A cell is running: the preview says the kernel is busy, and the variables stay.
  const sleepCell = await cellIndex(page, 'sleep');
  await selectCell(page, sleepCell);
  void page.evaluate(() => window.jupyterapp.commands.execute('notebook:run-cell'));
  await page.waitForFunction(() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'busy');
  let preview = await openPreview(page, panel);
  await preview.locator('.jp-AgentMagic-kernelVars').waitFor();
  out.busyPreview = await preview.locator('.jp-AgentMagic-kernelVars').innerText();
  await cancel(page);
  await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.interrupt());
  await waitForKernelIdle(page);

  // 2. The rewind: the preview lists each variable; confirming puts them back.
  preview = await openPreview(page, panel);
  await preview.locator('.jp-AgentMagic-kernelVars[data-kernel="answered"]').waitFor();
  out.previewItems = await variableItems(preview);
  out.previewText = await preview.innerText();
  await screenshot(page, 'sidebar-kernel-rewind-preview');
  await page.locator('.jp-Dialog button', { hasText: 'Rewind' }).last().click();
  await page.locator('.jp-Dialog').waitFor({ state: 'detached' });
  const toast = page.locator('.jp-Notification-Toast-success', { hasText: 'Rewound to before turn 1' });
  await toast.waitFor({ timeout: 60_000 });
  out.toastText = await toast.locator('.jp-toast-message').innerText();
  await toast.locator('.jp-toast-button', { hasText: 'Details' }).click();
  const details = page.locator('.jp-AgentMagic-rewindResult');
  await details.waitFor();
  out.resultItems = await variableItems(details);
  await screenshot(page, 'sidebar-kernel-rewind-result');
  await page.locator('.jp-Dialog button', { hasText: 'Ok' }).click();
  await page.locator('.jp-Dialog').waitFor({ state: 'detached' });
  out.stateAfterRewind = await kernelState(page);

  // 3. A new kernel without agent_magic: said in one line, nothing else.
  await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart());
  await waitForKernelIdle(page);
  preview = await openPreview(page, panel);
  await preview.locator('.jp-AgentMagic-kernelVars').waitFor();
  out.notLoadedPreview = await preview.locator('.jp-AgentMagic-kernelVars').innerText();
  await cancel(page);
  report(out);
});
