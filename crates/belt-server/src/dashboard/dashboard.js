// belt dashboard: one page over the HTTP API. Model text is only ever set with
// textContent (or shown in a sandboxed iframe), never parsed as HTML here.
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

function money(x) {
  return '$' + (x || 0).toFixed(x >= 1 ? 2 : 4);
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
  for (const r of list.runs) {
    const li = document.createElement('li');
    li.dataset.runId = r.run_id;
    li.dataset.status = r.status;
    if (view && view.id === r.run_id) li.classList.add('selected');
    const task = document.createElement('div');
    task.textContent = r.task;
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = `${r.status} · ${r.pattern} · ${r.steps} steps · ${money(r.cost_usd)}`;
    li.append(task, meta);
    li.addEventListener('click', () => openRun(r.run_id));
    ul.appendChild(li);
  }
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

// ---- one run -----------------------------------------------------------------------

const TIERS = { worker: 'tier-worker', synthesizer: 'tier-synthesizer', executive: 'tier-executive' };

function resetView(id) {
  if (view && view.source) view.source.close();
  for (const t of ['tier-worker', 'tier-synthesizer', 'tier-executive', 'tier-other']) {
    $(t).querySelector('.agents').textContent = '';
  }
  $('agent-panel').hidden = true;
  $('report-panel').hidden = true;
  $('report-frame').srcdoc = '';
  $('run-note').textContent = '';
  view = { id, steps: new Map(), total: 0, tokens: 0, cost: 0, start: null, end: null, status: '', selected: null, source: null, finished: false };
}

function setStatus(status) {
  view.status = status;
  const pill = $('run-status');
  pill.textContent = status;
  pill.className = 'pill ' + status;
  $('cancel').hidden = !(status === 'running' || status === 'queued');
}

function node(step, tier) {
  let n = view.steps.get(step);
  if (n) return n;
  const el = document.createElement('button');
  el.type = 'button';
  el.className = 'agent pending';
  el.dataset.step = step;
  el.textContent = step;
  el.addEventListener('click', () => select(step));
  const box = $(TIERS[tier] || 'tier-other').querySelector('.agents');
  // Keep step order (ids are zero-padded).
  const after = [...box.children].find((c) => c.dataset.step > step);
  box.insertBefore(el, after || null);
  n = { step, tier, status: 'pending', text: '', model: '', el };
  view.steps.set(step, n);
  return n;
}

function mark(n, status) {
  n.status = status;
  n.el.className = 'agent ' + status + (view.selected === n.step ? ' selected' : '');
  n.el.dataset.status = status;
}

function counts() {
  const all = [...view.steps.values()];
  const done = all.filter((n) => n.status === 'done').length;
  const failed = all.filter((n) => n.status === 'failed').length;
  const running = all.filter((n) => n.status === 'running').length;
  const total = Math.max(view.total, all.length);
  $('counts').textContent = `${done}/${total}` + (running ? ` · ${running} running` : '') + (failed ? ` · ${failed} failed` : '');
  $('tokens').textContent = view.tokens.toLocaleString();
  $('cost').textContent = money(view.cost);
}

function tick() {
  if (!view || !view.start) return;
  const end = view.end || Date.now();
  $('elapsed').textContent = ((end - view.start) / 1000).toFixed(1) + 's';
}

function onEvent(e) {
  const step = e.step;
  switch (e.type) {
    case 'run_started':
      view.start = Date.parse(e.ts);
      setStatus('running');
      break;
    case 'plan_ready': {
      view.total = e.shape.reduce((a, b) => a + b, 0) + 1;
      // Workers are known now: show them pending.
      const width = Math.max(3, String(e.subtasks).length);
      for (let i = 1; i <= e.shape[0]; i++) node('worker/' + String(i).padStart(width, '0'), 'worker');
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
        if (view.selected === step) $('agent-text').textContent = n.text;
      }
      break;
    }
    case 'step_completed': {
      const n = node(step, e.tier);
      mark(n, 'done');
      view.tokens += e.input_tokens + e.output_tokens;
      view.cost += e.cost_usd;
      if (view.selected === step && !n.text) loadOutput(step);
      break;
    }
    case 'step_failed':
      mark(node(step, e.tier), 'failed');
      node(step, e.tier).error = e.error;
      break;
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
  setStatus(v.status);
  if (v.error) $('run-note').textContent = v.error;
  const id_ = id;
  // EventSource cannot send headers; the event route takes the token in the query.
  // It reconnects by itself with Last-Event-ID, and the server resumes without a gap.
  const source = new EventSource('/v1/runs/' + encodeURIComponent(id) + '/events?token=' + encodeURIComponent(token));
  view.source = source;
  source.onmessage = (m) => {
    if (!view || view.id !== id_) return;
    onEvent(JSON.parse(m.data));
  };
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
    if (view.selected === step) $('agent-text').textContent = n.text;
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
  $('agent-text').textContent = n.text || n.error || (n.status === 'done' ? 'loading…' : 'no output yet');
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
    mark(n, a.status === 'completed' ? 'done' : a.status);
  }
  counts();
  try {
    const r = await call('GET', '/v1/runs/' + encodeURIComponent(id) + '/documents/html');
    if (!r.ok) return;
    const html = await r.text();
    if (!view || view.id !== id) return;
    // Sandboxed: the report cannot run script or reach this page.
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

async function refreshApprovals() {
  let list;
  try {
    list = await json('GET', '/v1/approvals');
  } catch (e) {
    return;
  }
  $('approvals-count').textContent = list.approvals.length;
  const ul = $('approvals');
  ul.textContent = '';
  for (const a of list.approvals) {
    const li = document.createElement('li');
    li.className = 'approval';
    li.dataset.id = a.id;
    const prompt = document.createElement('div');
    prompt.textContent = a.prompt;
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = `${a.step} · run ${a.run_id.slice(-8)} · default after ${a.timeout_secs}s`;
    const actions = document.createElement('div');
    actions.className = 'actions';
    if (a.kind === 'approval') {
      actions.append(button('Approve', () => answer(a, { approve: true })), button('Reject', () => answer(a, { approve: false })));
    } else if (a.kind === 'select') {
      a.options.forEach((o, i) => actions.append(button(o, () => answer(a, { select: i }))));
    } else {
      const input = document.createElement('input');
      actions.append(input, button('Send', () => answer(a, { text: input.value })));
    }
    li.append(prompt, meta, actions);
    ul.appendChild(li);
  }
}

boot();
