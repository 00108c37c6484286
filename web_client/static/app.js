// Huizhen web client: the join page (/join/{room_id}#t=<participant token>).
//
// Flow: read the room id from the path and the token from the fragment → ask for the
// microphone/camera the token allows → the pre-call check (precheck.js) → Join → connect and
// join → in the lobby until a moderator admits us (clinic patients) → publish what the grants
// allow → receive everyone else on the subscribe connection. See session.js for the protocol.
//
// Views (body[data-view]): precheck | call | lobby | hold | end.
//
// For tests (read-only): window.huizhen = {state, view, pcs: {publish, subscribe, screen},
// participants, lobby, chat, quality, precheck, activeSpeaker, …} and the stable ids
// #btn-mic #btn-cam #btn-leave #btn-chat #btn-screen #btn-invite #btn-end #btn-join #btn-care
// #tiles #banner #precheck #lobby-wait #lobby-list #hold-screen #chat-panel #chat-log #quality
// #rec-indicator (tiles: [data-participant-id], moderator menu buttons [data-action]).
// Recording (recording.js, host.js): #rec-indicator[data-state], #rec-declined, #consent-dialog
// (#btn-consent-yes / #btn-consent-no), #btn-record, #btn-rec-pause, #rec-consent, #rec-dialog
// (#btn-rec-ask, #btn-rec-override, #rec-reason, #btn-rec-override-start);
// window.huizhen.recording.

import {
  applyTranslations,
  errorText,
  getLang,
  onLangChange,
  roleLabel,
  t,
  toggleLang,
} from './i18n.js';
import { ChatView } from './chat.js';
import {
  confirmAction,
  InviteDialog,
  LobbyList,
  RecordDialog,
  renderRecordControls,
} from './host.js';
import { ICONS } from './icons.js';
import { countCameras, getLocalMedia, kindsFromToken, openOtherCamera, reopenCamera } from './media.js';
import { CallMonitor } from './monitor.js';
import { PrecheckView } from './precheck.js';
import { ConsentPrompt, recordingNotice, renderRecordingBadges } from './recording.js';
import { CONSENT_ROLES, Session } from './session.js';
import { TileView } from './tiles.js';

const NOTICE_HIDE_MS = 12000;
// a recording message the server has not answered (with a state or an error) by then is let go
const RECORDING_BUSY_MS = 10000;
// the host asked the patient from the Record dialog: their "yes" within this time starts it
const ASK_STARTS_WITHIN_MS = 10 * 60 * 1000;
// banners about the connection itself, cleared once we are back
const RECONNECT_NOTICES = new Set(['connection_lost', 'media_connection_failed']);
const CARE_KEY = 'huizhen.care';
const SKIP_CHECK_KEY = 'huizhen.skipcheck';
// narrow screens (phones upright): the active speaker large, the others small
const NARROW = window.matchMedia('(max-width: 799px)');

const $ = (id) => document.getElementById(id);

const ui = {
  status: $('status'),
  roomTitle: $('room-title'),
  lang: $('btn-lang'),
  banner: $('banner'),
  bannerText: $('banner-text'),
  bannerClose: $('btn-banner-close'),
  rejoin: $('btn-rejoin'),
  stage: $('stage'),
  tiles: $('tiles'),
  waiting: $('waiting'),
  sound: $('btn-sound'),
  controls: $('controls'),
  mic: $('btn-mic'),
  cam: $('btn-cam'),
  flip: $('btn-flip'),
  leave: $('btn-leave'),
  live: $('live'),
  care: $('btn-care'),
  quality: $('quality'),
  rec: $('rec-indicator'),
  recDeclined: $('rec-declined'),
  record: $('btn-record'),
  recPause: $('btn-rec-pause'),
  recConsent: $('rec-consent'),
  precheck: $('precheck'),
  join: $('btn-join'),
  lobbyWait: $('lobby-wait'),
  lobbyVideo: $('lobby-video'),
  lobbyList: $('lobby-list'),
  hold: $('hold-screen'),
  screen: $('btn-screen'),
  chat: $('btn-chat'),
  more: $('btn-more'),
  hostTools: $('host-tools'),
  invite: $('btn-invite'),
  end: $('btn-end'),
};

let appState = 'idle';
let session = null;
let endInfo = null;
let notice = null; // what the banner shows: {key?, code?, message?, level, sticky?, fatal?}
let noticeTimer = null;
let leaveRequested = false;
let cameraCount = 0;
let flipping = false;
let soundBlocked = false;
let view = 'start';
let precheck = null;
let precheckResult = null;
let monitor = null;
let quality = { level: 'unknown', rtt_ms: null, loss_pct: null };
let activeSpeaker = null; // participant id shown large
let speaking = new Set();
let moreOpen = false;
let screenBusy = false;
let lastInvite = null;
let localMedia = { stream: null, problem: null };

