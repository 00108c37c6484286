// Huizhen web client, the join page: a teaching broadcast's audience (docs/protocol.md,
// "Teaching broadcast"). Shown only in rooms with an audience (the server sends
// `room.questions` there):
// * the viewer count in the top bar (#viewer-count) for presenters, moderators and cameras;
// * viewers: a raise-hand button (#btn-hand) and a Q&A panel (#qa-panel) to ask and to read
//   the approved questions; a promoted viewer's microphone (and camera) is sent by the session;
// * moderators (grants.promote): the raised hands with Promote (audio / audio+video), the
//   viewers speaking now with Demote, and the pending questions with Approve / Dismiss;
//   #btn-qa shows how many wait.
// The panel is a drawer on phones and a side panel on desktops, like the chat.

import { onLangChange, t } from './i18n.js';
import { ICONS } from './icons.js';
import { renderControls } from './call-controls.js';
import { app, ui } from './call-state.js';
import { announce, setLocalPreview } from './call-view.js';

const HAND_ICON =
  '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
  'stroke-linecap="round" stroke-linejoin="round"><path d="M8 13V5.5a1.5 1.5 0 0 1 3 0V12"/>' +
  '<path d="M11 11V4a1.5 1.5 0 0 1 3 0v7"/><path d="M14 10.5V6a1.5 1.5 0 0 1 3 0v8.5"/>' +
  '<path d="M8 13V9.5a1.5 1.5 0 0 0-3 0V15a6 6 0 0 0 6 6h1.5a5.5 5.5 0 0 0 5.5-5.5V14"/></svg>';
const QA_ICON =
  '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
  'stroke-linecap="round" stroke-linejoin="round"><path d="M4 5h16v11H9l-5 4z"/>' +
  '<path d="M10 9a2 2 0 1 1 2.6 1.9c-.4.2-.6.5-.6.9v.4"/><path d="M12 14v.1"/></svg>';

let el = null; // the elements, once built
let open = false;
let seenApproved = 0;

function make(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function ctrl(id, icon) {
  const button = make('button', { id, className: 'ctrl', type: 'button', hidden: true });
  const holder = make('span', { className: 'ctrl-icon', 'aria-hidden': 'true' });
  holder.innerHTML = icon;
  button.append(holder, make('span', { className: 'ctrl-text' }));
  return button;
}

function build() {
  const hand = ctrl('btn-hand', HAND_ICON);
  const qa = ctrl('btn-qa', QA_ICON);
  qa.setAttribute('aria-controls', 'qa-panel');
  qa.append(make('span', { id: 'qa-badge', className: 'unread', hidden: true }));
  ui.leave.before(hand, qa);

  const count = make('span', { id: 'viewer-count', className: 'viewer-count', hidden: true,
    role: 'status' });
  ui.status.after(count);

  const close = make('button', { id: 'btn-qa-close', className: 'btn-icon', type: 'button' });
  close.innerHTML = ICONS.close;
  const input = make('textarea', { id: 'qa-input', className: 'field-input qa-input',
    maxLength: 500, rows: 2 });
  const send = make('button', { id: 'btn-qa-send', className: 'btn-primary', type: 'submit' });
  const form = make('form', { id: 'qa-form', className: 'qa-form', autocomplete: 'off' },
    make('label', { className: 'sr-only', htmlFor: 'qa-input' }), input, send);
  const section = (id) => {
    const list = make('ul', { className: 'qa-list' });
    const title = make('h3', { className: 'qa-section-title' });
    const box = make('section', { id, className: 'qa-section', hidden: true }, title, list);
    return { box, title, list };
  };
  const hands = section('qa-hands');
  const speakers = section('qa-speakers');
  const pending = section('qa-pending');
  const approved = section('qa-approved');
  const empty = make('p', { id: 'qa-empty', className: 'chat-empty' });
  const mine = make('p', { id: 'qa-mine', className: 'qa-mine', hidden: true });
  const title = make('h2', { id: 'qa-title', className: 'chat-title' });
  const panel = make('aside', { id: 'qa-panel', className: 'chat-panel qa-panel', hidden: true },
    make('header', { className: 'chat-head' }, title, close),
    make('div', { className: 'qa-body' }, hands.box, speakers.box, pending.box, approved.box,
      empty, mine),
    form);
  panel.setAttribute('aria-labelledby', 'qa-title');
  ui.controls.before(panel);

  hand.addEventListener('click', () => {
    const s = app.session;
    if (s) s.raiseHand(!s.audience.handRaised);
  });
  qa.addEventListener('click', () => setOpen(!open));
  close.addEventListener('click', () => setOpen(false));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const s = app.session;
    if (s && s.ask(input.value)) {
      input.value = '';
      mine.hidden = false;
      mine.textContent = t('qa_sent');
    }
  });
  panel.addEventListener('click', (ev) => {
    const button = ev.target.closest('button[data-action]');
    const s = app.session;
    if (!button || !s) return;
    const { action, id } = button.dataset;
    if (action === 'promote-audio') s.promote(id, false);
    else if (action === 'promote-video') s.promote(id, true);
    else if (action === 'demote') s.demote(id);
    else if (action === 'approve') s.answerQuestion(id, true);
    else if (action === 'dismiss') s.answerQuestion(id, false);
  });
  el = { hand, qa, count, panel, title, close, input, send, form, hands, speakers, pending,
    approved, empty, mine, badge: qa.querySelector('#qa-badge') };
}

function setOpen(next) {
  open = !!next;
  if (open && app.chatView && app.chatView.open) app.chatView.setOpen(false);
  render();
  if (open) el.close.focus({ preventScroll: true });
}

