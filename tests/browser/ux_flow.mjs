// A first hour's rough edges (issue 14 §4), as a person meets them in JupyterLab: the status bar
// while a turn runs, the approval prompt and the running tool line, the tool-line diff, the
// badge's dialog, the slider's wording and its "re-run" links and marks, the session bar on one
// line, the sidebar's fork names and "current" pill, light and dark themes, and widgets after a
// kernel restart. Screenshots of the bar, slider, sidebar and approval prompt in both themes go to
// ARTIFACTS_DIR/ux-*.png.
//
// NOTEBOOK has the cells test_ux_browser.py wrote (ids in brackets):
//   [setup] %load_ext · [load] x = 1 · [t1] %%agent (Write: approval) · [t2] %%agent (Edit, NotebookEdit load)
//   [cps] %agent checkpoints · [t3] %%agent --fork · [t4] %%agent (Bash: approval, then Stop; dark theme)
//   [t5] %%agent (NotebookEdit load again) · [rw] %agent rewind --turn 5
import path from 'node:path';
import {
  KERNEL_TIMEOUT,
  cellIndex,
  currentNotebook,
  labConfig,
  openLab,
  openSidebarPanel,
  report,
  runCommand,
  waitForAgentLink,
  waitForKernelIdle,
  withPage
} from './lab.mjs';

const NOTEBOOK = process.env.NOTEBOOK;
if (!NOTEBOOK) throw new Error('NOTEBOOK is not set');
const SIDEBAR_ID = 'agent-magic-sessions';

const shot = async (locator, name) => {
  const file = path.join(labConfig().artifactsDir, `${name}.png`);
  await locator.screenshot({ path: file });
  return file;
};

async function cellById(page, id) {
  const index = await cellIndex(page, id);
  if (index < 0) throw new Error(`no cell ${id}`);
  return currentNotebook(page).locator('.jp-Notebook .jp-Cell').nth(index);
}

/** Start running the cell with this id (it becomes the only selected cell); does not wait. */
async function startCell(page, id) {
  const index = await cellIndex(page, id);
  await page.evaluate(i => {
    const notebook = window.jupyterapp.shell.currentWidget.content;
    notebook.deselectAll();
    notebook.activeCellIndex = i;
    void window.jupyterapp.commands.execute('notebook:run-cell');
  }, index);
  return index;
}

/** Run the cell with this id and wait until the kernel has run it. */
async function runAt(page, id) {
  const index = await cellIndex(page, id);
  const before = await page.evaluate(i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.executionCount, index);
  await startCell(page, id);
  await page.waitForFunction(
    ([i, previous]) => {
      const model = window.jupyterapp.shell.currentWidget.content.widgets[i].model;
      return model.executionState === 'idle' && model.executionCount !== null && model.executionCount !== previous;
    },
    [index, before],
    { timeout: KERNEL_TIMEOUT }
  );
}

const kernelStatusText = page => page.locator('.jp-StatusBar-Item', { hasText: 'Python 3' }).first().innerText();

async function setTheme(page, name, light) {
  await runCommand(page, 'apputils:change-theme', { theme: name });
  await page.waitForFunction(want => document.body.dataset.jpThemeLight === want, String(light));
  await page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
}

/** The layout facts of the session bar's row: one line means every visible item shares a line. */
async function barLayout(bar) {
  return bar.locator('.am-bar-row').evaluate(row => {
    const items = [...row.children].filter(c => !c.hidden && c.getBoundingClientRect().width > 0 && !c.classList.contains('am-spacer'));
    const rects = items.map(c => c.getBoundingClientRect());
    const resume = row.querySelector('.am-resume').getBoundingClientRect();
    const fork = row.querySelector('.am-fork').getBoundingClientRect();
    return {
      rowHeight: row.getBoundingClientRect().height,
      lines: new Set(rects.map(r => Math.round(r.top + r.height / 2))).size,
      tops: rects.map(r => Math.round(r.top)),
      resumeHeight: resume.height,
      forkHeight: fork.height,
      resumeRight: resume.right,
      rowRight: row.getBoundingClientRect().right
    };
  });
}