const remoteTiles = new Map(); // participant id -> TileView
const localTile = new TileView({ local: true });
let chatView = null;
let lobbyList = null;
let inviteDialog = null;
let recordDialog = null;
let consentPrompt = null;
let recordingBusy = false; // a start/stop/pause/resume of ours awaits the server
let recordingBusyTimer = null;
let askedToStartAt = null; // the host asked the patient via Record: start when they agree
let consentAnswered = null; // patient/guardian: what we answered last (true/false)

// ---- read-only view for tests and debugging ---------------------------------------------------

window.huizhen = Object.freeze({
  /** idle|media|connecting|joining|joined|reconnecting|left|ended|failed */
  get state() {
    return appState;
  },
  /** precheck|call|lobby|hold|end */
  get view() {
    return view;
  },
  get pcs() {
    return {
      publish: session ? session.pcs.publish : null,
      subscribe: session ? session.pcs.subscribe : null,
      screen: session ? session.pcs.screen : null,
    };
  },
  /** our state in the room: lobby|active|held (null before joining) */
  get admission() {
    return session ? session.admission : null;
  },
  /** moderators: who waits in the lobby [{id, identity, name, role}] */
  get lobby() {
    return session
      ? Object.values(session.lobby).map((p) => ({
          id: p.id,
          identity: p.identity,
          name: p.name,
          role: p.role,
        }))
      : [];
  },
  /** chat messages, oldest first [{id, participant_id, name, text, at, mine}] */
  get chat() {
    return session ? session.chat.map((m) => ({ ...m })) : [];
  },
  /** {level: good|fair|poor|unknown, rtt_ms, loss_pct} */
  get quality() {
    return { ...quality };
  },
  /** the pre-call check's result, or null while it runs */
  get precheck() {
    return precheckResult ? { ...precheckResult } : null;
  },
  get activeSpeaker() {
    return activeSpeaker;
  },
  get screenSharing() {
    return !!(session && session.isSharingScreen);
  },
  get care() {
    return document.body.classList.contains('care');
  },
  get invite() {
    return lastInvite ? { ...lastInvite } : null;
  },
  /** id -> {id, identity, name, role, grants, state, tracks: {track_id: {…, muted}}, receiving} */
  get participants() {
    return session ? session.participants : {};
  },
  get me() {
    return session ? session.me : null;
  },
  get room() {
    return session ? session.room : null;
  },
  /** {audio: {track_id, muted, mid}|null, video: …|null} */
  get local() {
    const view = (item) =>
      item ? { track_id: item.trackId, muted: item.muted, mid: item.mid, ended: item.ended } : null;
    return session
      ? { audio: view(session.local.audio), video: view(session.local.video) }
      : { audio: null, video: null };
  },
  /** why the session ended: {state, key, code, message} or null */
  get end() {
    return endInfo;
  },
  get lang() {
    return getLang();
  },
  /** {state: off|recording|paused, consent: null|granted|declined, override, recording_id,
   *   consent_by, consent_asked (moderators), consent_request: {by}|null (patient), busy} */
  get recording() {
    if (!session) return null;
    return {
      ...session.recording,
      consent_by: session.consentBy,
      consent_asked: session.consentAsked,
      consent_request: session.consentRequest ? { ...session.consentRequest } : null,
      busy: recordingBusy,
    };
  },
});

// ---- link ---------------------------------------------------------------------------------------

/** {roomId, token} from /join/{room_id}#t=<jwt>; empty strings when missing. */
function parseLink() {
  let roomId = '';
  const m = location.pathname.match(/^\/join\/([^/]+)\/?$/);
  if (m) {
    try {
      roomId = decodeURIComponent(m[1]).trim();
    } catch {
      roomId = '';
    }
  }
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = (params.get('t') || '').trim();
  return { roomId, token };
}

