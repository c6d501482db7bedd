// Saved views of agent-magic's widgets (labextension/src/fallback.ts): run a %%agent turn (a live
// session bar), save, shut the kernel down and reopen the notebook; then open a copy with no
// kernel at all. Where the widget models are gone, our widgets show their saved summary; other
// widgets keep JupyterLab's own message.
//
// NOTEBOOK (relative to the server root) has the cells test_widget_fallback.py wrote:
//   0 %load_ext agent_magic · 1 %%agent turn · 2 two made-up widget views (ours by the marker
//   mimetype, and a foreign one), with no model behind them · 3 an ipywidgets slider
import path from 'node:path';
import {
  KERNEL_TIMEOUT,
  currentNotebook,
  labConfig,
  openLab,
  report,
  runCellAt,
  runCommand,
  saveNotebook,
  screenshot,
  waitForKernelIdle,
  withPage
} from './lab.mjs';

const NOTEBOOK = process.env.NOTEBOOK;
if (!NOTEBOOK) throw new Error('NOTEBOOK is not set');
const NO_KERNEL_COPY = path.posix.join(path.posix.dirname(NOTEBOOK), 'no-kernel.ipynb');

const FALLBACK = '.jp-AgentMagic-widgetFallback';
const cell = (page, i) => currentNotebook(page).locator('.jp-Notebook .jp-Cell').nth(i);
const outputTexts = (page, i) =>
  cell(page, i).locator('.jp-OutputArea-output').evaluateAll(nodes => nodes.map(n => n.innerText.trim()));
const fallbackCount = (page, i) => cell(page, i).locator(FALLBACK).count();

async function waitForNotebook(page) {
  await page.waitForFunction(
    () => {
      const w = window.jupyterapp.shell.currentWidget;
      return w?.hasClass?.('jp-NotebookPanel') && w.context.isReady && w.sessionContext.session?.kernel;
    },
    undefined,
    { timeout: KERNEL_TIMEOUT }
  );
  await waitForKernelIdle(page);
}

/**
 * What cells 1-3 show, once our views have their summary and the foreign ones the widget
 * renderer's message (live, the bar in cell 1 and the slider in cell 3 are widgets).
 */
async function outputs(page, foreignMessage, { live = false } = {}) {
  for (const i of live ? [2] : [1, 2]) {
    await cell(page, i).locator(FALLBACK).waitFor({ timeout: KERNEL_TIMEOUT });
  }
  for (const i of live ? [2] : [2, 3]) {
    await cell(page, i).locator('.jp-OutputArea-output', { hasText: foreignMessage }).first().waitFor();
  }
  // the renderers have settled: nothing may replace a summary a moment later
  await page.waitForTimeout(1500);
  const out = {};
  for (const i of [1, 2, 3]) {
    out[i] = { texts: await outputTexts(page, i), fallbacks: await fallbackCount(page, i) };
  }
  return out;
}

await withPage('widget-fallback', async page => {
  const out = {};

  // Live: the bar is a widget; a view of ours with no model behind it already shows its summary.
  await openLab(page, { path: NOTEBOOK });
  await waitForNotebook(page);
  await runCellAt(page, 0);
  await runCellAt(page, 1, { timeout: KERNEL_TIMEOUT });
  const bar = cell(page, 1).locator('.am-bar[data-outcome="success"]');
  await bar.waitFor({ timeout: KERNEL_TIMEOUT });
  out.sessionId = await bar.locator('.am-sid').getAttribute('title');
  await runCellAt(page, 2);
  await runCellAt(page, 3);
  await cell(page, 3).locator('.widget-slider').waitFor();
  out.live = await outputs(page, 'model not found', { live: true });
  out.liveBar = (await bar.locator('.am-bar-row').innerText()).replace(/\s+/g, ' ').trim();

  // Saved and reopened with a new kernel: the models are gone.
  await saveNotebook(page);
  await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown());
  await openLab(page, { path: NOTEBOOK });
  await waitForNotebook(page);
  out.reopened = await outputs(page, 'model not found');
  out.reopenedShot = await screenshot(page, 'widget-fallback');
  await runCommand(page, 'apputils:change-theme', { theme: 'JupyterLab Dark' });
  await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'false');
  await page.waitForTimeout(300);
  const shot = path.join(labConfig().artifactsDir, 'widget-fallback-dark.png');
  await cell(page, 1).locator('.jp-OutputArea').screenshot({ path: shot });
  out.darkShot = shot;
  await runCommand(page, 'apputils:change-theme', { theme: 'JupyterLab Light' });
  await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'true');

  // A copy of the saved notebook with no kernelspec, for the last part.
  await page.evaluate(
    async ([from, to]) => {
      const contents = window.jupyterapp.serviceManager.contents;
      const { content } = await contents.get(from, { content: true });
      delete content.metadata.kernelspec;
      delete content.metadata.language_info;
      await contents.save(to, { type: 'notebook', format: 'json', content });
    },
    [NOTEBOOK, NO_KERNEL_COPY]
  );

  // Running the turn again: a live bar takes the summary's place.
  await runCellAt(page, 0);
  await runCellAt(page, 1, { timeout: KERNEL_TIMEOUT });
  await cell(page, 1).locator('.am-bar[data-outcome="success"]').waitFor({ timeout: KERNEL_TIMEOUT });
  out.rerun = { texts: await outputTexts(page, 1), fallbacks: await fallbackCount(page, 1) };
  await saveNotebook(page);
  await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown());

  // The copy, opened with "No Kernel": the widget manager never comes.
  await openLab(page, { path: NO_KERNEL_COPY });
  await page.locator('.jp-Dialog button', { hasText: 'No Kernel' }).click();
  await currentNotebook(page).waitFor();
  out.noKernel = await outputs(page, 'Loading widget...');
  out.noKernelSession = await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.session !== null);
  out.noKernelShot = await screenshot(page, 'widget-fallback-no-kernel');
  report(out);
});
