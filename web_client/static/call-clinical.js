// Huizhen web client: the case-notes panel (a drawer on phones, the side panel on desktops).
//
// * The agenda of a ward round / MDT: the patients (cases) in order, the one under discussion
//   marked; moderators move to the next one or to any item.
// * Clinical documents (the kinds the room writes; only clinicians with the `sign` grant write):
//   write, save as a new version, sign with one's certificate (the server holds the key and
//   signs the exact bytes it stored). Every version stays; a signed one never changes — editing
//   it makes the next version. A conflicting save keeps the text in the editor.
// Text is shown as text, never HTML. The session (session-clinical.js) keeps the state.

import { app, $ } from './call-state.js';
import { formatTime } from './chat.js';
import { ICONS } from './icons.js';
import { hasKey, onLangChange, roleLabel, t } from './i18n.js';

const el = {
  button: $('btn-clinical'),
  panel: $('clinical-panel'),
  close: $('btn-clinical-close'),
  agenda: $('agenda'),
  agendaList: $('agenda-list'),
  agendaNext: $('btn-agenda-next'),
  editor: $('doc-editor'),
  editorTitle: $('doc-editor-title'),
  kind: $('doc-kind'),
  kindLabel: $('doc-kind-label'),
  text: $('doc-text'),
  status: $('doc-status'),
  newDoc: $('btn-doc-new'),
  save: $('btn-doc-save'),
  sign: $('btn-doc-sign'),
  listSection: $('doc-list-section'),
  list: $('doc-list'),
};

/** what the editor holds: a new document (series null) or a version of a series */
const editing = { series: null, base: null, docId: null, savedText: null, kind: null };
let session = null;
let busy = false;

function me() {
  return (session && session.me) || {};
}

function kinds() {
  return session ? session.documentKinds() : [];
}

function visible() {
  return !!session && (!!session.agenda || kinds().length > 0 || session.documents.length > 0
    || (session.room && Array.isArray(session.room.documents) && session.room.documents.length > 0));
}

function setOpen(open) {
  el.panel.hidden = !open;
  el.button.setAttribute('aria-expanded', String(open));
  if (open && app.chatView && app.chatView.open) app.chatView.setOpen(false);
  if (open) render();
}

function caseLabel(caseId) {
  const item = session && session.agenda ? session.agenda.items.find((i) => i.id === caseId) : null;
  return item ? item.label : '';
}

function kindName(kind) {
  return t(`doc_kind_${kind}`);
}

// ---- agenda -------------------------------------------------------------------------------

function renderAgenda() {
  const agenda = session && session.agenda;
  el.agenda.hidden = !agenda;
  el.agendaList.replaceChildren();
  if (!agenda) return;
  const moderator = !!(me().grants && me().grants.moderate);
  for (const item of agenda.items) {
    const li = document.createElement('li');
    li.className = 'agenda-item';
    li.dataset.itemId = item.id;
    const current = item.id === agenda.current;
    if (current) li.setAttribute('aria-current', 'step');
    const label = document.createElement('span');
    label.className = 'agenda-label';
    label.textContent = item.label;
    li.append(label);
    if (current) {
      const now = document.createElement('span');
      now.className = 'agenda-now';
      now.textContent = t('agenda_now');
      li.append(now);
    }
    for (const [key, value] of [['agenda_question', item.question], ['agenda_presenter', item.presenter]]) {
      if (!value) continue;
      const p = document.createElement('p');
      p.className = 'agenda-detail';
      p.textContent = t(key, { value });
      li.append(p);
    }
    if (moderator && !current) {
      const go = document.createElement('button');
      go.type = 'button';
      go.className = 'btn-secondary btn-small agenda-go';
      go.textContent = t('agenda_go');
      go.addEventListener('click', () => session.agendaGo(item.id));
      li.append(go);
    }
    el.agendaList.append(li);
  }
  const at = agenda.items.findIndex((i) => i.id === agenda.current);
  el.agendaNext.hidden = !moderator || at === agenda.items.length - 1;
  el.agendaNext.textContent = at < 0 ? t('agenda_start') : t('agenda_next');
}

// ---- documents ----------------------------------------------------------------------------

function latestOf(series) {
  let latest = null;
  for (const d of session.documents) {
    if (d.series_id === series && (!latest || d.version > latest.version)) latest = d;
  }
  return latest;
}

function renderEditor() {
  const allowed = kinds();
  el.editor.hidden = allowed.length === 0;
  if (!allowed.length) return;
  const kind = editing.kind && allowed.includes(editing.kind) ? editing.kind : allowed[0];
  el.kind.replaceChildren(...allowed.map((k) => {
    const option = document.createElement('option');
    option.value = k;
    option.textContent = kindName(k);
    option.selected = k === kind;
    return option;
  }));
  el.kind.disabled = !!editing.series;
  el.kindLabel.hidden = allowed.length < 2;
  el.kind.hidden = allowed.length < 2;
  const latest = editing.series ? latestOf(editing.series) : null;
  el.editorTitle.textContent = latest
    ? t('doc_editing', { kind: kindName(latest.kind), version: latest.version })
    : t('doc_new_title', { kind: kindName(kind) });
  const unchanged = editing.savedText !== null && el.text.value === editing.savedText;
  const signable = latest && latest.id === editing.docId && !latest.signed && unchanged;
  el.save.disabled = busy || !el.text.value.trim() || unchanged;
  el.sign.disabled = busy || !el.text.value.trim() || (!!latest && latest.signed && unchanged);
  el.sign.textContent = signable || !el.text.value.trim() || (latest && latest.signed && unchanged)
    ? t('doc_sign') : t('doc_save_sign');
}

