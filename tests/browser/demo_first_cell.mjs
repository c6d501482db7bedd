// `agent-magic demo` as a new user meets it: open the printed URL, run the quickstart from the
// top down to its first %%agent cell, read the answer. LAB_URL/LAB_TOKEN come from the demo.
import { openLab, report, runCellAt, screenshot, waitForOutputText, withPage } from './lab.mjs';

await withPage('demo-first-cell', async page => {
  const out = {};
  await openLab(page, { path: 'quickstart.ipynb' });
  await page.waitForFunction(() => window.jupyterapp.shell.currentWidget?.context?.isReady === true);
  await page.waitForFunction(() => window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle', undefined, { timeout: 60_000 });
  out.dirtyAfterOpen = await page.evaluate(() => window.jupyterapp.shell.currentWidget.context.model.dirty);
  out.newsToast = (await page.locator('.Toastify__toast', { hasText: /news/i }).count()) > 0;
  const sources = await page.evaluate(() =>
    window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells.map(c => [c.cell_type, c.getSource()])
  );
  const first = sources.findIndex(([type, src]) => type === 'code' && src.startsWith('%%agent'));
  for (let i = 0; i <= first; i++) {
    if (sources[i][0] === 'code') {
      await runCellAt(page, i, { timeout: 120_000 });
    }
  }
  await waitForOutputText(page, '[scripted]', { cell: first });
  out.answer = await page.evaluate(
    i => window.jupyterapp.shell.currentWidget.content.widgets[i].node.querySelector('.jp-OutputArea')?.innerText ?? '',
    first
  );
  await screenshot(page, 'demo-first-cell');
  report(out);
});
