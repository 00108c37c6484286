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
import { confirmAction, InviteDialog, LobbyList } from './host.js';
import { ICONS } from './icons.js';
import { countCameras, getLocalMedia, kindsFromToken, openOtherCamera, reopenCamera } from './media.js';
import { CallMonitor } from './monitor.js';
import { PrecheckView } from './precheck.js';
import { Session } from './session.js';
import { TileView } from './tiles.js';

const NOTICE_HIDE_MS = 12000;
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

// ---- state & banner ---------------------------------------------------------------------------

function setAppState(state) {
  appState = state;
  document.body.dataset.state = state;
  renderStatus();
  renderControls();
  renderWaiting();
}

function renderStatus() {
  ui.status.textContent = t(`status_${appState}`);
  const title = session && session.room && session.room.title;
  ui.roomTitle.textContent = title || '';
  ui.roomTitle.hidden = !title;
}

function noticeText(n) {
  if (n.key) return t(n.key);
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
    return;
  }
  ui.banner.hidden = false;
  ui.banner.dataset.level = notice.fatal ? 'fatal' : notice.level || 'info';
  if (notice.code) ui.banner.dataset.code = notice.code;
  else delete ui.banner.dataset.code;
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
  setAppState(info.state);
}

function announce(text) {
  // screen readers: polite live region
  ui.live.textContent = '';
  setTimeout(() => {
    ui.live.textContent = text;
  }, 50);
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
  const terminal = ['left', 'ended', 'failed'].includes(appState);
  ui.controls.hidden = terminal;
  ui.leave.disabled = terminal;
  const video = local.video;
  ui.flip.hidden = !(video && !video.ended && cameraCount > 1);
  ui.flip.disabled = flipping || !!(video && video.muted);
  renderLocalTile();
}

function renderLocalTile() {
  const local = session ? session.local : { audio: null, video: null };
  const terminal = ['left', 'ended', 'failed'].includes(appState);
  const show = !terminal && !!(local.audio || local.video);
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
  ui.sound.insertAdjacentHTML('afterbegin', ICONS.sound);
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

function onLeave() {
  if (!session) {
    // still waiting for camera permission
    leaveRequested = true;
    showEnd({ state: 'left', key: 'left', rejoin: true });
    return;
  }
  session.leave();
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
  ui.leave.addEventListener('click', onLeave);
  ui.rejoin.addEventListener('click', () => location.reload());
  ui.bannerClose.addEventListener('click', hideNotice);
  ui.lang.addEventListener('click', toggleLang);
  ui.sound.addEventListener('click', () => {
    soundBlocked = false;
    ui.sound.hidden = true;
    for (const tile of remoteTiles.values()) tile.unmute();
  });
}

// ---- remote tiles -----------------------------------------------------------------------------

function onAutoplayBlocked() {
  soundBlocked = true;
  ui.sound.hidden = false;
}

function tileFor(participant) {
  let tile = remoteTiles.get(participant.id);
  if (!tile) {
    tile = new TileView({ participantId: participant.id, onAutoplayBlocked });
    if (soundBlocked) tile.video.muted = true;
    remoteTiles.set(participant.id, tile);
    ui.tiles.append(tile.el);
    renderLayout();
  }
  return tile;
}

function renderTile(participant) {
  const tile = tileFor(participant);
  const tracks = Object.values(participant.tracks);
  const isMic = (tr) => tr.kind === 'audio' && tr.source !== 'screen' && tr.source !== 'screen_audio';
  const isCam = (tr) => tr.kind === 'video' && tr.source !== 'screen';
  const name = participant.name || participant.identity || '…';
  const role = roleLabel(participant.role);
  tile.el.dataset.role = participant.role || '';
  tile.setInfo({
    name,
    role,
    micMuted: !tracks.some((tr) => isMic(tr) && !tr.muted),
    camMuted: !tracks.some((tr) => isCam(tr) && !tr.muted),
    micLabel: t('mic_muted_badge'),
    camLabel: t('cam_off_badge'),
    groupLabel: role ? t('tile_label', { name, role }) : name,
  });
}

function removeTile(id) {
  const tile = remoteTiles.get(id);
  if (!tile) return;
  tile.destroy();
  remoteTiles.delete(id);
  renderLayout();
}

function renderLayout() {
  const n = remoteTiles.size;
  ui.tiles.dataset.count = String(n);
  renderWaiting();
}

function renderWaiting() {
  ui.waiting.hidden = !(remoteTiles.size === 0 && appState === 'joined');
}

// ---- session wiring ---------------------------------------------------------------------------

function wireSession(s) {
  s.on('state', (state) => setAppState(state));
  s.on('joined', () => {
    renderStatus();
    setLocalPreview();
    renderControls();
  });
  s.on('participant-added', (p) => {
    renderTile(p);
    if (s.state === 'joined') announce(t('announce_joined', { name: p.name || p.identity }));
  });
  s.on('participant-updated', (p) => renderTile(p));
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
  });
  s.on('remote-track-removed', (att) => {
    const tile = remoteTiles.get(att.participantId);
    if (tile) tile.removeTrack(att);
  });
  s.on('local-updated', () => {
    renderControls();
  });
  s.on('notice', (n) => showNotice(n));
  s.on('notice-clear', () => {
    if (notice && RECONNECT_NOTICES.has(notice.key)) hideNotice();
  });
  s.on('end', (info) => showEnd(info));
}

function rerenderAll() {
  renderStatus();
  renderControls();
  renderBanner();
  if (session) for (const p of Object.values(session.participants)) renderTile(p);
}

// ---- start ------------------------------------------------------------------------------------

async function main() {
  installIcons();
  applyTranslations();
  onLangChange(rerenderAll);
  ui.stage.append(localTile.el);
  localTile.el.hidden = true;
  wireControls();
  setAppState('idle');

  const { roomId, token } = parseLink();
  if (!roomId || !token) {
    showEnd({ state: 'failed', key: 'link_incomplete', code: 'link_incomplete' });
    return;
  }
  if (!window.RTCPeerConnection || !window.WebSocket) {
    showEnd({ state: 'failed', key: 'browser_unsupported', code: 'browser_unsupported' });
    return;
  }

  setAppState('media');
  const { stream, problem } = await getLocalMedia(kindsFromToken(token));
  if (leaveRequested) {
    if (stream) for (const track of stream.getTracks()) track.stop();
    return;
  }
  if (problem) showNotice({ key: problem, level: 'warning', sticky: true });
  if (stream && stream.getVideoTracks().length) cameraCount = await countCameras();

  session = new Session({ wsUrl: wsUrl(roomId), token, localStream: stream });
  wireSession(session);
  setLocalPreview();
  renderControls();
  session.start();
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