function status(text, kind = 'info') {
  el.status.textContent = text;
  el.status.dataset.kind = kind;
}

function renderList() {
  const docs = session ? session.documents : [];
  const latest = new Map();
  for (const d of docs) {
    const had = latest.get(d.series_id);
    if (!had || d.version > had.version) latest.set(d.series_id, d);
  }
  el.listSection.hidden = latest.size === 0;
  el.list.replaceChildren();
  for (const d of latest.values()) {
    const li = document.createElement('li');
    li.className = 'doc-item';
    li.dataset.documentId = d.id;
    li.dataset.signed = String(!!d.signed);
    const head = document.createElement('p');
    head.className = 'doc-meta';
    const where = caseLabel(d.case_id);
    const author = d.author ? `${d.author.name} (${roleLabel(d.author.role)})` : '';
    head.textContent = [kindName(d.kind), where, t('doc_version', { version: d.version }), author]
      .filter(Boolean).join(' · ');
    const state = document.createElement('p');
    state.className = 'doc-state';
    state.textContent = d.signed
      ? t('doc_signed_at', { time: formatTime(d.signed_at) })
      : t('doc_draft_at', { time: formatTime(d.created_at) });
    const body = document.createElement('p');
    body.className = 'doc-text';
    body.textContent = d.text || '';
    li.append(head, state, body);
    if (d.author && d.author.identity === me().identity && kinds().includes(d.kind)) {
      const edit = document.createElement('button');
      edit.type = 'button';
      edit.className = 'btn-secondary btn-small doc-edit';
      edit.textContent = d.signed ? t('doc_amend') : t('doc_edit');
      edit.addEventListener('click', () => load(d));
      li.append(edit);
    }
    el.list.append(li);
  }
}

function load(d) {
  Object.assign(editing, { series: d.series_id, base: d.version, docId: d.id,
    savedText: d.text, kind: d.kind });
  el.text.value = d.text || '';
  status(d.signed ? t('doc_amend_hint') : '');
  render();
  el.text.focus();
}

function startNew() {
  Object.assign(editing, { series: null, base: null, docId: null, savedText: null, kind: el.kind.value || null });
  el.text.value = '';
  status('');
  render();
}

async function save() {
  const text = el.text.value.trim();
  if (!text) return null;
  const doc = await session.saveDocument({
    kind: editing.kind || el.kind.value || kinds()[0],
    text,
    seriesId: editing.series,
    baseVersion: editing.base,
  });
  Object.assign(editing, { series: doc.series_id, base: doc.version, docId: doc.id,
    savedText: doc.text, kind: doc.kind });
  el.text.value = doc.text;
  return doc;
}

async function run(action) {
  if (busy) return;
  busy = true;
  render();
  try {
    await action();
  } catch (err) {
    const code = err && err.code;
    if (code === 'document_conflict' && editing.series) {
      const latest = latestOf(editing.series);
      if (latest) editing.base = latest.version; // the text stays; saving again makes the next version
      status(t('doc_conflict'), 'error');
    } else {
      const key = `doc_error_${code}`;
      status(code && hasKey(key) ? t(key) : t('doc_failed', {
        message: (err && err.message) || String(err) }), 'error');
    }
  } finally {
    busy = false;
    render();
  }
}

function render() {
  const show = visible();
  el.button.hidden = !show;
  if (!show && !el.panel.hidden) el.panel.hidden = true;
  if (el.panel.hidden) return;
  renderAgenda();
  renderEditor();
  renderList();
}

/** Called for each new Session (app.js wireSession). */
export function setupClinical(s) {
  session = s;
  s.on('agenda', render);
  s.on('documents', render);
  s.on('joined', render);
  s.on('role-changed', render);
  render();
}

export function initClinical() {
  const holder = el.button.querySelector('.ctrl-icon');
  if (holder) holder.innerHTML = `<span class="icon-on">${ICONS.notes}</span>`;
  el.button.addEventListener('click', () => setOpen(el.panel.hidden));
  el.close.innerHTML = ICONS.close;
  el.close.addEventListener('click', () => setOpen(false));
  const chatButton = $('btn-chat');
  if (chatButton) chatButton.addEventListener('click', () => setOpen(false));
  el.agendaNext.addEventListener('click', () => session && session.agendaGo(null));
  el.text.addEventListener('input', () => renderEditor());
  el.kind.addEventListener('change', () => {
    editing.kind = el.kind.value;
    renderEditor();
  });
  el.newDoc.addEventListener('click', startNew);
  el.save.addEventListener('click', () => run(async () => {
    const doc = await save();
    if (doc) status(t('doc_saved', { version: doc.version }));
  }));
  el.sign.addEventListener('click', () => run(async () => {
    let latest = editing.series ? latestOf(editing.series) : null;
    const unchanged = editing.savedText !== null && el.text.value.trim() === editing.savedText;
    if (!latest || latest.id !== editing.docId || latest.signed || !unchanged) latest = await save();
    if (!latest) return;
    status(t('doc_signing'));
    const signed = await session.signDocument(latest.id);
    status(t('doc_signed_done', { version: signed.version, time: formatTime(signed.signed_at) }), 'ok');
  }));
  onLangChange(() => render());
}
