/**
 * The one place where nbformat JSON and JupyterLab's notebook model meet.
 *
 * On disk (and in agent_magic's checkpoint records) multi-line strings are
 * lists of lines. JupyterLab's shared model wants them joined: the contents
 * API hands it notebooks read by `nbformat.reads`, which joins them
 * (`rejoin_lines`) and drops transient fields (`strip_transient`). Anything we
 * put into the model must take the same form first; @jupyter/ydoc, given a
 * stream's list of lines, joins them with commas (`text.join()`).
 *
 * `toModel*` mirror `nbformat.v4.rwbase.rejoin_lines` + `strip_transient`, and
 * tests/test_labext_convert.py checks them against nbformat's own result.
 * This module has no runtime imports, so node can load its compiled form.
 */

import type * as nbformat from '@jupyterlab/nbformat';

type JSONDict = { [key: string]: unknown };

function isDict(value: unknown): value is JSONDict {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isLines(value: unknown): value is string[] {
  return Array.isArray(value) && value.every(v => typeof v === 'string');
}

function copy<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/** nbformat's `_is_json_mime`: JSON mime types hold objects, never lines. */
export function isJsonMime(mime: string): boolean {
  return mime === 'application/json' || (mime.startsWith('application/') && mime.endsWith('+json'));
}

/** A multi-line string as the model wants it (a list of lines joined, as is). */
export function joinLines(value: unknown): string {
  if (isLines(value)) {
    return value.join('');
  }
  return typeof value === 'string' ? value : '';
}

/** `_rejoin_mimebundle`: every non-JSON value that is a list of lines, joined. */
function rejoinBundle(bundle: unknown): unknown {
  if (!isDict(bundle)) {
    return bundle;
  }
  for (const [mime, value] of Object.entries(bundle)) {
    if (!isJsonMime(mime) && isLines(value)) {
      bundle[mime] = value.join('');
    }
  }
  return bundle;
}

/** One output as the model wants it (a copy). */
export function toModelOutput(output: nbformat.IOutput): nbformat.IOutput {
  const out = copy(output) as JSONDict;
  const kind = typeof out.output_type === 'string' ? out.output_type : '';
  if (kind === 'execute_result' || kind === 'display_data') {
    if ('data' in out) {
      rejoinBundle(out.data);
    }
  } else if (kind && isLines(out.text)) {
    out.text = out.text.join('');
  }
  return out as nbformat.IOutput;
}

/** A cell as the model wants it (a copy): lines joined, transient fields dropped, metadata present. */
export function toModelCell(cell: nbformat.ICell): nbformat.ICell {
  const out = copy(cell) as JSONDict;
  if ('source' in out) {
    out.source = joinLines(out.source);
  }
  if (isDict(out.attachments)) {
    for (const bundle of Object.values(out.attachments)) {
      rejoinBundle(bundle);
    }
  }
  if (!isDict(out.metadata)) {
    out.metadata = {};
  } else if ('trusted' in out.metadata) {
    delete out.metadata.trusted;
  }
  if (out.cell_type === 'code') {
    const outputs = Array.isArray(out.outputs) ? (out.outputs as nbformat.IOutput[]) : [];
    out.outputs = outputs.map(toModelOutput);
    if (out.execution_count === undefined) {
      out.execution_count = null;
    }
  }
  return out as nbformat.ICell;
}

/** A whole notebook as the model wants it (a copy). */
export function toModelNotebook(nb: nbformat.INotebookContent): nbformat.INotebookContent {
  const { cells, ...rest } = nb;
  const out = copy(rest) as nbformat.INotebookContent; // the cells are copied one by one below
  out.cells = (cells ?? []).map(toModelCell);
  const meta = out.metadata as JSONDict | undefined;
  if (isDict(meta)) {
    for (const key of ['orig_nbformat', 'orig_nbformat_minor', 'signature']) {
      delete meta[key];
    }
  }
  return out;
}

/**
 * An open notebook's content as nbformat JSON, in `nbformat.reads`' form
 * (what the person sees, saved or not). The model's own `toJSON()` is that
 * form already but for transient fields; pass it through the same conversion
 * so both directions agree by construction.
 */
export function fromModelJSON(json: nbformat.INotebookContent): nbformat.INotebookContent {
  return toModelNotebook(json);
}
