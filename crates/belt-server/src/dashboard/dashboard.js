// belt dashboard: one page over the HTTP API. Model text is only ever set with
// textContent (Markdown is rendered node by node, see renderMarkdown) or shown in a
// sandboxed iframe, never parsed as HTML here.
'use strict';

const $ = (id) => document.getElementById(id);
let token = localStorage.getItem('belt-token') || '';
let view = null; // the open run
let timers = [];

// ---- API ---------------------------------------------------------------------------

async function call(method, path, body) {
  const headers = { Authorization: 'Bearer ' + token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) {
    showToken('The server refused this token.');
    throw new Error('unauthorized');
  }
  return r;
}

async function json(method, path, body) {
  const r = await call(method, path, body);
  const v = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(v.error ? v.error.message : r.status + ' ' + r.statusText);
  return v;
}

// ---- token -------------------------------------------------------------------------

function showToken(message) {
  timers.forEach(clearInterval);
  timers = [];
  $('app').hidden = true;
  $('token-panel').hidden = false;
  $('token-error').textContent = message || '';
  $('token-input').focus();
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token-input').value.trim();
  localStorage.setItem('belt-token', token);
  boot();
});

$('forget').addEventListener('click', () => {
  localStorage.removeItem('belt-token');
  token = '';
  showToken('');
});

async function boot() {
  if (!token) return showToken('');
  try {
    await json('GET', '/v1/runs?limit=1');
  } catch (e) {
    if (e.message !== 'unauthorized') showToken(e.message);
    return;
  }
  $('token-panel').hidden = true;
  $('app').hidden = false;
  $('conn').textContent = 'connected';
  loadPatterns();
  refreshRuns();
  refreshApprovals();
  timers.push(setInterval(refreshRuns, 3000), setInterval(refreshApprovals, 1500), setInterval(tick, 500));
  const id = location.hash.slice(1);
  if (id) openRun(id);
}

// ---- runs list and form ------------------------------------------------------------

async function loadPatterns() {
  const { patterns } = await json('GET', '/v1/patterns');
  const select = $('pattern');
  select.textContent = '';
  for (const p of patterns) {
    const o = document.createElement('option');
    o.value = p.name;
    o.textContent = p.name;
    o.title = p.description;
    select.appendChild(o);
  }
}

// A cost as belt writes it everywhere: calls whose model has no known price are not in the
// figure, which is then a lower bound ("≥ $0.0123 (2 calls unpriced)"), or "unknown" when
// no priced call cost anything.
function money(x, unpriced) {
  const known = '$' + (x || 0).toFixed(x >= 1 ? 2 : 4);
  if (!unpriced) return known;
  if (!(x > 0)) return 'unknown';
  return `≥ ${known} (${unpriced} call${unpriced === 1 ? '' : 's'} unpriced)`;
}

// The store lists a run's steps and cost once it has finished: a running run's come from
// its own view (the open run's events, else GET /v1/runs/ID, which sums its recorded steps).
async function liveCounts(r) {
  if (view && view.id === r.run_id && view.steps.size) {
    const t = tally();
    return { steps: t.done + t.failed + t.cancelled, cost: view.cost, unpriced: view.unpriced };
  }
  try {
    const v = await json('GET', '/v1/runs/' + encodeURIComponent(r.run_id));
    return { steps: v.steps, cost: v.cost_usd, unpriced: v.unpriced_calls };
  } catch (e) {
    return { steps: r.steps, cost: r.cost_usd, unpriced: r.unpriced_calls };
  }
}

function runMeta(r, c) {
  return `${r.status} · ${r.pattern} · ${c.steps} step${c.steps === 1 ? '' : 's'} · ${money(c.cost, c.unpriced)}`;
}

async function refreshRuns() {
  let list;
  try {
    list = await json('GET', '/v1/runs?limit=50');
  } catch (e) {
    return;
  }
  const ul = $('runs');
  ul.textContent = '';
  const live = [];
  for (const r of list.runs) {
    const li = document.createElement('li');
    li.dataset.runId = r.run_id;
    li.dataset.status = r.status;
    if (view && view.id === r.run_id) li.classList.add('selected');
    const task = document.createElement('div');
    task.textContent = r.task;
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = runMeta(r, { steps: r.steps, cost: r.cost_usd, unpriced: r.unpriced_calls });
    if (r.status === 'running' && live.length < 10) live.push([r, meta]);
    li.append(task, meta);
    li.addEventListener('click', () => openRun(r.run_id));
    ul.appendChild(li);
  }
  for (const [r, meta] of live) meta.textContent = runMeta(r, await liveCounts(r));
}