function button(label, action, id, kind = 'btn-secondary') {
  return make('button', { type: 'button', className: `${kind} qa-btn`, textContent: label,
    dataset: { action, id } });
}

function fillList(part, items, titleText) {
  part.title.textContent = titleText;
  part.list.replaceChildren(...items);
  part.box.hidden = items.length === 0;
}

function questionItem(q, moderator) {
  const li = make('li', { className: 'qa-item', dataset: { questionId: q.id,
    status: q.status } },
  make('p', { className: 'qa-who', textContent: q.name || '…' }),
  make('p', { className: 'qa-text', textContent: q.text }));
  if (moderator && q.status === 'pending') {
    li.append(make('div', { className: 'qa-actions' },
      button(t('qa_approve'), 'approve', q.id, 'btn-primary'),
      button(t('qa_dismiss'), 'dismiss', q.id)));
  }
  return li;
}

export function render() {
  const s = app.session;
  const a = s && s.audience;
  const inCall = app.view === 'call' && !!a && a.enabled;
  if (!el) {
    if (!inCall) return;
    build();
  }
  const grants = (s && s.me && s.me.grants) || {};
  const moderator = inCall && !!grants.promote;
  const member = inCall && a.member;
  const joined = app.state === 'joined';

  // the viewer count (those outside the audience)
  el.count.hidden = !(inCall && a.viewers !== null);
  if (!el.count.hidden) el.count.textContent = t('bc_viewers', { n: a.viewers });

  // raise hand: viewers who do not speak
  el.hand.hidden = !(member && !a.promoted);
  el.hand.disabled = !joined;
  el.hand.dataset.raised = String(!!(a && a.handRaised));
  el.hand.querySelector('.ctrl-text').textContent = t(a && a.handRaised ? 'bc_lower_hand' : 'bc_raise_hand');
  el.hand.setAttribute('aria-pressed', String(!!(a && a.handRaised)));
  el.hand.setAttribute('aria-label', t(a && a.handRaised ? 'bc_lower_hand_label' : 'bc_raise_hand_label'));

  // Q&A: viewers and moderators
  el.qa.hidden = !(member || moderator);
  el.qa.disabled = !joined;
  el.qa.setAttribute('aria-expanded', String(open));
  el.qa.querySelector('.ctrl-text').textContent = t(moderator ? 'qa_moderate' : 'qa');
  if (el.qa.hidden) open = false;
  el.panel.hidden = !open || el.qa.hidden;
  document.body.dataset.qa = open ? 'open' : 'closed';
  el.title.textContent = t(moderator ? 'qa_title_moderator' : 'qa_title');
  el.close.setAttribute('aria-label', t('qa_close_label'));

  const questions = a ? a.questions : [];
  const approvedList = questions.filter((q) => q.status === 'approved');
  const pendingList = moderator ? questions.filter((q) => q.status === 'pending') : [];
  const hands = moderator ? a.hands : [];
  const speaking = moderator
    ? Object.values(s.participants).filter((p) => p.role === 'viewer') : [];
  fillList(el.hands, hands.map((h) => make('li', { className: 'qa-item qa-hand',
    dataset: { participantId: h.participant_id } },
  make('p', { className: 'qa-who', textContent: h.name || '…' }),
  make('div', { className: 'qa-actions' },
    button(t('bc_promote_audio'), 'promote-audio', h.participant_id, 'btn-primary'),
    button(t('bc_promote_video'), 'promote-video', h.participant_id)))),
  t('bc_hands', { n: hands.length }));
  fillList(el.speakers, speaking.map((p) => make('li', { className: 'qa-item qa-speaker',
    dataset: { participantId: p.id } },
  make('p', { className: 'qa-who', textContent: p.name || p.identity || '…' }),
  make('div', { className: 'qa-actions' }, button(t('bc_demote'), 'demote', p.id, 'btn-danger')))),
  t('bc_speaking'));
  fillList(el.pending, pendingList.map((q) => questionItem(q, true)),
    t('qa_pending', { n: pendingList.length }));
  fillList(el.approved, approvedList.map((q) => questionItem(q, false)), t('qa_approved'));
  el.empty.hidden = hands.length + speaking.length + pendingList.length + approvedList.length > 0;
  el.empty.textContent = t(moderator ? 'qa_empty_moderator' : 'qa_empty');

  el.form.hidden = !member;
  el.input.placeholder = t('qa_placeholder');
  el.form.querySelector('label').textContent = t('qa_placeholder');
  el.send.textContent = t('qa_ask');
  el.send.disabled = !joined;

  // the badge: what waits for a moderator, new answers for a viewer
  if (open) seenApproved = approvedList.length;
  const waiting = moderator ? hands.length + pendingList.length
    : Math.max(0, approvedList.length - seenApproved);
  el.badge.hidden = waiting === 0 || open;
  el.badge.textContent = waiting > 99 ? '99+' : String(waiting);
  el.qa.setAttribute('aria-label', waiting ? t('qa_label_waiting', { n: waiting }) : t('qa'));
  ui.controls.dataset.count = String(
    [...ui.controls.querySelectorAll(':scope > .ctrl')].filter((b) => !b.hidden).length,
  );
}

/** Follow the session (app.js calls this once per session). */
export function wireBroadcast(session) {
  session.on('audience', render);
  session.on('joined', render);
  session.on('state', render);
  session.on('role-changed', render);
  session.on('admission', render);
  for (const name of ['participant-added', 'participant-updated', 'participant-removed']) {
    session.on(name, render);
  }
  session.on('question-approved', (q) => announce(t('qa_announce', { name: q.name })));
  session.on('local-stream', () => {
    setLocalPreview();
    renderControls();
  });
}

onLangChange(render);
