// Exactness of live edits and rewinds in the open notebook, by all three routes.
//
// NB_PATH is a notebook with cells load, every kind of output (tests/notebook_fixtures.py),
// ask and rewind. The fake API answers the ask cell's prompt by replacing, inserting and
// deleting cells. Three turns, each undone by another route: `%agent rewind`, the
// checkpoint slider, the sidebar. After each: the model's JSON, what the page renders,
// the saved file, and a second application of the same rewind (through the server's
// REST API, with the open notebook's content), which must find nothing to change.
import {
  cellIndex,
  dialogCount,
  fileContent,
  openLab,
  openNotebook,
  openSidebarPanel,
  report,
  runCellAt,
  saveNotebook,
  screenshot,
  typeInCell,
  waitForAgentLink,
  waitForOutputText,
  withPage
} from './lab.mjs';

const NB = process.env.NB_PATH;
const LINKED = process.env.LINKED !== '0';
const TURN_TIMEOUT = 90_000;
const NAME = process.env.SHOT_PREFIX ?? 'live-exact';

/** The open notebook: the model's JSON, and each cell's rendered output text. */
async function snapshot(page) {
  return page.evaluate(() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const json = panel.context.model.toJSON();
    const rendered = {};
    panel.content.widgets.forEach(cell => {
      const area = cell.node.querySelector('.jp-OutputArea');
      rendered[cell.model.id] = {
        outputs: area ? area.querySelectorAll(':scope > .jp-OutputArea-child').length : 0,
        text: area ? area.innerText : '',
        images: cell.node.querySelectorAll('.jp-RenderedImage img, .jp-RenderedMarkdown img').length
      };
    });
    return { json, rendered, dirty: panel.context.model.dirty };
  });
}