$('new-run').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('start-error').textContent = '';
  const body = { task: $('task').value, pattern: $('pattern').value };
  if ($('agents').value) body.agents = Number($('agents').value);
  if ($('model').value.trim()) body.model = $('model').value.trim();
  if ($('budget').value) body.budget_usd = Number($('budget').value);
  if ($('review').checked) body.review_plan = true;
  try {
    const accepted = await json('POST', '/v1/runs', body);
    openRun(accepted.run_id);
    refreshRuns();
  } catch (err) {
    $('start-error').textContent = err.message;
  }
});

// ---- Markdown ----------------------------------------------------------------------

// Model text is Markdown; it is shown rendered, built node by node with createElement and
// textContent, so nothing a model writes is ever parsed as HTML (no injection, whatever it
// contains). A small subset: headings, paragraphs, lists, code blocks, quotes, rules,
// `code`, **bold**, *italic* and http(s) links.

function el(tag, cls) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  return e;
}

const INLINE = /(`+)([^`]+?)\1|\*\*(.+?)\*\*|__(.+?)__|\*([^*\s](?:[^*]*[^*\s])?)\*|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;

function inline(parent, s) {
  const re = new RegExp(INLINE.source, 'g');
  let last = 0;
  let m;
  while ((m = re.exec(s))) {
    if (m.index > last) parent.append(document.createTextNode(s.slice(last, m.index)));
    if (m[1]) {
      const c = el('code');
      c.textContent = m[2];
      parent.append(c);
    } else if (m[3] || m[4]) {
      const b = el('strong');
      inline(b, m[3] || m[4]);
      parent.append(b);
    } else if (m[5]) {
      const i = el('em');
      inline(i, m[5]);
      parent.append(i);
    } else {
      const a = el('a');
      a.href = m[7]; // http(s) only, by the pattern
      a.rel = 'noopener noreferrer nofollow';
      a.target = '_blank';
      a.textContent = m[6];
      parent.append(a);
    }
    last = re.lastIndex;
  }
  if (last < s.length) parent.append(document.createTextNode(s.slice(last)));
}

function renderMarkdown(into, text) {
  into.textContent = '';
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  let para = [];
  let list = null;
  const flush = () => {
    if (para.length) {
      const p = el('p');
      inline(p, para.join(' '));
      into.append(p);
    }
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)/);
    if (fence) {
      flush();
      list = null;
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) code.push(lines[i]);
      const pre = el('pre');
      const c = el('code');
      c.textContent = code.join('\n');
      pre.append(c);
      into.append(pre);
      continue;
    }
    const h = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
    const item = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/);
    if (!line.trim()) {
      flush();
      list = null;
    } else if (h) {
      flush();
      list = null;
      // The panel sits under h2/h3: the model's headings nest below them.
      const e = el('h' + Math.min(6, h[1].length + 2));
      inline(e, h[2]);
      into.append(e);
    } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      list = null;
      into.append(el('hr'));
    } else if (item) {
      flush();
      const tag = item[1] ? 'ul' : 'ol';
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        if (item[2] && item[2] !== '1') list.start = Number(item[2]);
        into.append(list);
      }
      const li = el('li');
      inline(li, item[3]);
      list.append(li);
    } else if (/^\s*>/.test(line)) {
      flush();
      list = null;
      const q = el('blockquote');
      inline(q, line.replace(/^\s*>\s?/, ''));
      into.append(q);
    } else if (list && /^\s{2,}\S/.test(line)) {
      // A continuation of the last list item.
      inline(list.lastChild, ' ' + line.trim());
    } else {
      list = null;
      para.push(line.trim());
    }
  }
  flush();
}

// ---- one run -----------------------------------------------------------------------

const TIERS = { worker: 'tier-worker', synthesizer: 'tier-synthesizer', executive: 'tier-executive' };
const BOXES = ['tier-worker', 'tier-synthesizer', 'tier-executive', 'tier-other'];

function resetView(id) {
  if (view && view.source) view.source.close();
  for (const t of BOXES) $(t).querySelector('.agents').textContent = '';
  $('tree-root').textContent = '';
  $('agent-panel').hidden = true;
  $('report-panel').hidden = true;
  $('report-frame').srcdoc = '';
  $('run-note').textContent = '';
  view = { id, steps: new Map(), total: 0, tokens: 0, cost: 0, unpriced: 0, start: null, end: null, status: '', selected: null, source: null, finished: false, pattern: '', shape: null };
}

function setStatus(status) {
  view.status = status;
  const pill = $('run-status');
  pill.textContent = status;
  pill.className = 'pill ' + status;
  $('cancel').hidden = !(status === 'running' || status === 'queued');
}

