// agent-magic's widgets in JupyterLab, as a person uses them: approve a tool call, fork at a
// turn from the session bar, move the checkpoint slider, read the preview, rewind (with the
// conversation) after confirming, sort the session tree, resume from the bar's picker; then
// save, shut the kernel down and reopen the notebook to see what the saved outputs show.
//
// NOTEBOOK (relative to the server root) has the cells test_widgets_browser.py wrote:
//   0 %load_ext agent_magic · 1-3 %%agent turns · 4 %agent checkpoints · 5 %%agent --new · 6 %agent sessions
import path from 'node:path';
import {
  KERNEL_TIMEOUT,
  currentNotebook,
  labConfig,
  openLab,
  report,
  runCommand,
  screenshot,
  waitForKernelIdle,
  withPage
} from './lab.mjs';

const NOTEBOOK = process.env.NOTEBOOK;
if (!NOTEBOOK) throw new Error('NOTEBOOK is not set');

const cell = (page, i) => currentNotebook(page).locator('.jp-Notebook .jp-Cell').nth(i);
const shot = async (locator, name) => {
  const file = path.join(labConfig().artifactsDir, `${name}.png`);
  // A widget that catches up with its session (after a rewind) redraws itself: a node the
  // locator found may be replaced while the screenshot waits for it to be stable.
  for (let attempt = 1; ; attempt++) {
    try {
      await locator.screenshot({ path: file });
      return file;
    } catch (err) {
      if (attempt >= 3 || !/not attached to the DOM/.test(String(err))) throw err;
      await locator.waitFor();
    }
  }
};

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

/** Start running cell `i` (it becomes the only selected cell); does not wait for it. */
async function startCell(page, i) {
  await page.evaluate(index => {
    const notebook = window.jupyterapp.shell.currentWidget.content;
    notebook.deselectAll();
    notebook.activeCellIndex = index;
    void window.jupyterapp.commands.execute('notebook:run-cell');
  }, i);
}

/** Run cell `i` and wait until the kernel has run it. */
async function runAt(page, i) {
  const before = await page.evaluate(index => window.jupyterapp.shell.currentWidget.content.widgets[index].model.executionCount, i);
  await startCell(page, i);
  await page.waitForFunction(
    ([index, previous]) => {
      const model = window.jupyterapp.shell.currentWidget.content.widgets[index].model;
      return model.executionState === 'idle' && model.executionCount !== null && model.executionCount !== previous;
    },
    [i, before],
    { timeout: KERNEL_TIMEOUT }
  );
}

const texts = locator => locator.evaluateAll(nodes => nodes.map(n => n.innerText.trim()));

