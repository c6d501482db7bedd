// Smoke test: our prebuilt extension loads, and a notebook runs a cell in a real kernel.
import {
  newNotebook,
  openLab,
  openSidebarPanel,
  report,
  runCell,
  screenshot,
  waitForOutputText,
  withPage
} from './lab.mjs';

await withPage('lab-smoke', async page => {
  await openLab(page);
  const panel = await openSidebarPanel(page, 'agent-magic-sessions');
  const panelText = (await panel.innerText()).trim();
  const tabTitle = await page
    .locator('.jp-SideBar .lm-TabBar-tab[data-id="agent-magic-sessions"]')
    .getAttribute('title');

  const notebookPath = await newNotebook(page);
  const cell = await runCell(page, '1+1');
  const output = await waitForOutputText(page, '2', { cell });

  const shot = await screenshot(page, 'lab-smoke');
  report({ panelText, tabTitle, notebookPath, output, screenshot: shot });
});