// The engine records a step stopped by a cancel as failed, with the text of
// StepError::Cancelled (`STEP: cancelled`); its event says error_kind `cancelled`.
function wasCancelled(step, error) {
  return error === step + ': cancelled';
}

// A cascade's step ids: `worker/007`, `synth/LEVEL/003`, `executive`.
function treeKey(step) {
  let m = step.match(/^worker\/(\d+)$/);
  if (m) return { level: 0, index: Number(m[1]) };
  m = step.match(/^synth\/(\d+)\/(\d+)$/);
  if (m) return { level: Number(m[1]), index: Number(m[2]) };
  return step === 'executive' ? { level: Infinity } : null;
}

function pad(i, count) {
  return String(i).padStart(Math.max(3, String(count).length), '0');
}

// The cascade's groups (belt_core::patterns::cascade::balanced_groups): `len` inputs in
// `k` contiguous groups whose sizes differ by at most one; the group of input `i` (0-based).
function groupOf(i, len, k) {
  const base = Math.floor(len / k);
  const extra = len % k;
  const big = extra * (base + 1);
  return i < big ? Math.floor(i / (base + 1)) : extra + Math.floor((i - big) / Math.max(1, base));
}

// The step that merges `step`'s output, from the plan's shape (workers, each synthesizer
// level, and a trailing 1 for the executive when there is one); null at the top.
function parentOf(step) {
  const k = treeKey(step);
  if (!k || !view.shape || k.level === Infinity) return null;
  const s = view.shape;
  const exec = s.length >= 2 && s[s.length - 1] === 1;
  const synths = s.slice(1, exec ? s.length - 1 : s.length);
  const count = k.level === 0 ? s[0] : synths[k.level - 1];
  if (count === undefined || k.index < 1 || k.index > count) return null;
  if (k.level < synths.length) {
    const next = synths[k.level];
    return `synth/${k.level + 1}/${pad(groupOf(k.index - 1, count, next) + 1, next)}`;
  }
  return exec ? 'executive' : null;
}

function isTree(step) {
  return view.pattern === 'cascade' && treeKey(step) !== null;
}

function place(n) {
  let box;
  if (isTree(n.step)) {
    const parent = parentOf(n.step);
    if (parent) {
      box = node(parent, parent === 'executive' ? 'executive' : 'synthesizer').children;
      box.classList.toggle('leaves', n.step.startsWith('worker/'));
    } else {
      box = $('tree-root');
    }
  } else {
    box = $(TIERS[n.tier] || 'tier-other').querySelector('.agents');
  }
  // Keep step order (ids are zero-padded).
  const after = [...box.children].find((c) => c !== n.wrap && c.dataset.step > n.step);
  box.insertBefore(n.wrap, after || null);
}

function node(step, tier) {
  let n = view.steps.get(step);
  if (n) return n;
  const wrap = el('div', 'tnode');
  wrap.dataset.step = step;
  const b = el('button', 'agent pending');
  b.type = 'button';
  b.dataset.step = step;
  b.dataset.status = 'pending';
  b.textContent = step;
  b.addEventListener('click', () => select(step));
  const children = el('div', 'children');
  wrap.append(b, children);
  n = { step, tier, status: 'pending', text: '', model: '', el: b, wrap, children };
  view.steps.set(step, n);
  place(n);
  return n;
}

function mark(n, status) {
  n.status = status;
  n.el.className =
    'agent ' + status + (view.selected === n.step ? ' selected' : '') + (n.truncated ? ' truncated' : '');
  n.el.dataset.status = status;
}

function tally() {
  const all = [...view.steps.values()];
  const of = (s) => all.filter((n) => n.status === s).length;
  return { all, done: of('done'), failed: of('failed'), running: of('running'), cancelled: of('cancelled') };
}

function counts() {
  const t = tally();
  const total = Math.max(view.total, t.all.length);
  $('counts').textContent =
    `${t.done}/${total}` +
    (t.running ? ` · ${t.running} running` : '') +
    (t.failed ? ` · ${t.failed} failed` : '') +
    (t.cancelled ? ` · ${t.cancelled} cancelled` : '');
  $('tokens').textContent = view.tokens.toLocaleString();
  $('cost').textContent = money(view.cost, view.unpriced);
}

function tick() {
  if (!view || !view.start) return;
  const end = view.end || Date.now();
  $('elapsed').textContent = ((end - view.start) / 1000).toFixed(1) + 's';
}

function showText(n) {
  if (view.selected === n.step) renderMarkdown($('agent-text'), n.text || n.error || '');
}