await withPage('widgets', async page => {
  const out = {};
  await openLab(page, { path: NOTEBOOK });
  await waitForNotebook(page);
  await runAt(page, 0);

  // Turn 1 asks to write a file: approve it in the prompt.
  await startCell(page, 1);
  const approval = cell(page, 1).locator('.am-approval');
  await approval.waitFor({ timeout: KERNEL_TIMEOUT });
  await approval.locator('.am-diff').waitFor();
  out.approvalText = (await approval.innerText()).trim();
  out.approvalShot = await shot(approval, 'widgets-approval');
  await approval.locator('button[data-action="approve"]').click();
  await cell(page, 1).locator('.am-bar[data-outcome="success"]').waitFor({ timeout: KERNEL_TIMEOUT });
  out.approvalAfter = (await approval.innerText()).trim();

  await runAt(page, 2);
  await runAt(page, 3);
  const bars = [1, 2, 3].map(i => cell(page, i).locator('.am-bar'));
  for (const bar of bars) await bar.locator('.am-bar-turn').waitFor();
  out.barTexts = [];
  for (const bar of bars) out.barTexts.push((await bar.locator('.am-bar-row').innerText()).replace(/\s+/g, ' ').trim());
  out.barSessionIds = [];
  for (const bar of bars) out.barSessionIds.push(await bar.locator('.am-sid').getAttribute('title'));
  out.barShot = await shot(bars[2], 'widgets-bar');

  // Fork at turn 2 from its bar.
  await bars[1].locator('.am-fork').click();
  await bars[1].locator('.am-notice', { hasText: 'Forked' }).waitFor();
  out.forkNotice = (await bars[1].locator('.am-notice').innerText()).trim();
  // every bar now knows the fork is current: none of them carries the "current" chip
  await page.waitForFunction(() => [...document.querySelectorAll('.am-bar .am-chip-current')].every(c => c.hidden));

  // The slider over the fork's turns: one step left previews rewinding to before turn 2.
  await runAt(page, 4);
  const slider = cell(page, 4).locator('.am-slider');
  await slider.waitFor();
  out.ticks = await texts(slider.locator('.am-tick-label'));
  out.cardNow = (await slider.locator('.am-card').innerText()).trim();
  // drag the thumb from "now" to the middle stop (before turn 2), as a person would
  const box = await slider.locator('.am-range').boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width - 7, y);
  await page.mouse.down();
  await page.mouse.move(box.x + 7 + (box.width - 14) / 2, y, { steps: 8 });
  out.cardWhileDragging = (await slider.locator('.am-card').innerText()).trim();
  await page.mouse.up();
  await slider.locator('.am-preview-head').waitFor();
  out.card = (await slider.locator('.am-card').innerText()).trim();
  out.preview = (await slider.locator('.am-preview').innerText()).trim();
  out.previewDiffLines = {
    add: await slider.locator('.am-diff-add').count(),
    del: await slider.locator('.am-diff-del').count()
  };
  out.previewShot = await shot(slider, 'widgets-preview');

  await slider.locator('.am-opt-conversation').check();
  await slider.locator('.am-rewind').click();
  await slider.locator('.am-confirm-q').waitFor({ state: 'visible' });
  out.question = (await slider.locator('.am-confirm-q').innerText()).trim();
  out.confirmShot = await shot(slider.locator('.am-actions'), 'widgets-confirm');
  await slider.locator('.am-confirm').click();
  await slider.locator('.am-result-head').waitFor({ timeout: KERNEL_TIMEOUT });
  out.result = (await slider.locator('.am-result').innerText()).trim();
  out.resultShot = await shot(slider, 'widgets-rewound');

  // The session tree: original -> fork -> the fork the rewind made, and a new session; sort by turns.
  await runAt(page, 5);
  await cell(page, 5).locator('.am-bar[data-outcome="success"]').waitFor();
  await runAt(page, 6);
  const browser = cell(page, 6).locator('.am-browser');
  await browser.waitFor();
  const treeRows = () =>
    browser.locator('tbody tr').evaluateAll(rows => rows.map(r => ({ id: r.dataset.sessionId, depth: Number(r.dataset.depth), text: r.innerText.replace(/\s+/g, ' ').trim() })));
  out.tree = await treeRows();
  await browser.locator('th[data-sort="turns"]').click();
  await browser.locator('th[data-sort="turns"][aria-sort="descending"]').waitFor();
  await browser.locator('th[data-sort="turns"]').click();
  await browser.locator('th[data-sort="turns"][aria-sort="ascending"]').waitFor();
  out.treeByTurns = await treeRows();
  out.sortMark = {
    text: (await browser.locator('th.am-sorted').innerText()).trim(),
    // the mark is an SVG caret (no glyph), turned up for ascending
    up: (await browser.locator('th.am-sorted .am-sort-mark.am-up svg.am-icon').count()) === 1
  };
  out.sessionsShot = await shot(browser, 'widgets-sessions');

  // Resume the original session from turn 1's bar.
  const bar1 = bars[0];
  await bar1.locator('.am-resume').click();
  const item = bar1.locator(`.am-menu-item[data-session-id="${out.barSessionIds[0]}"]`);
  await item.waitFor();
  await bar1.locator('.am-menu-item').nth(3).waitFor();
  out.menu = await texts(bar1.locator('.am-menu-item'));
  out.menuShot = await shot(bar1, 'widgets-resume-menu');
  await item.click();
  await bar1.locator('.am-notice', { hasText: 'Resumed' }).waitFor();
  out.resumeNotice = (await bar1.locator('.am-notice').innerText()).trim();
  out.menuHidden = await bar1.locator('.am-menu').isHidden();

  // The same widgets in the dark theme.
  await runCommand(page, 'apputils:change-theme', { theme: 'JupyterLab Dark' });
  await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'false');
  await page.waitForTimeout(300);
  out.darkBarShot = await shot(bars[1], 'widgets-bar-dark');
  out.darkSliderShot = await shot(slider, 'widgets-rewound-dark');
  await runCommand(page, 'apputils:change-theme', { theme: 'JupyterLab Light' });
  await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'true');

  // Save, shut the kernel down, reopen: the widget models are gone with the kernel.
  await runCommand(page, 'docmanager:save');
  await page.waitForFunction(() => !window.jupyterapp.shell.currentWidget.context.model.dirty);
  await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown());
  await openLab(page, { path: NOTEBOOK });
  await waitForNotebook(page);
  await page.waitForTimeout(1500); // let the widget manager give up on the missing models
  out.reopened = [];
  for (const i of [1, 4, 6]) {
    out.reopened.push(await texts(cell(page, i).locator('.jp-OutputArea-output')));
  }
  out.reopenedShot = await screenshot(page, 'widgets-reopened');
  report(out);
});
