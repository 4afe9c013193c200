// The admin UI: reads the API with the token kept in this browser's localStorage.
const $ = (sel) => document.querySelector(sel);

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${localStorage.getItem('windflow.token')}`, 'Content-Type': 'application/json' },
  });
  const body = res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text();
  if (res.status === 401) { showLogin(); throw new Error('unauthorized'); }
  if (!res.ok) throw new Error(body?.error?.message ?? res.statusText);
  return body;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function runJob(id) {
  $('#output').textContent = `running ${id}…`;
  let run = await api(`/v1/jobs/${id}/run`, { method: 'POST' });
  while (!['succeeded', 'failed', 'timed_out'].includes(run.status)) {
    run = await api(`/v1/runs/${run.id}?wait=30s`);
  }
  const ctx = await api(`/v1/contexts/${id}`);
  $('#output').textContent = `${run.id} ${run.status} (exit ${run.exit_code ?? '-'})\n${ctx.value}${run.error ? `\n${run.error}` : ''}`;
}

async function refresh() {
  const [jobs, nodes] = await Promise.all([api('/v1/jobs'), api('/v1/nodes')]);
  const jbody = $('#jobs tbody');
  jbody.replaceChildren();
  for (const job of jobs) {
    const row = jbody.insertRow();
    const exec = job.spec.groups[0]?.tasks[0]?.driver?.exec;
    cell(row, job.id); cell(row, job.spec.name); cell(row, exec?.command ?? ''); cell(row, job.created_at);
    const button = document.createElement('button');
    button.textContent = 'Run';
    button.onclick = () => runJob(job.id).catch((e) => { $('#output').textContent = e.message; });
    row.insertCell().append(button);
  }
  const nbody = $('#nodes tbody');
  nbody.replaceChildren();
  for (const node of nodes) {
    const row = nbody.insertRow();
    cell(row, node.id); cell(row, node.name); cell(row, node.status, node.status); cell(row, node.drivers.join(', '));
  }
  $('#status').textContent = `${jobs.length} jobs · ${nodes.filter((n) => n.status === 'ready').length} nodes ready`;
}

function showLogin() { $('#login').hidden = false; $('#main').hidden = true; }

$('#login').addEventListener('submit', (e) => {
  e.preventDefault();
  localStorage.setItem('windflow.token', $('#token').value.trim());
  $('#login').hidden = true; $('#main').hidden = false;
  refresh().catch(() => {});
});

if (localStorage.getItem('windflow.token')) { $('#main').hidden = false; refresh().catch(() => {}); } else { showLogin(); }
setInterval(() => { if (!$('#main').hidden) refresh().catch(() => {}); }, 5000);
