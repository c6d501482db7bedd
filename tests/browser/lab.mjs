// Helpers for driving JupyterLab in headless Chromium with playwright-core.
//
// Scripts run under pytest's `run_playwright` fixture (tests/browser/conftest.py),
// which passes the server in the environment: LAB_URL, LAB_TOKEN, LAB_ROOT,
// ARTIFACTS_DIR, CHROMIUM_PATH. A script does its work inside `withPage`, and
// hands a JSON value back to Python with `report`.
//
//   import { withPage, openLab, newNotebook, runCell, waitForOutputText, report } from './lab.mjs';
//   await withPage('my-test', async (page) => {
//     await openLab(page);
//     await newNotebook(page);
//     await runCell(page, '1+1');
//     report({ output: await waitForOutputText(page, '2') });
//   });
//
// The server runs with --LabApp.expose_app_in_browser, so `window.jupyterapp`
// is the JupyterLab application and `runCommand` can run any command id.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** Chromium flags that keep a headless run quiet and working as root in a container. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
];

/** Default wait, in ms, for anything that involves a kernel. */
export const KERNEL_TIMEOUT = 60_000;

/** The server and paths passed in by the `run_playwright` fixture. */
export function labConfig() {
  const need = name => {
    const value = process.env[name];
    if (!value) {
      throw new Error(`${name} is not set: run this script through pytest's run_playwright fixture`);
    }
    return value;
  };
  return {
    url: need('LAB_URL').replace(/\/$/, ''),
    token: need('LAB_TOKEN'),
    root: process.env.LAB_ROOT ?? '',
    artifactsDir: process.env.ARTIFACTS_DIR ?? path.resolve('..', '..', 'test-artifacts'),
    chromium: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
  };
}

/** Hand a JSON-serialisable value back to pytest (`PlaywrightResult.data`). */
export function report(data) {
  console.log('@@result ' + JSON.stringify(data));
}

/**
 * Launch Chromium. playwright-core gives each launch a fresh temporary profile
 * (its own --user-data-dir), removed when the browser closes.
 */
export async function launchBrowser(options = {}) {
  return chromium.launch({
    executablePath: labConfig().chromium,
    args: CHROMIUM_ARGS,
    ...options
  });
}

/**
 * Whether a console message comes from agent-magic: our labextension's bundle
 * (served under .../agent-magic-labextension/...), our widgets' ES modules
 * (anywidget imports them from blob: URLs), or text naming us.
 */
export function isOurConsoleMessage(msg) {
  const url = msg.location()?.url ?? '';
  return /agent[-_]magic/i.test(url) || url.startsWith('blob:') || /agent[-_]magic/i.test(msg.text());
}

/**
 * Run `fn(page)` in a fresh browser and close it afterwards. Fails if the page
 * threw an uncaught error or our code logged a console error, even when `fn`
 * passed; `allowErrors` lists regexps for errors a script provokes on purpose.
 * On failure, saves `<name>-failure.png` and the browser console to
 * ARTIFACTS_DIR, then rethrows so the script exits non-zero.
 */
export async function withPage(
  name,
  fn,
  { viewport = { width: 1366, height: 900 }, allowErrors = [] } = {}
) {
  const browser = await launchBrowser();
  const consoleLines = [];
  const errors = [];
  const allowed = text => allowErrors.some(re => re.test(text));
  try {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    page.setDefaultTimeout(30_000);
    page.on('console', msg => {
      consoleLines.push(`[${msg.type()}] ${msg.text()}`);
      if (msg.type() === 'error' && isOurConsoleMessage(msg) && !allowed(msg.text())) {
        errors.push(`console error: ${msg.text()} (${msg.location()?.url ?? '?'})`);
      }
    });
    page.on('pageerror', err => {
      consoleLines.push(`[pageerror] ${err.message}`);
      if (!allowed(err.message)) {
        errors.push(`uncaught page error: ${err.stack ?? err.message}`);
      }
    });
    try {
      const result = await fn(page);
      if (errors.length > 0) {
        throw new Error(`JavaScript errors in the page:\n${errors.join('\n')}`);
      }
      return result;
    } catch (err) {
      await screenshot(page, `${name}-failure`).catch(() => undefined);
      console.error(`--- browser console (${name}) ---\n${consoleLines.join('\n')}`);
      throw err;
    }
  } finally {
    await browser.close();
  }
}