/** Apply the same rewind again through the REST API, with the open content; returns its changes. */
async function rewindAgain(page, sessionId, checkpointId) {
  return page.evaluate(
    async ({ sid, cp, nb, token }) => {
      const panel = window.jupyterapp.shell.currentWidget;
      const base = window.jupyterapp.serviceManager.serverSettings.baseUrl;
      const response = await fetch(`${base}agent-magic/api/sessions/${sid}/rewind`, {
        method: 'POST',
        headers: { Authorization: `token ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ checkpoint_id: cp, dry_run: false, open: { [nb]: panel.context.model.toJSON() } })
      });
      const body = await response.json();
      return { status: response.status, changes: body.changes, live: body.live, summary: body.summary };
    },
    { sid: sessionId, cp: checkpointId, nb: NB, token: process.env.LAB_TOKEN }
  );
}

/** Scroll the markdown cell with the attachment into view and wait for its image to render. */
async function waitMarkdownImage(page) {
  await page.evaluate(async () => {
    const notebook = window.jupyterapp.shell.currentWidget.content;
    const cell = notebook.widgets.find(c => c.model.id === 'md-attach');
    await notebook.scrollToCell(cell);
  });
  await page
    .waitForFunction(() => {
      const notebook = window.jupyterapp.shell.currentWidget.content;
      const cell = notebook.widgets.find(c => c.model.id === 'md-attach');
      return cell.node.querySelector('.jp-RenderedMarkdown img') !== null;
    }, undefined, { timeout: 10_000 })
    .catch(() => undefined); // the snapshot records what is there; the test says what is missing
}

async function waitRestored(page) {
  await page.waitForFunction(
    () => {
      const cells = window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells;
      const streams = cells.find(c => c.id === 'streams');
      return cells.some(c => c.id === 'raw') && streams && streams.toJSON().outputs.length === 2;
    },
    undefined,
    { timeout: TURN_TIMEOUT }
  );
}

async function runTurn(page) {
  const ask = await cellIndex(page, 'ask');
  await runCellAt(page, ask, { timeout: TURN_TIMEOUT });
  await waitForOutputText(page, 'Done.', { cell: ask });
  await page.waitForFunction(() => {
    const cells = window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells;
    return !cells.some(c => c.id === 'raw');
  });
  const provenance = await page.evaluate(
    () =>
      window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells
        .find(c => c.id === 'streams')
        .getMetadata('agent_magic')
  );
  return provenance;
}

async function afterRewind(page, out, key, prov) {
  await waitRestored(page);
  await waitMarkdownImage(page);
  out[key] = await snapshot(page);
  await screenshot(page, `${NAME}-${key}`);
  await saveNotebook(page);
  out[`${key}Saved`] = await fileContent(page, NB);
  out[`${key}Again`] = await rewindAgain(page, prov.session_id, prov.checkpoint_id);
  out[`${key}Dialogs`] = await dialogCount(page);
}

await withPage(NAME, async page => {
  const out = {};
  await openLab(page);
  await openNotebook(page, NB);
  out.opened = await snapshot(page);
  await runCellAt(page, await cellIndex(page, 'load'));
  if (LINKED) {
    await waitForAgentLink(page);
  }

  // Turn 1, undone by `%agent rewind`.
  let prov = await runTurn(page);
  out.turns = [prov];
  out.afterTurn1 = await snapshot(page);
  await saveNotebook(page);
  out.afterTurn1Saved = await fileContent(page, NB);
  const rewindCell = await cellIndex(page, 'rewind');
  await typeInCell(page, rewindCell, `%agent rewind ${prov.checkpoint_id.slice(0, 12)}`);
  await runCellAt(page, rewindCell);
  await afterRewind(page, out, 'magic', prov);
  if (!LINKED) {
    report(out);
    return;
  }

  // Turn 2, undone with the checkpoint slider (one stop left of "now": before turn 2).
  prov = await runTurn(page);
  out.turns.push(prov);
  await typeInCell(page, await cellIndex(page, 'rewind'), '%agent checkpoints');
  await runCellAt(page, await cellIndex(page, 'rewind'));
  const slider = page.locator('.jp-NotebookPanel:visible .am-slider').last();
  await slider.waitFor();
  const ticks = slider.locator('.am-tick');
  await ticks.last().waitFor();
  await ticks.nth((await ticks.count()) - 2).click();
  await slider.locator('.am-preview-head').waitFor({ timeout: TURN_TIMEOUT });
  out.sliderPreview = (await slider.locator('.am-preview').innerText()).trim();
  await slider.locator('.am-rewind').click();
  await slider.locator('.am-confirm').click();
  await slider.locator('.am-result-head').waitFor({ timeout: TURN_TIMEOUT });
  out.sliderResult = (await slider.locator('.am-result').innerText()).trim();
  await afterRewind(page, out, 'slider', prov);

  // Turn 3, undone from the sessions sidebar.
  prov = await runTurn(page);
  out.turns.push(prov);
  const panel = await openSidebarPanel(page, 'agent-magic-sessions');
  await panel.locator('[data-action="refresh"]').click();
  const session = panel.locator(`li.jp-AgentMagic-session[data-session-id="${prov.session_id}"]`).first();
  await session.waitFor();
  await session.locator(':scope > .jp-AgentMagic-row [data-action="checkpoints"]').click();
  const checkpoint = session.locator(
    `:scope > ol.jp-AgentMagic-checkpoints > li.jp-AgentMagic-checkpoint[data-checkpoint-id="${prov.checkpoint_id}"]`
  );
  await checkpoint.waitFor();
  await checkpoint.locator('[data-action="rewind"]').click();
  await page.locator('.jp-AgentMagic-rewindPreview').waitFor();
  // Enter must not rewind: the focused button is the safe one.
  out.sidebarDialogFocus = await page.evaluate(() => document.activeElement?.textContent?.trim() ?? null);
  await page.locator('.jp-Dialog button', { hasText: 'Rewind' }).last().click();
  await page.locator('.jp-Dialog').waitFor({ state: 'detached' });
  await afterRewind(page, out, 'sidebar', prov);
  report(out);
});