await withPage(
  'ux',
  async page => {
    const out = {};
    await openLab(page, { path: NOTEBOOK });
    await page.waitForFunction(
      () => {
        const w = window.jupyterapp.shell.currentWidget;
        return w?.hasClass?.('jp-NotebookPanel') && w.context.isReady && w.sessionContext.session?.kernel;
      },
      undefined,
      { timeout: KERNEL_TIMEOUT }
    );
    await waitForKernelIdle(page);
    await runAt(page, 'setup');
    await waitForAgentLink(page);
    await runAt(page, 'load');

    // -- turn 1 waits on its approval prompt: the kernel is busy, the Write tool line is running
    await startCell(page, 't1');
    const t1 = await cellById(page, 't1');
    const approval = t1.locator('.am-approval');
    await approval.locator('.am-diff').waitFor({ timeout: KERNEL_TIMEOUT });
    out.statusWhileRunning = await kernelStatusText(page);
    const spinner = t1.locator('.jp-RenderedMarkdown .am-tool-running').first();
    await spinner.waitFor();
    out.runningMark = await spinner.evaluate(el => {
      const s = getComputedStyle(el);
      return { width: s.width, animation: s.animationName, text: el.closest('p, li, div').innerText };
    });
    out.approvalShotLight = await shot(approval, 'ux-approval-light');
    await approval.locator('button[data-action="approve"]').click();
    await t1.locator('.am-bar[data-outcome="success"]').waitFor({ timeout: KERNEL_TIMEOUT });
    await waitForKernelIdle(page);
    out.statusAfter = await kernelStatusText(page);

    // -- turn 2 edits notes.txt (a diff in its tool line) and rewrites the "load" cell (a badge)
    await runAt(page, 't2');
    const t2 = await cellById(page, 't2');
    await t2.locator('.am-bar[data-outcome="success"]').waitFor();
    const editLine = t2.locator('.jp-RenderedMarkdown details', { hasText: 'Edit' }).first();
    await editLine.locator('summary').click();
    out.toolDiff = await editLine.evaluate(d => {
      const bg = sel => {
        const el = d.querySelector(sel);
        return el ? getComputedStyle(el).backgroundColor : null;
      };
      return { add: bg('.am-diff-add'), del: bg('.am-diff-del'), text: d.querySelector('pre')?.innerText ?? '' };
    });
    out.hourglass = await currentNotebook(page).evaluate(n => n.innerText.includes('⏳'));

    // the badge's dialog: the focus (and Enter) is on Close, not on the red Remove/Restore
    const load = await cellById(page, 'load');
    const badge = load.locator('.jp-AgentMagic-badge');
    await badge.waitFor({ timeout: KERNEL_TIMEOUT });
    await badge.click();
    const dialog = page.locator('.jp-Dialog');
    await dialog.waitFor();
    await page.waitForFunction(() => document.activeElement?.closest('.jp-Dialog'));
    out.dialogFocus = await page.evaluate(() => document.activeElement.innerText.trim());
    out.dialogButtons = await dialog.locator('.jp-Dialog-footer button').allInnerTexts();
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    out.loadAfterEnter = await page.evaluate(() => {
      const cells = window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells;
      return cells.find(c => c.id === 'load')?.getSource() ?? null;
    });

    // the person runs the agent's version of "load": a rewind before turn 2 makes it stale
    await runAt(page, 'load');

    // -- the slider: wording, rewind, the cells to re-run
    await runAt(page, 'cps');
    const slider = (await cellById(page, 'cps')).locator('.am-slider');
    await slider.waitFor();
    await slider.locator('.am-tick[data-position="1"]').click();
    await slider.locator('.am-preview-head').waitFor();
    out.preview = (await slider.locator('.am-preview').innerText()).trim();
    out.rewindLabel = (await slider.locator('.am-rewind').innerText()).trim();
    await slider.locator('.am-rewind').click();
    await slider.locator('.am-confirm-q').waitFor({ state: 'visible' });
    out.question = (await slider.locator('.am-confirm-q').innerText()).trim();
    await slider.locator('.am-confirm').click();
    await slider.locator('.am-result-head').waitFor({ timeout: KERNEL_TIMEOUT });
    out.result = (await slider.locator('.am-result').innerText()).trim();
    out.sliderText = (await slider.innerText()).trim();
    const marker = load.locator('.jp-AgentMagic-rerun');
    await marker.waitFor({ timeout: 10_000 });
    out.marker = (await marker.innerText()).trim();
    out.sliderShotLight = await shot(slider, 'ux-slider-light');
    await load.scrollIntoViewIfNeeded();
    out.markedCellShot = await shot(load, 'ux-rerun-marker-light');
    // the link in the slider selects the cell
    const loadIndex = await cellIndex(page, 'load');
    await slider.locator('a.am-stale-cell').click();
    await page.waitForFunction(i => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i, loadIndex);
    out.activeAfterLink = await page.evaluate(() => window.jupyterapp.shell.currentWidget.content.activeCell.model.id);
    // without the extension's answer to the link's event, the widget selects the cell itself
    await page.evaluate(i => {
      window.jupyterapp.shell.currentWidget.content.activeCellIndex = i;
      window.__hideFromExtension = e => e.stopPropagation();
      document.addEventListener('agent-magic:select-cell', window.__hideFromExtension, true);
    }, await cellIndex(page, 'cps'));
    await slider.locator('a.am-stale-cell').click();
    await page.waitForFunction(i => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i, loadIndex);
    out.activeAfterFallbackLink = await page.evaluate(() => window.jupyterapp.shell.currentWidget.content.activeCell.model.id);
    await page.evaluate(() => document.removeEventListener('agent-magic:select-cell', window.__hideFromExtension, true));
    // running the cell clears its mark
    await runAt(page, 'load');
    await marker.waitFor({ state: 'detached', timeout: 10_000 });
    out.markerAfterRun = await load.locator('.jp-AgentMagic-rerun').count();

    // -- the session bar: one line, at the default width and in a narrow window
    const bar2 = t2.locator('.am-bar');
    out.barWide = await barLayout(bar2);
    out.barShotLight = await shot(bar2, 'ux-bar-light');
    await page.setViewportSize({ width: 900, height: 900 });
    await page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
    out.barNarrow = await barLayout(bar2);
    out.barShotNarrow = await shot(bar2, 'ux-bar-narrow-light');
    await page.setViewportSize({ width: 1366, height: 900 });

    // -- a fork: its name says what it forked and where; the "current" pill is not clipped
    await runAt(page, 't3');
    await (await cellById(page, 't3')).locator('.am-bar[data-outcome="success"]').waitFor();
    const sidebar = await openSidebarPanel(page, SIDEBAR_ID);
    await sidebar.locator('button[data-action="refresh"]').click();
    const current = sidebar.locator('.jp-AgentMagic-session.jp-mod-current > .jp-AgentMagic-row');
    await current.locator('.jp-AgentMagic-current').waitFor();
    const sessionTitles = () => sidebar.locator('.jp-AgentMagic-session > .jp-AgentMagic-row .jp-AgentMagic-title').allInnerTexts();
    await page.waitForFunction(
      () => document.querySelectorAll('#agent-magic-sessions .jp-AgentMagic-session').length >= 2
    );
    out.sidebarTitles = await sessionTitles();
    out.pill = await current.evaluate(row => {
      const title = row.querySelector('.jp-AgentMagic-title');
      const pill = row.querySelector('.jp-AgentMagic-current');
      const r = row.querySelector('.jp-AgentMagic-titleRow').getBoundingClientRect();
      const p = pill.getBoundingClientRect();
      return {
        text: pill.innerText,
        inside: p.left >= r.left - 0.5 && p.right <= r.right + 0.5,
        fullWidth: pill.scrollWidth <= Math.ceil(p.width),
        titleEllipsis: title.scrollWidth > title.clientWidth,
        title: title.innerText
      };
    });
    out.sidebarShotLight = await shot(sidebar, 'ux-sidebar-light');

    // -- the dark theme: a new approval prompt, the bar, the slider, the sidebar
    await setTheme(page, 'JupyterLab Dark', false);
    await startCell(page, 't4');
    const t4 = await cellById(page, 't4');
    const approval4 = t4.locator('.am-approval');
    await approval4.locator('.am-code').waitFor({ timeout: KERNEL_TIMEOUT });
    out.approvalShotDark = await shot(approval4, 'ux-approval-dark');
    out.statusWhileRunningDark = await kernelStatusText(page);
    // Stop while the prompt waits: the interruption is said once; the unanswered prompt collapses
    await t4.locator('.am-bar .am-stop').click();
    await t4.locator('.am-bar[data-outcome="interrupted"]').waitFor({ timeout: KERNEL_TIMEOUT });
    await waitForKernelIdle(page);
    await approval4.locator('.am-approval-expired').waitFor({ state: 'visible' });
    out.stopped = {
      text: (await t4.locator('.jp-Cell-outputArea').innerText()).trim(),
      barStatus: (await t4.locator('.am-bar .am-bar-status').innerText()).trim(),
      expired: (await approval4.locator('.am-approval-expired').innerText()).trim(),
      buttonsShown: await approval4.locator('.am-approval-buttons').isVisible(),
      errorName: await t4.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').innerText()
    };
    out.stoppedShotDark = await shot(t4.locator('.jp-Cell-outputArea'), 'ux-stopped-dark');
    out.barShotDark = await shot(bar2, 'ux-bar-dark');
    out.sliderShotDark = await shot(slider, 'ux-slider-dark');
    out.sidebarShotDark = await shot(sidebar, 'ux-sidebar-dark');
    await setTheme(page, 'JupyterLab Light', true);

    // -- `%agent rewind` links the cell to re-run in its Markdown output; the extension marks it
    await runAt(page, 't5');
    await page.waitForFunction(() => window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells.find(c => c.id === 'load')?.getSource() === 'x = 5');
    await runAt(page, 'load');
    await runAt(page, 'rw');
    const rw = await cellById(page, 'rw');
    out.magicRewind = (await rw.locator('.jp-OutputArea-output').first().innerText()).trim();
    await marker.waitFor({ timeout: 10_000 });
    out.magicMarker = (await marker.textContent()).trim(); // (innerText is "" for a cell out of view)
    await rw.locator('a.am-stale-cell').click();
    await page.waitForFunction(i => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i, loadIndex);
    out.activeAfterMagicLink = await page.evaluate(() => window.jupyterapp.shell.currentWidget.content.activeCell.model.id);
    await runAt(page, 'load');
    await marker.waitFor({ state: 'detached', timeout: 10_000 });
    out.magicMarkerAfterRun = await load.locator('.jp-AgentMagic-rerun').count();

    // -- a kernel restart: the widgets stay on screen but say they are stale, their actions off
    await page.evaluate(() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart());
    await waitForKernelIdle(page);
    const staleLine = slider.locator('.am-stale-widget');
    await staleLine.waitFor({ state: 'visible', timeout: 15_000 });
    out.staleSlider = (await staleLine.innerText()).trim();
    out.staleRewindDisabled = await slider.locator('.am-rewind').isDisabled();
    out.staleRangeDisabled = await slider.locator('.am-range').isDisabled();
    out.staleBar = (await bar2.locator('.am-stale-widget').innerText()).trim();
    out.staleForkDisabled = await bar2.locator('.am-fork').isDisabled();
    out.staleShot = await shot(slider, 'ux-slider-stale-light');
    report(out);
  },
  // The denied Bash call and the restart are on purpose.
  { allowErrors: [/restart/i] }
);