/** Open JupyterLab (optionally at a file, relative to the server root) and wait until it is restored. */
export async function openLab(page, { path: filePath } = {}) {
  const { url, token } = labConfig();
  const tree = filePath ? '/tree/' + filePath.split('/').map(encodeURIComponent).join('/') : '';
  await page.goto(`${url}/lab${tree}?token=${encodeURIComponent(token)}&reset`);
  await page.waitForFunction(() => window.jupyterapp !== undefined);
  await page.evaluate(() => window.jupyterapp.restored);
  await page.locator('#jupyterlab-splash').waitFor({ state: 'detached' });
}

/** Run a JupyterLab command by id and return its result if it is JSON-serialisable. */
export async function runCommand(page, id, args = {}) {
  return page.evaluate(
    async ([commandId, commandArgs]) => {
      const result = await window.jupyterapp.commands.execute(commandId, commandArgs);
      try {
        return JSON.parse(JSON.stringify(result ?? null));
      } catch {
        return null; // widgets and other cyclic objects
      }
    },
    [id, args]
  );
}

/** Wait until the current widget's kernel (a notebook or console) is idle. */
export async function waitForKernelIdle(page, { timeout = KERNEL_TIMEOUT } = {}) {
  await page.waitForFunction(
    () => {
      const widget = window.jupyterapp.shell.currentWidget;
      const kernel = widget?.sessionContext?.session?.kernel;
      return kernel?.status === 'idle';
    },
    undefined,
    { timeout }
  );
}

async function waitForCurrentNotebook(page, timeout) {
  await page.waitForFunction(
    () => {
      const widget = window.jupyterapp.shell.currentWidget;
      return widget?.hasClass?.('jp-NotebookPanel') && widget.context.isReady;
    },
    undefined,
    { timeout }
  );
  await currentNotebook(page).waitFor();
  await waitForKernelIdle(page, { timeout });
}

/** Create an untitled notebook with a kernel; returns its path relative to the server root. */
export async function newNotebook(page, { kernel = 'python3', timeout = KERNEL_TIMEOUT } = {}) {
  await runCommand(page, 'notebook:create-new', { kernelName: kernel });
  await waitForCurrentNotebook(page, timeout);
  return page.evaluate(() => window.jupyterapp.shell.currentWidget.context.path);
}

/** Open a notebook by path (relative to the server root) and wait for its kernel. */
export async function openNotebook(page, notebookPath, { timeout = KERNEL_TIMEOUT } = {}) {
  await runCommand(page, 'docmanager:open', { path: notebookPath });
  await waitForCurrentNotebook(page, timeout);
}

/** The visible notebook panel. */
export function currentNotebook(page) {
  return page.locator('.jp-NotebookPanel:visible');
}

/**
 * Type `code` into the active cell of the current notebook and run it (Shift+Enter).
 * Returns the index of the cell that ran.
 */
export async function runCell(page, code) {
  const notebook = currentNotebook(page);
  const editor = notebook.locator('.jp-Cell.jp-mod-active .cm-content');
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  // insertText bypasses CodeMirror's auto-closing of brackets and quotes.
  await page.keyboard.insertText(code);
  const index = await page.evaluate(
    () => window.jupyterapp.shell.currentWidget.content.activeCellIndex
  );
  await page.keyboard.press('Shift+Enter');
  return index;
}

/**
 * Wait for an output in the current notebook containing `text`; returns that output's text.
 * With `cell`, only that cell's outputs count.
 */
export async function waitForOutputText(page, text, { cell, timeout = KERNEL_TIMEOUT } = {}) {
  const scope =
    cell === undefined
      ? currentNotebook(page)
      : currentNotebook(page).locator('.jp-Notebook .jp-Cell').nth(cell);
  const output = scope.locator('.jp-OutputArea-output', { hasText: text }).first();
  await output.waitFor({ timeout });
  return (await output.innerText()).trim();
}

/** Click the element matching a CSS/playwright selector once it is visible. */
export async function click(page, selector, options = {}) {
  await page.locator(selector).first().click(options);
}

