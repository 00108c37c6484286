// Huizhen web client, the join page: the view — which screen shows (body[data-view]: precheck |
// call | lobby | hold | end), the top bar (status, room title, quality, the patient under
// discussion), the banner and the
// screen-reader announcements, the end of a visit, care mode, our own tile, the moderators'
// lobby list.

import { applyCare } from './care.js';
import { errorText, getLang, t } from './i18n.js';
import { closeRecordingDialogs, renderRecording } from './call-recording.js';
import { renderControls, setMoreOpen } from './call-controls.js';
import { $, app, TERMINAL_STATES, ui } from './call-state.js';
import { destroyTiles, renderLayout, renderWaiting } from './call-tiles.js';
import { TileView } from './tiles.js';

const NOTICE_HIDE_MS = 12000;

let notice = null; // what the banner shows: {key?, code?, message?, level, sticky?, fatal?}
let noticeTimer = null;

export const localTile = new TileView({ local: true });

// ---- state, view & banner ---------------------------------------------------------------------

export function setAppState(state) {
  app.state = state;
  document.body.dataset.state = state;
  renderView();
}

function computeView() {
  if (TERMINAL_STATES.includes(app.state)) return 'end';
  if (!app.session) return app.precheck ? 'precheck' : 'start';
  if (app.session.admission === 'lobby') return 'lobby';
  if (app.session.admission === 'held') return 'hold';
  return 'call';
}

/** Show what belongs to the current view; everything else follows from it. */
export function renderView() {
  const v = computeView();
  const changed = v !== app.view;
  app.view = v;
  document.body.dataset.view = v;
  ui.precheck.hidden = v !== 'precheck';
  // on the check page the message sits in the page's flow (above the preview), elsewhere it
  // floats over the call
  const bannerHome = v === 'precheck' ? ui.precheck.querySelector('.precheck-inner') : document.body;
  if (ui.banner.parentElement !== bannerHome) {
    if (v === 'precheck') bannerHome.prepend(ui.banner);
    else ui.precheck.before(ui.banner);
  }
  ui.stage.hidden = v === 'precheck' || v === 'start';
  ui.lobbyWait.hidden = v !== 'lobby';
  ui.hold.hidden = v !== 'hold';
  ui.tiles.hidden = v === 'lobby' || v === 'hold';
  if (v === 'lobby') {
    const session = app.session;
    const track = session && session.local.video ? session.local.video.track : null;
    if (track && (!ui.lobbyVideo.srcObject || ui.lobbyVideo.srcObject.getVideoTracks()[0] !== track)) {
      ui.lobbyVideo.srcObject = new MediaStream([track]);
      ui.lobbyVideo.play().catch(() => {});
    }
    ui.lobbyWait.dataset.video = track ? 'on' : 'off';
  } else if (ui.lobbyVideo.srcObject) {
    ui.lobbyVideo.srcObject = null;
  }
  if (v !== 'call' && app.chatView && app.chatView.open) app.chatView.setOpen(false);
  if (changed && v !== 'call') setMoreOpen(false);
  renderStatus();
  renderControls();
  renderWaiting();
  renderLobbyList();
  renderRecording();
  renderQuality();
  renderSubject();
}

export function renderStatus() {
  const session = app.session;
  let key = `status_${app.state}`;
  if (app.state === 'joined' && session) {
    if (session.admission === 'lobby') key = 'status_lobby';
    else if (session.admission === 'held') key = 'status_held';
  }
  if (app.view === 'precheck') key = 'status_precheck';
  ui.status.textContent = t(key);
  const title = session && session.room && session.room.title;
  ui.roomTitle.textContent = title || '';
  ui.roomTitle.hidden = !title;
}

/** What the banner shows now, or null. */
export function currentNotice() {
  return notice;
}

/** Values of a notice's vars as shown: a Date as the local day and time. */
function shownVars(vars) {
  if (!vars) return vars;
  const locale = getLang() === 'zh' ? 'zh-CN' : 'en-GB';
  const out = {};
  for (const [name, value] of Object.entries(vars)) {
    out[name] = value instanceof Date
      ? value.toLocaleString(locale, { weekday: 'short', month: 'short', day: 'numeric',
        hour: '2-digit', minute: '2-digit' })
      : value;
  }
  return out;
}

function noticeText(n) {
  if (n.key) return t(n.key, shownVars(n.vars));
  return errorText(n.code, n.message);
}

/** Show a message in the banner (one at a time; the newest wins, except over a fatal one). */
export function showNotice(n) {
  if (notice && notice.fatal && !n.fatal) return;
  notice = n;
  clearTimeout(noticeTimer);
  renderBanner();
  if (!n.sticky && !n.fatal) noticeTimer = setTimeout(hideNotice, NOTICE_HIDE_MS);
}

export function hideNotice() {
  if (notice && notice.fatal) return;
  clearTimeout(noticeTimer);
  notice = null;
  renderBanner();
}

export function renderBanner() {
  if (!notice) {
    ui.banner.hidden = true;
    ui.bannerText.textContent = '';
    delete ui.banner.dataset.level;
    delete ui.banner.dataset.code;
    delete ui.banner.dataset.key;
    return;
  }
  ui.banner.hidden = false;
  ui.banner.dataset.level = notice.fatal ? 'fatal' : notice.level || 'info';
  if (notice.code) ui.banner.dataset.code = notice.code;
  else delete ui.banner.dataset.code;
  if (notice.key) ui.banner.dataset.key = notice.key;
  else delete ui.banner.dataset.key;
  ui.bannerText.textContent = noticeText(notice);
  ui.bannerClose.hidden = !!notice.fatal;
  ui.rejoin.hidden = !(notice.fatal && notice.rejoin);
}

