// With real-time collaboration, an edit written to disk while the notebook is open
// (an agent with no live link to this page) reaches the shared document and is not
// overwritten by the next save. NB_PATH has cells one / two / three; the test writes
// AGENT_TEXT into cell "two" on disk once this script has typed an unsaved edit into
// cell "one" and created LAB_ROOT/opened.marker.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { cellIndex, fileContent, openLab, openNotebook, report, screenshot, typeInCell, withPage } from './lab.mjs';

const NB = process.env.NB_PATH;
const AGENT_TEXT = process.env.AGENT_TEXT;

function source(id) {
  return window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells.find(c => c.id === id)?.getSource();
}

await withPage('rtc-disk-edit', async page => {
  const out = {};
  await openLab(page);
  await openNotebook(page, NB);
  await typeInCell(page, await cellIndex(page, 'one'), 'x = 100  # my unsaved edit');
  writeFileSync(path.join(process.env.LAB_ROOT, 'opened.marker'), 'open');
  out.agentEditSeen = await page
    .waitForFunction(([fn, text]) => eval(fn)('two') === text, [`(${source})`, AGENT_TEXT], { timeout: 60_000 })
    .then(() => true, () => false);
  out.modelOne = await page.evaluate(fn => eval(fn)('one'), `(${source})`);
  out.modelTwo = await page.evaluate(fn => eval(fn)('two'), `(${source})`);
  await typeInCell(page, await cellIndex(page, 'three'), 'z = 300  # edited after the agent');
  // Save without awaiting the command: a "file changed on disk" dialog would hold it forever.
  await page.evaluate(() => {
    void window.jupyterapp.commands.execute('docmanager:save');
  });
  await page.waitForFunction(
    () => !window.jupyterapp.shell.currentWidget.context.model.dirty || document.querySelector('.jp-Dialog') !== null,
    undefined,
    { timeout: 30_000 }
  );
  out.dialog = await page.evaluate(() => document.querySelector('.jp-Dialog')?.innerText ?? null);
  if (out.dialog !== null) {
    // JupyterLab's own check (the file's hash moved under it) asks; "Overwrite" saves the shared
    // document, which already holds the agent's edit.
    await screenshot(page, 'rtc-disk-edit-dialog');
    await page.locator('.jp-Dialog button', { hasText: 'Overwrite' }).click();
    await page.waitForFunction(() => !window.jupyterapp.shell.currentWidget.context.model.dirty, undefined, {
      timeout: 30_000
    });
  }
  out.saved = await fileContent(page, NB);
  // The server saves the shared document on its own too: wait past its save delay and read again.
  await page.waitForTimeout(3000);
  out.savedLater = await fileContent(page, NB);
  report(out);
});