/** Open a panel of the left or right sidebar by its widget id, as a person clicking its tab. */
export async function openSidebarPanel(page, id) {
  const panel = page.locator(`#${id}`);
  if (!(await panel.isVisible())) {
    await click(page, `.jp-SideBar .lm-TabBar-tab[data-id="${id}"]`);
  }
  await panel.waitFor({ state: 'visible' });
  return panel;
}

/** Save a full-page screenshot as ARTIFACTS_DIR/<name>.png; returns its path. */
export async function screenshot(page, name) {
  const { artifactsDir } = labConfig();
  mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

// --- Notebook model and agent-magic helpers ---------------------------------

/** The current notebook's cells from its model: id, type, source, and agent provenance. */
export async function notebookCells(page) {
  return page.evaluate(() => {
    const model = window.jupyterapp.shell.currentWidget.context.model;
    return model.sharedModel.cells.map(c => ({
      id: c.id,
      type: c.cell_type,
      source: c.getSource(),
      provenance: c.getMetadata('agent_magic') ?? null,
      outputs: c.cell_type === 'code' ? c.toJSON().outputs.length : 0,
      executionCount: c.cell_type === 'code' ? c.toJSON().execution_count : null
    }));
  });
}

/** Whether the current notebook has unsaved changes. */
export async function isDirty(page) {
  return page.evaluate(() => window.jupyterapp.shell.currentWidget.context.model.dirty);
}

/** How many dialogs (e.g. "File changed on disk") are open. */
export async function dialogCount(page) {
  return page.locator('.jp-Dialog').count();
}

/** Make cell `index` of the current notebook the active one. */
export async function selectCell(page, index) {
  await page.evaluate(i => {
    window.jupyterapp.shell.currentWidget.content.activeCellIndex = i;
  }, index);
}

/**
 * Type `text` into cell `index` as a person would (click, select all, type),
 * replacing its source; leaves the notebook unsaved. Ends in command mode.
 */
export async function typeInCell(page, index, text) {
  const editor = currentNotebook(page).locator('.jp-Notebook .jp-Cell').nth(index).locator('.cm-content');
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.insertText(text);
  await page.keyboard.press('Escape');
}

/**
 * Run cell `index` (it becomes the active cell first) and wait until it has finished
 * (JupyterLab's run command resolves when the kernel replies).
 */
export async function runCellAt(page, index, { timeout = KERNEL_TIMEOUT } = {}) {
  await selectCell(page, index);
  await page.evaluate(async ms => {
    let timer;
    const expired = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the cell did not finish within ${ms} ms`)), ms);
    });
    try {
      await Promise.race([window.jupyterapp.commands.execute('notebook:run-cell'), expired]);
    } finally {
      clearTimeout(timer);
    }
  }, timeout);
}

/** Save the current notebook with JupyterLab's save command and wait until it is clean. */
export async function saveNotebook(page, { timeout = 30_000 } = {}) {
  await runCommand(page, 'docmanager:save');
  await page.waitForFunction(
    () => !window.jupyterapp.shell.currentWidget.context.model.dirty,
    undefined,
    { timeout }
  );
}

/** A file's content from the server (the Contents API), e.g. to see what a save wrote. */
export async function fileContent(page, filePath) {
  return page.evaluate(async p => {
    const model = await window.jupyterapp.serviceManager.contents.get(p, { content: true });
    return model.content;
  }, filePath);
}

/**
 * Wait until the current notebook's kernel has linked to agent-magic's extension
 * (after `%load_ext agent_magic`): the live-edit comm is open.
 */
export async function waitForAgentLink(page, { timeout = KERNEL_TIMEOUT } = {}) {
  await page.locator('.jp-NotebookPanel:visible[data-agent-magic-link="connected"]').waitFor({ timeout });
}

/** The state of the current notebook's link to agent-magic: 'none', 'connecting' or 'connected'. */
export async function agentLinkState(page) {
  return page.evaluate(() => window.jupyterapp.shell.currentWidget.node.dataset.agentMagicLink ?? null);
}

/** The index of the cell with this id in the current notebook (-1 if none). */
export async function cellIndex(page, cellId) {
  return page.evaluate(
    id => window.jupyterapp.shell.currentWidget.context.model.sharedModel.cells.findIndex(c => c.id === id),
    cellId
  );
}