/** The session is over: say why, stop everything, offer Rejoin where it makes sense. */
export function showEnd(info) {
  app.endInfo = { ...info };
  const rejoin = !!info.rejoin || ['room_full', 'replaced'].includes(info.code);
  notice = null;
  showNotice({ ...info, fatal: true, rejoin, level: 'fatal' });
  destroyTiles();
  localTile.setLocalStream(null);
  ui.sound.hidden = true;
  if (app.monitor) app.monitor.stop();
  app.monitor = null;
  if (app.precheck) {
    app.precheck.destroy();
    app.precheck = null;
  }
  if (!app.session && app.localMedia.stream) {
    for (const track of app.localMedia.stream.getTracks()) track.stop();
  }
  if (app.inviteDialog && app.inviteDialog.dialog.open) app.inviteDialog.dialog.close();
  closeRecordingDialogs();
  const confirm = $('confirm-dialog');
  if (confirm.open) confirm.close();
  setAppState(info.state);
}

export function announce(text) {
  // screen readers: polite live region
  ui.live.textContent = '';
  setTimeout(() => {
    ui.live.textContent = text;
  }, 50);
}

// ---- care mode (large type, big buttons) --------------------------------------------------------

export function setCare(on) {
  applyCare(on, ui.care);
  renderLayout();
}

// ---- top bar: quality ---------------------------------------------------------------------------

export function renderQuality() {
  const { quality, view } = app;
  const show = !!app.session && (view === 'call' || view === 'hold') && app.state !== 'idle';
  ui.quality.hidden = !show;
  const level = app.state === 'reconnecting' ? 'poor' : quality.level;
  ui.quality.dataset.level = level;
  let label = t(`quality_${level}`);
  if (quality.rtt_ms !== null && level !== 'unknown') {
    label += ` (${t('quality_detail', { rtt: quality.rtt_ms, loss: quality.loss_pct ?? 0 })})`;
  }
  ui.quality.setAttribute('aria-label', label);
  ui.quality.title = label;
}

// ---- top bar: the patient under discussion (ward rounds, MDT) ---------------------------------

function subjectText(subject) {
  return t('subject_now', { label: subject.label || subject.patient_ref });
}

function sameSubject(a, b) {
  if (!a || !b) return a === b;
  return a.segment_id === b.segment_id && a.patient_ref === b.patient_ref && a.label === b.label;
}

/** The pill under the top bar's row, for those admitted (the lobby is not told who it is). */
export function renderSubject() {
  const subject = app.session ? app.session.subject : null;
  const show = !!subject && (app.view === 'call' || app.view === 'hold');
  ui.subject.hidden = !show;
  const text = show ? subjectText(subject) : '';
  ui.subjectText.textContent = text;
  ui.subject.title = text; // a long label is cut after two lines
}

/**
 * The banner floats just below the top bar; while the bar is taller (the patient under
 * discussion on a line of its own) it must not cover that line. Keeps --topbar-bottom on body.
 */
export function watchTopbar() {
  if (!window.ResizeObserver) return;
  const bar = ui.subject.closest('.topbar');
  new ResizeObserver(() => {
    const bottom = Math.ceil(bar.getBoundingClientRect().bottom);
    document.body.style.setProperty('--topbar-bottom', `${bottom}px`);
  }).observe(bar);
}

/** The server named another patient (or nobody): show it, and tell screen readers. */
export function onSubjectChanged(next, previous) {
  renderSubject();
  const inCall = app.view === 'call' || app.view === 'hold';
  if (!inCall || sameSubject(next, previous)) return;
  announce(next ? subjectText(next) : t('subject_cleared'));
}

// ---- our own tile -------------------------------------------------------------------------------

export function renderLocalTile() {
  const session = app.session;
  const local = session ? session.local : { audio: null, video: null };
  const show = app.view === 'call' && !!(local.audio || local.video);
  localTile.el.hidden = !show;
  if (!show) return;
  const micMuted = !local.audio || local.audio.muted || local.audio.ended;
  const camMuted = !local.video || local.video.muted || local.video.ended;
  localTile.setInfo({
    name: t('you'),
    // the avatar shows the initials of our real name once the server has told us
    avatarName: (session.me && session.me.name) || t('you'),
    role: '',
    micMuted,
    camMuted,
    micLabel: t('mic_muted_badge'),
    camLabel: t('cam_off_badge'),
    groupLabel: t('you'),
  });
  const settings = local.video ? local.video.track.getSettings() : {};
  localTile.setMirrored(settings.facingMode !== 'environment');
}

export function setLocalPreview() {
  const local = app.session ? app.session.local : null;
  const track = local && local.video ? local.video.track : null;
  // the preview shows only video (and is muted anyway)
  localTile.setLocalStream(track ? new MediaStream([track]) : null);
  if (app.view === 'lobby') renderView();
}

// ---- lobby (moderators) -------------------------------------------------------------------------

export function renderLobbyList() {
  const lobbyList = app.lobbyList;
  if (!lobbyList) return;
  const session = app.session;
  const people =
    session && session.isModerator && app.view === 'call' ? Object.values(session.lobby) : [];
  const before = lobbyList.items.length;
  lobbyList.render(people);
  if (people.length > before) {
    const newest = people[people.length - 1];
    announce(t('announce_lobby', { name: newest.name || newest.identity }));
  }
}