function wsUrl(roomId) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws/${encodeURIComponent(roomId)}`;
}

// ---- state, view & banner ---------------------------------------------------------------------

const TERMINAL_STATES = ['left', 'ended', 'failed'];

function setAppState(state) {
  appState = state;
  document.body.dataset.state = state;
  renderView();
}

function computeView() {
  if (TERMINAL_STATES.includes(appState)) return 'end';
  if (!session) return precheck ? 'precheck' : 'start';
  if (session.admission === 'lobby') return 'lobby';
  if (session.admission === 'held') return 'hold';
  return 'call';
}

/** Show what belongs to the current view; everything else follows from it. */
function renderView() {
  const v = computeView();
  const changed = v !== view;
  view = v;
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
    const track = session && session.local.video ? session.local.video.track : null;
    if (track && (!ui.lobbyVideo.srcObject || ui.lobbyVideo.srcObject.getVideoTracks()[0] !== track)) {
      ui.lobbyVideo.srcObject = new MediaStream([track]);
      ui.lobbyVideo.play().catch(() => {});
    }
    ui.lobbyWait.dataset.video = track ? 'on' : 'off';
  } else if (ui.lobbyVideo.srcObject) {
    ui.lobbyVideo.srcObject = null;
  }
  if (v !== 'call' && chatView && chatView.open) chatView.setOpen(false);
  if (changed && v !== 'call') setMoreOpen(false);
  renderStatus();
  renderControls();
  renderWaiting();
  renderLobbyList();
  renderRecording();
  renderQuality();
}

function renderStatus() {
  let key = `status_${appState}`;
  if (appState === 'joined' && session) {
    if (session.admission === 'lobby') key = 'status_lobby';
    else if (session.admission === 'held') key = 'status_held';
  }
  if (view === 'precheck') key = 'status_precheck';
  ui.status.textContent = t(key);
  const title = session && session.room && session.room.title;
  ui.roomTitle.textContent = title || '';
  ui.roomTitle.hidden = !title;
}

function noticeText(n) {
  if (n.key) return t(n.key, n.vars);
  return errorText(n.code, n.message);
}

/** Show a message in the banner (one at a time; the newest wins, except over a fatal one). */
function showNotice(n) {
  if (notice && notice.fatal && !n.fatal) return;
  notice = n;
  clearTimeout(noticeTimer);
  renderBanner();
  if (!n.sticky && !n.fatal) noticeTimer = setTimeout(hideNotice, NOTICE_HIDE_MS);
}

function hideNotice() {
  if (notice && notice.fatal) return;
  clearTimeout(noticeTimer);
  notice = null;
  renderBanner();
}

function renderBanner() {
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
function showEnd(info) {
  endInfo = { ...info };
  const rejoin = !!info.rejoin || ['room_full', 'replaced'].includes(info.code);
  notice = null;
  showNotice({ ...info, fatal: true, rejoin, level: 'fatal' });
  for (const tile of remoteTiles.values()) tile.destroy();
  remoteTiles.clear();
  localTile.setLocalStream(null);
  ui.sound.hidden = true;
  if (monitor) monitor.stop();
  monitor = null;
  if (precheck) {
    precheck.destroy();
    precheck = null;
  }
  if (!session && localMedia.stream) {
    for (const track of localMedia.stream.getTracks()) track.stop();
  }
  if (inviteDialog && inviteDialog.dialog.open) inviteDialog.dialog.close();
  if (recordDialog) recordDialog.close();
  if (consentPrompt) consentPrompt.close();
  const confirm = $('confirm-dialog');
  if (confirm.open) confirm.close();
  setAppState(info.state);
}

function announce(text) {
  // screen readers: polite live region
  ui.live.textContent = '';
  setTimeout(() => {
    ui.live.textContent = text;
  }, 50);
}

// ---- care mode (large type, big buttons) --------------------------------------------------------

function loadCare() {
  try {
    return localStorage.getItem(CARE_KEY) === '1';
  } catch {
    return false;
  }
}

function setCare(on) {
  document.body.classList.toggle('care', on);
  ui.care.setAttribute('aria-pressed', String(on));
  try {
    localStorage.setItem(CARE_KEY, on ? '1' : '0');
  } catch {
    // not remembered
  }
  renderLayout();
}

// ---- top bar: recording, quality -----------------------------------------------------------------

function renderRecording() {
  const show = !!session && view !== 'end' && view !== 'start' && view !== 'precheck';
  renderRecordingBadges({ indicator: ui.rec, declined: ui.recDeclined },
    session ? session.recording : null,
    { show, declinedBadge: !!(session && session.givesConsent) });
  renderRecordHost();
}

/** The host's Record / Pause buttons (in the moderator tools), with the consent status. */
function renderRecordHost() {
  const inCall = view === 'call';
  const canRecord = !!(inCall && session && session.canRecord);
  renderRecordControls(
    { record: ui.record, pause: ui.recPause, consent: ui.recConsent },
    session ? session.recording : { state: 'off', consent: null },
    {
      show: canRecord,
      enabled: appState === 'joined',
      busy: recordingBusy,
      consentBy: session ? session.consentBy : null,
      asked: !!(session && session.consentAsked),
    },
  );
}

function setRecordingBusy(busy) {
  recordingBusy = !!busy;
  clearTimeout(recordingBusyTimer);
  if (recordingBusy) {
    recordingBusyTimer = setTimeout(() => setRecordingBusy(false), RECORDING_BUSY_MS);
  }
  renderRecordHost();
}

function startRecording(overrideReason) {
  if (!session) return;
  setRecordingBusy(session.recordingAction('start', overrideReason));
}

function onRecordClick() {
  if (!session || recordingBusy) return;
  setMoreOpen(false);
  if (session.recording.state === 'off') startRecording();
  else setRecordingBusy(session.recordingAction('stop'));
}

function onRecordPauseClick() {
  if (!session || recordingBusy || session.recording.state === 'off') return;
  setMoreOpen(false);
  const action = session.recording.state === 'paused' ? 'resume' : 'pause';
  setRecordingBusy(session.recordingAction(action));
}

function askForConsent() {
  if (!session) return;
  if (session.requestConsent()) {
    askedToStartAt = Date.now();
    showNotice({ key: 'rec_asked', level: 'info' });
  }
}

/** The server's recording state changed (or we joined): render, and tell everyone plainly. */
function onRecordingChanged(next, previous, info) {
  setRecordingBusy(false);
  if (next.state !== 'off') askedToStartAt = null;
  if (next.state === 'recording' && recordDialog && recordDialog.isOpen) recordDialog.close();
  renderRecording();
  const key = recordingNotice(next, previous, info);
  if (!key) return;
  // joining a recorded consultation: the badge says it too, so never over a message that matters
  if (info.joined && info.first && notice) return;
  showNotice({ key, level: 'info' });
}

function onRecordingConsent({ granted, given_by_role: by }) {
  if (consentPrompt) consentPrompt.close();
  renderRecording();
  if (!session) return;
  const mine = consentAnswered !== null && session.givesConsent;
  if (mine && consentAnswered === granted) {
    showNotice({ key: granted ? 'consent_thanks_yes' : 'consent_thanks_no', level: 'info' });
  } else if (session.canRecord || session.givesConsent) {
    showNotice({ key: `consent_${granted ? 'given' : 'refused'}_${by}`, level: 'info' });
  }
  consentAnswered = null;
  if (!session.canRecord) return;
  const asked = askedToStartAt !== null && Date.now() - askedToStartAt < ASK_STARTS_WITHIN_MS;
  askedToStartAt = null;
  if (granted && asked && session.recording.state === 'off') {
    // the doctor pressed Record and asked; the patient said yes: record now
    showNotice({ key: 'rec_auto_started', level: 'info' });
    startRecording();
  }
}

/** A patient or guardian came in (the lobby counts): "nobody to ask" is no longer true. */
function noLongerNobodyToAsk(people) {
  if (notice && notice.code === 'no_patient' && people.some((p) => CONSENT_ROLES.has(p.role))) {
    hideNotice();
  }
}

function onRecordingError({ action, code, message }) {
  setRecordingBusy(false);
  if (action === 'request_consent') askedToStartAt = null;
  if (action === 'start' && code === 'consent_required') {
    recordDialog.open(session ? session.recording.consent : null);
    return;
  }
  if (action === 'start' && recordDialog.isOpen) {
    recordDialog.showError(errorText(code, message));
    return;
  }
  // a start that raced another host's: it is being recorded, which is what was wanted
  if (action === 'start' && code === 'recording_active') return;
  showNotice({ code, message, level: 'error' });
}

function renderQuality() {
  const show = !!session && (view === 'call' || view === 'hold') && appState !== 'idle';
  ui.quality.hidden = !show;
  const level = appState === 'reconnecting' ? 'poor' : quality.level;
  ui.quality.dataset.level = level;
  let label = t(`quality_${level}`);
  if (quality.rtt_ms !== null && level !== 'unknown') {
    label += ` (${t('quality_detail', { rtt: quality.rtt_ms, loss: quality.loss_pct ?? 0 })})`;
  }
  ui.quality.setAttribute('aria-label', label);
  ui.quality.title = label;
}

// ---- controls ---------------------------------------------------------------------------------

function renderToggle(button, item, keys) {
  const usable = !!item && !item.ended;
  const muted = !usable || item.muted;
  const active = ['joined', 'joining', 'connecting', 'reconnecting'].includes(appState);
  button.disabled = !usable || !active;
  button.dataset.muted = String(muted);
  let text;
  let label;
  if (!usable) {
    text = t(keys.none);
    label = t(keys.noneLabel);
  } else if (item.muted) {
    text = t(keys.unmute);
    label = t(keys.unmuteLabel);
  } else {
    text = t(keys.mute);
    label = t(keys.muteLabel);
  }
  button.querySelector('.ctrl-text').textContent = text;
  button.setAttribute('aria-label', label);
  button.title = label;
}

function canShareScreen() {
  const grants = (session && session.me && session.me.grants) || {};
  const mobile = /Android|iPhone|iPad|iPod|Mobile/i.test(navigator.userAgent);
  return !!(grants.publish_screen && navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia && !mobile);
}

function renderControls() {
  const local = session ? session.local : { audio: null, video: null };
  renderToggle(ui.mic, local.audio, {
    mute: 'mic_mute',
    muteLabel: 'mic_mute_label',
    unmute: 'mic_unmute',
    unmuteLabel: 'mic_unmute_label',
    none: 'mic_none',
    noneLabel: 'mic_none_label',
  });
  renderToggle(ui.cam, local.video, {
    mute: 'cam_off',
    muteLabel: 'cam_off_label',
    unmute: 'cam_on',
    unmuteLabel: 'cam_on_label',
    none: 'cam_none',
    noneLabel: 'cam_none_label',
  });
  const terminal = TERMINAL_STATES.includes(appState);
  ui.controls.hidden = terminal || view === 'precheck' || view === 'start';
  ui.leave.disabled = terminal;
  const video = local.video;
  ui.flip.hidden = !(video && !video.ended && cameraCount > 1);
  ui.flip.disabled = flipping || !!(video && video.muted);

  const inCall = view === 'call';
  const joined = appState === 'joined';
  const grants = (session && session.me && session.me.grants) || {};
  // chat: in the call (lobby and hold have none)
  ui.chat.hidden = !(inCall && session && session.me && grants.send_data !== false);
  ui.chat.disabled = !joined;
  // screen share: desktops, with the grant
  const sharing = !!(session && session.isSharingScreen);
  ui.screen.hidden = !(inCall && canShareScreen());
  ui.screen.disabled = !joined || screenBusy;
  ui.screen.dataset.sharing = String(sharing);
  ui.screen.dataset.muted = 'false';
  ui.screen.querySelector('.ctrl-text').textContent = t(sharing ? 'screen_stop' : 'screen_start');
  ui.screen.setAttribute('aria-label', t(sharing ? 'screen_stop_label' : 'screen_start_label'));
  ui.screen.title = ui.screen.getAttribute('aria-label');
  ui.screen.setAttribute('aria-pressed', String(sharing));
  // moderator tools: in the bar on wide screens, behind "More" on phones
  const moderator = !!(inCall && session && session.isModerator);
  const narrow = NARROW.matches;
  ui.more.hidden = !(moderator && narrow);
  ui.more.setAttribute('aria-expanded', String(moreOpen));
  ui.hostTools.hidden = !moderator || (narrow && !moreOpen);
  ui.hostTools.dataset.popover = String(narrow);
  ui.invite.disabled = !joined;
  ui.end.disabled = !joined;
  renderRecordHost();
  ui.controls.dataset.count = String(
    [...ui.controls.querySelectorAll(':scope > .ctrl')].filter((b) => !b.hidden).length,
  );
  renderLocalTile();
}

function setMoreOpen(open) {
  moreOpen = !!open;
  renderControls();
  if (moreOpen) (ui.record.hidden || ui.record.disabled ? ui.invite : ui.record).focus();
}

function renderLocalTile() {
  const local = session ? session.local : { audio: null, video: null };
  const show = view === 'call' && !!(local.audio || local.video);
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

function setLocalPreview() {
  const local = session ? session.local : null;
  const track = local && local.video ? local.video.track : null;
  // the preview shows only video (and is muted anyway)
  localTile.setLocalStream(track ? new MediaStream([track]) : null);
  if (view === 'lobby') renderView();
}

function installIcons() {
  const put = (button, on, off) => {
    const holder = button.querySelector('.ctrl-icon');
    holder.innerHTML =
      `<span class="icon-on">${on}</span>` + (off ? `<span class="icon-off">${off}</span>` : '');
  };
  put(ui.mic, ICONS.mic, ICONS.micOff);
  put(ui.cam, ICONS.cam, ICONS.camOff);
  put(ui.flip, ICONS.flip);
  put(ui.leave, ICONS.leave);
  put(ui.screen, ICONS.screen);
  put(ui.chat, ICONS.chat);
  put(ui.more, ICONS.moreH);
  put(ui.invite, ICONS.invite);
  put(ui.end, ICONS.end);
  ui.recDeclined.querySelector('.rec-off-icon').innerHTML = ICONS.recordOff;
  ui.sound.insertAdjacentHTML('afterbegin', ICONS.sound);
  $('btn-chat-close').innerHTML = ICONS.close;
  $('btn-chat-send').innerHTML = ICONS.send;
  ui.hold.querySelector('.hold-icon').innerHTML = ICONS.pause;
  for (const mark of document.querySelectorAll('.check-mark')) {
    mark.innerHTML = `<span class="mark-ok">${ICONS.check}</span><span class="mark-warn">${ICONS.warn}</span>`;
  }
}

async function flipCamera() {
  const item = session && session.local.video;
  if (!item || flipping) return;
  flipping = true;
  renderControls();
  const settings = item.track.getSettings();
  item.track.stop(); // phones often cannot open a second camera while one is open
  let track = null;
  try {
    track = await openOtherCamera(settings);
  } catch (err) {
    console.warn('[huizhen] switching camera failed', err);
    showNotice({ key: 'flip_failed', level: 'warning' });
    try {
      track = await reopenCamera(settings);
    } catch (err2) {
      console.warn('[huizhen] could not reopen the camera', err2);
    }
  }
  try {
    if (track && !session.isTerminal) await session.replaceLocalVideo(track);
    else if (track) track.stop();
  } finally {
    flipping = false;
    setLocalPreview();
    renderControls();
  }
}

async function toggleScreenShare() {
  if (!session || screenBusy) return;
  if (session.isSharingScreen) {
    session.stopScreenShare();
    return;
  }
  screenBusy = true;
  renderControls();
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: 15, max: 30 } },
      audio: false,
    });
    await session.startScreenShare(stream);
  } catch (err) {
    if (stream) for (const track of stream.getTracks()) track.stop();
    // NotAllowedError: the user cancelled the picker — nothing to say
    if (!err || err.name !== 'NotAllowedError') {
      console.warn('[huizhen] screen share failed', err);
      showNotice({ key: 'screen_failed', level: 'error' });
    }
  } finally {
    screenBusy = false;
    renderControls();
  }
}

function onLeave() {
  if (!session) {
    // still in the pre-call check, or waiting for camera permission
    leaveRequested = true;
    showEnd({ state: 'left', key: 'left', rejoin: true });
    return;
  }
  session.leave();
}

async function onEndForAll() {
  if (!session) return;
  setMoreOpen(false);
  const yes = await confirmAction(t('end_confirm'), t('end_confirm_yes'));
  if (yes && session && !session.isTerminal) session.endRoom();
}

function wireControls() {
  ui.mic.addEventListener('click', () => {
    const item = session && session.local.audio;
    if (item) session.setMuted('audio', !item.muted);
  });
  ui.cam.addEventListener('click', () => {
    const item = session && session.local.video;
    if (item) session.setMuted('video', !item.muted);
  });
  ui.flip.addEventListener('click', flipCamera);
  ui.screen.addEventListener('click', toggleScreenShare);
  ui.leave.addEventListener('click', onLeave);
  ui.rejoin.addEventListener('click', () => {
    try {
      sessionStorage.setItem(SKIP_CHECK_KEY, location.pathname);
    } catch {
      // the check runs again: harmless
    }
    location.reload();
  });
  ui.bannerClose.addEventListener('click', hideNotice);
  ui.lang.addEventListener('click', toggleLang);
  ui.care.addEventListener('click', () => setCare(!document.body.classList.contains('care')));
  ui.sound.addEventListener('click', () => {
    soundBlocked = false;
    ui.sound.hidden = true;
    for (const tile of remoteTiles.values()) tile.unmute();
  });
  ui.more.addEventListener('click', (ev) => {
    ev.stopPropagation();
    setMoreOpen(!moreOpen);
  });
  document.addEventListener('click', (ev) => {
    if (moreOpen && !ui.hostTools.contains(ev.target) && !ui.more.contains(ev.target)) setMoreOpen(false);
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && moreOpen) {
      setMoreOpen(false);
      ui.more.focus();
    }
  });
  ui.invite.addEventListener('click', () => {
    setMoreOpen(false);
    if (session && session.room) inviteDialog.open(session.room.kind);
  });
  ui.end.addEventListener('click', onEndForAll);
  ui.record.addEventListener('click', onRecordClick);
  ui.recPause.addEventListener('click', onRecordPauseClick);
  NARROW.addEventListener('change', () => {
    moreOpen = false;
    renderControls();
    renderLayout();
  });

  chatView = new ChatView({
    panel: $('chat-panel'),
    log: $('chat-log'),
    input: $('chat-input'),
    send: $('btn-chat-send'),
    form: $('chat-form'),
    toggle: ui.chat,
    badge: $('chat-unread'),
    close: $('btn-chat-close'),
    empty: $('chat-empty'),
    onSend: (text) => {
      if (session && session.sendChat(text)) return true;
      showNotice({ key: 'chat_offline', level: 'warning' });
      return false;
    },
    lookup: (pid) => (session ? session.participants[pid] || null : null),
    announce,
  });
  lobbyList = new LobbyList({
    root: ui.lobbyList,
    onAdmit: (id) => session && session.admit(id),
    onDeny: (id) => session && session.deny(id),
  });
  inviteDialog = new InviteDialog({
    create: async (role, name) => {
      const invite = await session.createInvite(role, name);
      lastInvite = invite;
      return invite;
    },
  });
  recordDialog = new RecordDialog({
    ask: askForConsent,
    override: (reason) => {
      if (!session || !session.recordingAction('start', reason)) {
        recordDialog.showError(t('chat_offline'));
        return;
      }
      setRecordingBusy(true);
    },
  });
  consentPrompt = new ConsentPrompt({
    answer: (granted) => {
      if (session && session.answerConsent(granted)) consentAnswered = granted;
      else showNotice({ key: 'chat_offline', level: 'warning' });
    },
  });
}

// ---- lobby (moderators) -------------------------------------------------------------------------

function renderLobbyList() {
  if (!lobbyList) return;
  const people = session && session.isModerator && view === 'call' ? Object.values(session.lobby) : [];
  const before = lobbyList.items.length;
  lobbyList.render(people);
  if (people.length > before) {
    const newest = people[people.length - 1];
    announce(t('announce_lobby', { name: newest.name || newest.identity }));
  }
}

// ---- remote tiles -----------------------------------------------------------------------------

function onAutoplayBlocked() {
  soundBlocked = true;
  ui.sound.hidden = false;
}

function tileFor(participant) {
  let tile = remoteTiles.get(participant.id);
  if (!tile) {
    tile = new TileView({
      participantId: participant.id,
      onAutoplayBlocked,
      onVideoSize: (trackId, height) => session && session.setVideoSize(trackId, height),
    });
    if (soundBlocked) tile.video.muted = true;
    remoteTiles.set(participant.id, tile);
    ui.tiles.append(tile.el);
    renderLayout();
  }
  return tile;
}

async function onTileAction(participantId, action) {
  if (!session) return;
  const p = session.participants[participantId];
  if (!p) return;
  const name = p.name || p.identity || '';
  if (action === 'hold') session.hold(participantId, p.state !== 'held');
  else if (action === 'mute') session.muteParticipant(participantId, 'audio');
  else if (action === 'remove') {
    const yes = await confirmAction(t('remove_confirm', { name }), t('remove_confirm_yes'));
    if (yes && session && !session.isTerminal) session.remove(participantId);
  }
}

function renderTile(participant) {
  const tile = tileFor(participant);
  const tracks = Object.values(participant.tracks);
  const isMic = (tr) => tr.kind === 'audio' && tr.source !== 'screen' && tr.source !== 'screen_audio';
  const isCam = (tr) => tr.kind === 'video' && tr.source !== 'screen';
  const name = participant.name || participant.identity || '…';
  const role = roleLabel(participant.role);
  tile.el.dataset.role = participant.role || '';
  const micMuted = !tracks.some((tr) => isMic(tr) && !tr.muted);
  tile.setInfo({
    name,
    role,
    micMuted,
    camMuted: !tracks.some((tr) => isCam(tr) && !tr.muted),
    micLabel: t('mic_muted_badge'),
    camLabel: t('cam_off_badge'),
    groupLabel: role ? t('tile_label', { name, role }) : name,
  });
  tile.setConditions({
    held: participant.state === 'held',
    videoPaused: !!participant.videoPaused,
    heldLabel: t('tile_held'),
    pausedLabel: t('tile_video_paused'),
  });
  if (session && session.isModerator) {
    tile.setMenu({ onAction: (action) => onTileAction(participant.id, action) });
    const held = participant.state === 'held';
    tile.setMenuLabels({
      menu: t('tile_menu_label', { name }),
      hold: t(held ? 'action_resume' : 'action_hold'),
      mute: t('action_mute'),
      remove: t('action_remove'),
      muteDisabled: micMuted,
      held,
    });
  } else {
    tile.setMenu(null);
  }
}

function removeTile(id) {
  const tile = remoteTiles.get(id);
  if (!tile) return;
  tile.destroy();
  remoteTiles.delete(id);
  if (activeSpeaker === id) activeSpeaker = null;
  renderLayout();
}

/** The participant shown large: a screen share first, then the active speaker. */
function mainParticipant() {
  for (const [id, tile] of remoteTiles) if (tile.el.classList.contains('has-screen')) return id;
  if (activeSpeaker && remoteTiles.has(activeSpeaker)) return activeSpeaker;
  // nobody has spoken yet: a patient sees the doctor first
  for (const [id, tile] of remoteTiles) {
    if (['doctor', 'host', 'moderator'].includes(tile.el.dataset.role)) return id;
  }
  return remoteTiles.size ? remoteTiles.keys().next().value : null;
}

function renderLayout() {
  const n = remoteTiles.size;
  ui.tiles.dataset.count = String(n);
  const screen = [...remoteTiles.values()].some((tile) => tile.el.classList.contains('has-screen'));
  const speakerLayout = n >= 2 && (NARROW.matches || screen);
  ui.tiles.dataset.layout = speakerLayout ? 'speaker' : 'grid';
  const main = speakerLayout ? mainParticipant() : null;
  for (const [id, tile] of remoteTiles) tile.setMain(id === main);
  // the large tile first in the document (screen readers, tab order)
  if (main) {
    const el = remoteTiles.get(main).el;
    if (ui.tiles.firstElementChild !== el) ui.tiles.prepend(el);
  }
  renderWaiting();
}

function renderWaiting() {
  ui.waiting.hidden = !(remoteTiles.size === 0 && appState === 'joined' && view === 'call');
}

function onSpeakers(info) {
  speaking = info.speaking;
  for (const [id, tile] of remoteTiles) tile.setSpeaking(speaking.has(id));
}

/** The server's active speaker (active_speaker): shown large on a phone. */
function onActiveSpeaker(id) {
  if (id === activeSpeaker) return;
  activeSpeaker = id;
  if (ui.tiles.dataset.layout === 'speaker') renderLayout();
}

// ---- session wiring ---------------------------------------------------------------------------

function wireSession(s) {
  s.on('state', (state) => setAppState(state));
  s.on('active-speaker', onActiveSpeaker);
  s.on('joined', () => {
    renderView();
    setLocalPreview();
  });
  s.on('admission', (state) => {
    renderView();
    if (state === 'active') for (const p of Object.values(s.participants)) renderTile(p);
  });
  s.on('room-updated', () => {
    renderStatus();
    renderRecording();
  });
  s.on('recording', onRecordingChanged);
  s.on('recording-updated', () => renderRecording());
  s.on('recording-consent', onRecordingConsent);
  s.on('recording-error', onRecordingError);
  s.on('consent-request', ({ by }) => {
    consentAnswered = null;
    consentPrompt.open(by);
  });
  s.on('lobby', () => {
    renderLobbyList();
    noLongerNobodyToAsk(Object.values(s.lobby));
  });
  s.on('participant-added', (p) => {
    renderTile(p);
    noLongerNobodyToAsk([p]);
    if (s.state === 'joined') announce(t('announce_joined', { name: p.name || p.identity }));
  });
  s.on('participant-updated', (p) => {
    renderTile(p);
    renderLayout();
  });
  s.on('participant-removed', (p) => {
    removeTile(p.id);
    announce(t('announce_left', { name: p.name || p.identity }));
  });
  s.on('participants-reset', () => {
    for (const id of [...remoteTiles.keys()]) removeTile(id);
  });
  s.on('remote-track', (att) => {
    const p = s.participants[att.participantId];
    if (p) tileFor(p).addTrack(att);
    if (att.source === 'screen') renderLayout();
  });
  s.on('remote-track-removed', (att) => {
    const tile = remoteTiles.get(att.participantId);
    if (tile) tile.removeTrack(att);
    if (att.source === 'screen') renderLayout();
  });
  s.on('local-updated', () => {
    renderControls();
  });
  s.on('chat', (m) => chatView.add(m));
  s.on('invite', (invite) => {
    lastInvite = invite;
    inviteDialog.show(invite);
  });
  s.on('notice', (n) => showNotice(n));
  s.on('notice-clear', () => {
    if (notice && RECONNECT_NOTICES.has(notice.key)) hideNotice();
  });
  s.on('end', (info) => showEnd(info));
}

function rerenderAll() {
  renderView();
  if (lobbyList) lobbyList.render(lobbyList.items, true);
  renderBanner();
  if (session) for (const p of Object.values(session.participants)) renderTile(p);
  if (chatView) chatView.rerender();
  if (inviteDialog) inviteDialog.rerender();
  if (recordDialog) recordDialog.rerender();
  if (consentPrompt) consentPrompt.rerender();
  if (precheck) precheck.render();
}

// ---- start ------------------------------------------------------------------------------------

function startCall(roomId, token) {
  if (session || leaveRequested) return;
  if (precheck) {
    precheck.destroy();
    precheck = null;
  }
  const { stream } = localMedia;
  session = new Session({ wsUrl: wsUrl(roomId), token, localStream: stream });
  wireSession(session);
  setLocalPreview();
  renderView();
  monitor = new CallMonitor({
    session,
    onSpeakers,
    onQuality: (q) => {
      quality = q;
      renderQuality();
    },
  });
  session.start();
}

function skipCheckOnce() {
  try {
    const skip = sessionStorage.getItem(SKIP_CHECK_KEY) === location.pathname;
    sessionStorage.removeItem(SKIP_CHECK_KEY);
    return skip;
  } catch {
    return false;
  }
}

async function main() {
  installIcons();
  applyTranslations();
  onLangChange(rerenderAll);
  ui.stage.append(localTile.el);
  localTile.el.hidden = true;
  wireControls();
  setCare(loadCare());
  setAppState('idle');

  const { roomId, token } = parseLink();
  if (!roomId || !token) {
    showEnd({ state: 'failed', key: 'link_incomplete', code: 'link_incomplete' });
    return;
  }
  const wants = kindsFromToken(token);
  const noGum = !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  if (
    !window.RTCPeerConnection ||
    !window.WebSocket ||
    (noGum && window.isSecureContext && (wants.audio || wants.video))
  ) {
    showEnd({ state: 'failed', key: 'browser_unsupported', code: 'browser_unsupported' });
    return;
  }

  const skipCheck = skipCheckOnce();
  if (!skipCheck) {
    precheck = new PrecheckView({
      root: ui.precheck,
      wsUrl: wsUrl(roomId),
      token,
      onResult: (result) => {
        precheckResult = result;
      },
      onLinkError: (code, message) => {
        precheckResult = { verdict: 'link', code };
        // already joining: the join itself says what is wrong with the link
        if (!session) showEnd({ state: 'failed', code, message });
      },
    });
    renderView();
    ui.join.addEventListener('click', () => startCall(roomId, token));
    // the connection check needs no camera: run both at once
    precheck.runConnectivity();
  }

  setAppState('media');
  localMedia = await getLocalMedia(wants);
  const { stream, problem } = localMedia;
  if (leaveRequested || TERMINAL_STATES.includes(appState)) {
    if (stream) for (const track of stream.getTracks()) track.stop();
    return;
  }
  if (problem) showNotice({ key: problem, code: problem, level: 'warning', sticky: true });
  if (stream && stream.getVideoTracks().length) cameraCount = await countCameras();
  if (precheck) {
    precheck.setStream(stream, problem);
    setAppState('idle');
    ui.join.disabled = false;
    ui.join.focus({ preventScroll: true });
  } else {
    startCall(roomId, token);
  }
}

// Leaving the page: say goodbye so the others see "left" at once. A page restored from the
// back/forward cache has no connection any more: start again.
window.addEventListener('pagehide', () => {
  if (session && !session.isTerminal) session.leave();
});
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted) location.reload();
});

main().catch((err) => {
  console.error('[huizhen] failed to start', err);
  showEnd({ state: 'failed', key: 'error_generic', code: 'internal', message: String(err) });
});