function onEvent(e) {
  const step = e.step;
  switch (e.type) {
    case 'run_started':
      view.start = Date.parse(e.ts);
      view.pattern = e.pattern || view.pattern;
      setStatus('running');
      break;
    case 'plan_ready': {
      view.total = e.shape.reduce((a, b) => a + b, 0) + 1;
      view.shape = e.shape;
      // Steps seen before the shape was known move under their parents.
      for (const n of [...view.steps.values()]) place(n);
      // Workers are known now: show them pending (with their synthesizers above them).
      for (let i = 1; i <= e.shape[0]; i++) node('worker/' + pad(i, e.subtasks), 'worker');
      break;
    }
    case 'step_started': {
      const n = node(step, e.tier);
      n.model = e.model;
      if (String(e.model).startsWith('simulated/') && !view.simNote) {
        view.simNote = true;
        $('run-note').textContent = 'Simulated provider: outputs are simulated, not written by a language model. ' + $('run-note').textContent;
      }
      mark(n, 'running');
      break;
    }
    case 'step_delta': {
      const n = view.steps.get(step);
      if (n) {
        n.text += e.text;
        showText(n);
      }
      break;
    }
    case 'step_completed': {
      const n = node(step, e.tier);
      mark(n, 'done');
      view.tokens += e.input_tokens + e.output_tokens;
      view.cost += e.cost_usd;
      if (e.unpriced) view.unpriced += 1;
      if (view.selected === step && !n.text) loadOutput(step);
      break;
    }
    case 'step_failed': {
      const n = node(step, e.tier);
      n.error = e.error;
      mark(n, e.error_kind === 'cancelled' || wasCancelled(step, e.error) ? 'cancelled' : 'failed');
      break;
    }
    case 'step_truncated': {
      // The step completes all the same; its box says its output is cut off.
      const n = node(step, e.tier);
      n.truncated = true;
      n.el.classList.add('truncated');
      n.el.title = `truncated: ${e.model} stopped at its token cap (${e.max_tokens} tokens)`;
      break;
    }
    case 'step_skipped':
      mark(node(step, e.tier), 'skipped');
      break;
    case 'run_finished':
      view.end = Date.parse(e.ts);
      view.cost = e.cost_usd;
      view.tokens = e.input_tokens + e.output_tokens;
      view.finished = true;
      setStatus(e.status);
      $('run-note').textContent += ' ' + e.stop_reason;
      if (view.source) view.source.close();
      loadFinal();
      break;
  }
  counts();
}

async function openRun(id) {
  resetView(id);
  location.hash = id;
  $('run-view').hidden = false;
  document.querySelectorAll('#runs li').forEach((li) => li.classList.toggle('selected', li.dataset.runId === id));
  let v;
  try {
    v = await json('GET', '/v1/runs/' + encodeURIComponent(id));
  } catch (err) {
    $('run-task').textContent = err.message;
    return;
  }
  $('run-task').textContent = v.task;
  view.pattern = v.pattern;
  setStatus(v.status);
  if (v.error) $('run-note').textContent = v.error;
  const id_ = id;
  // EventSource cannot send headers; the event route takes the token in the query.
  // It reconnects by itself with Last-Event-ID, and the server resumes without a gap.
  const source = new EventSource('/v1/runs/' + encodeURIComponent(id) + '/events?token=' + encodeURIComponent(token));
  view.source = source;
  // Each message is named by its type (`event:`), and a named message reaches only the
  // listeners of its name: listen to every type (EVENT_TYPES is given by the server).
  const listener = (m) => {
    if (!view || view.id !== id_) return;
    onEvent(JSON.parse(m.data));
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, listener);
  source.onopen = () => ($('conn').textContent = 'live');
  source.onerror = () => ($('conn').textContent = view && view.finished ? 'connected' : 'reconnecting…');
}

async function stepsOf() {
  const v = await json('GET', '/v1/runs/' + encodeURIComponent(view.id));
  if (v.result) return v.result.agents.map((a) => ({ step: a.step, tier: a.tier, output: a.output || '', error: a.error, model: a.model, status: a.status }));
  return v.steps_so_far.map((s) => ({ step: s.step, tier: s.tier, output: s.output, model: s.model, status: 'completed' }));
}

async function loadOutput(step) {
  const found = (await stepsOf()).find((s) => s.step === step);
  const n = view.steps.get(step);
  if (found && n && !n.text) {
    n.text = found.output || found.error || '';
    showText(n);
  }
}

function select(step) {
  const previous = view.selected && view.steps.get(view.selected);
  if (previous) previous.el.classList.remove('selected');
  view.selected = step;
  const n = view.steps.get(step);
  n.el.classList.add('selected');
  $('agent-panel').hidden = false;
  $('agent-title').textContent = `${step} · ${n.status}` + (n.model ? ` · ${n.model}` : '');
  renderMarkdown($('agent-text'), n.text || n.error || (n.status === 'done' ? 'loading…' : 'no output yet'));
  if (!n.text && n.status === 'done') loadOutput(step);
}

async function loadFinal() {
  const id = view.id;
  let agents = [];
  try {
    agents = await stepsOf();
  } catch (e) {
    return;
  }
  if (!view || view.id !== id) return;
  for (const a of agents) {
    const n = node(a.step, a.tier);
    n.text = a.output || a.error || n.text;
    n.model = a.model;
    const cancelled = a.status === 'failed' && wasCancelled(a.step, a.error);
    mark(n, a.status === 'completed' ? 'done' : cancelled ? 'cancelled' : a.status);
  }
  counts();
  // Painted from the recorded result (what a test, or a user's script, can wait for).
  $('tree').dataset.loaded = id;
  try {
    const r = await call('GET', '/v1/runs/' + encodeURIComponent(id) + '/documents/html');
    if (!r.ok) return;
    const html = await r.text();
    if (!view || view.id !== id) return;
    // Sandboxed without scripts: the report cannot run any (same origin only so that its
    // text can be read and searched).
    $('report-frame').srcdoc = html;
    $('report-panel').hidden = false;
  } catch (e) {
    /* the report is optional */
  }
  refreshRuns();
}

$('cancel').addEventListener('click', async () => {
  if (!view) return;
  try {
    await json('POST', '/v1/runs/' + encodeURIComponent(view.id) + '/cancel');
  } catch (e) {
    $('run-note').textContent = e.message;
  }
});

// ---- approvals ---------------------------------------------------------------------

async function answer(a, body) {
  try {
    await json('POST', '/v1/runs/' + encodeURIComponent(a.run_id) + '/approvals/' + encodeURIComponent(a.id), body);
  } catch (e) {
    alert(e.message);
  }
  refreshApprovals();
}

function button(label, onclick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', onclick);
  return b;
}

// A plan review's prompt: its first line, the numbered subtasks, and what follows them
// ("… and 80 more").
function planOf(prompt) {
  const lines = String(prompt).split('\n').filter((l) => l.trim());
  const items = [];
  const rest = [];
  for (const l of lines.slice(1)) {
    const m = l.match(/^\s*\d+\.\s+(.*)$/);
    if (m) items.push(m[1]);
    else rest.push(l.trim());
  }
  return { head: lines[0] || '', items, rest };
}

function approvalItem(a) {
  const li = document.createElement('li');
  li.className = 'approval';
  li.dataset.id = a.id;
  const plan = planOf(a.prompt);
  const prompt = el('div', 'prompt');
  prompt.textContent = plan.items.length ? plan.head : a.prompt;
  const meta = el('div', 'meta');
  meta.textContent = `${a.step} · run ${a.run_id.slice(-8)} · default after ${a.timeout_secs}s`;
  // The buttons come before the plan, so that a long plan never pushes them out of sight.
  const actions = el('div', 'actions');
  if (a.kind === 'approval') {
    actions.append(button('Approve', () => answer(a, { approve: true })), button('Reject', () => answer(a, { approve: false })));
  } else if (a.kind === 'select') {
    a.options.forEach((o, i) => actions.append(button(o, () => answer(a, { select: i }))));
  } else {
    const input = document.createElement('input');
    actions.append(input, button('Send', () => answer(a, { text: input.value })));
  }
  li.append(prompt, meta, actions);
  if (plan.items.length) {
    const ol = el('ol', 'plan');
    for (const item of plan.items) {
      const i = el('li');
      i.textContent = item;
      ol.append(i);
    }
    li.append(ol);
    for (const r of plan.rest) {
      const p = el('div', 'meta');
      p.textContent = r;
      li.append(p);
    }
  }
  return li;
}

async function refreshApprovals() {
  let list;
  try {
    list = await json('GET', '/v1/approvals');
  } catch (e) {
    return;
  }
  $('approvals-count').textContent = list.approvals.length;
  // Rebuilt only when the questions change: a rebuild would lose a half-typed answer and
  // the plan's scroll position.
  const ids = list.approvals.map((a) => a.id).join('\n');
  const ul = $('approvals');
  if (ul.dataset.ids === ids) return;
  ul.dataset.ids = ids;
  ul.textContent = '';
  for (const a of list.approvals) ul.appendChild(approvalItem(a));
}

boot();
