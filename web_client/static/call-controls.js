// Huizhen web client, the join page: the control bar — microphone, camera, camera flip, screen
// share, chat, leave, and the moderator tools (in the bar on wide screens, behind "More" on
// phones) — how each shows and what it does; the icons; the wiring of the page's buttons and
// dialogs.

import { ChatView } from './chat.js';
import { confirmAction, InviteDialog, LobbyList } from './host.js';
import { t, toggleLang } from './i18n.js';
import { ICONS } from './icons.js';
import { openOtherCamera, reopenCamera } from './media.js';
import {
  createRecordingDialogs,
  onRecordClick,
  onRecordPauseClick,
  renderRecordHost,
} from './call-recording.js';
import { $, app, NARROW, SKIP_CHECK_KEY, TERMINAL_STATES, ui } from './call-state.js';
import { renderLayout, unblockSound } from './call-tiles.js';
import {
  announce,
  hideNotice,
  renderLocalTile,
  setCare,
  setLocalPreview,
  showEnd,
  showNotice,
} from './call-view.js';

let flipping = false;
let moreOpen = false;
let screenBusy = false;

// ---- controls ---------------------------------------------------------------------------------

function renderToggle(button, item, keys) {
  const usable = !!item && !item.ended;
  const muted = !usable || item.muted;
  const active = ['joined', 'joining', 'connecting', 'reconnecting'].includes(app.state);
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
  const session = app.session;
  const grants = (session && session.me && session.me.grants) || {};
  const mobile = /Android|iPhone|iPad|iPod|Mobile/i.test(navigator.userAgent);
  return !!(grants.publish_screen && navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia && !mobile);
}

export function renderControls() {
  const session = app.session;
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
  const terminal = TERMINAL_STATES.includes(app.state);
  ui.controls.hidden = terminal || app.view === 'precheck' || app.view === 'start';
  ui.leave.disabled = terminal;
  const video = local.video;
  ui.flip.hidden = !(video && !video.ended && app.cameraCount > 1);
  ui.flip.disabled = flipping || !!(video && video.muted);

  const inCall = app.view === 'call';
  const joined = app.state === 'joined';
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

export function setMoreOpen(open) {
  moreOpen = !!open;
  renderControls();
  if (moreOpen) (ui.record.hidden || ui.record.disabled ? ui.invite : ui.record).focus();
}

export function installIcons() {
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

// ---- what the buttons do ----------------------------------------------------------------------

async function flipCamera() {
  const session = app.session;
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
  const session = app.session;
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
  if (!app.session) {
    // still in the pre-call check, or waiting for camera permission
    app.leaveRequested = true;
    showEnd({ state: 'left', key: 'left', rejoin: true });
    return;
  }
  app.session.leave();
}

async function onEndForAll() {
  if (!app.session) return;
  setMoreOpen(false);
  const yes = await confirmAction(t('end_confirm'), t('end_confirm_yes'));
  if (yes && app.session && !app.session.isTerminal) app.session.endRoom();
}

export function wireControls() {
  ui.mic.addEventListener('click', () => {
    const item = app.session && app.session.local.audio;
    if (item) app.session.setMuted('audio', !item.muted);
  });
  ui.cam.addEventListener('click', () => {
    const item = app.session && app.session.local.video;
    if (item) app.session.setMuted('video', !item.muted);
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
  ui.sound.addEventListener('click', unblockSound);
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
    if (app.session && app.session.room) app.inviteDialog.open(app.session.room.kind);
  });
  ui.end.addEventListener('click', onEndForAll);
  ui.record.addEventListener('click', onRecordClick);
  ui.recPause.addEventListener('click', onRecordPauseClick);
  NARROW.addEventListener('change', () => {
    moreOpen = false;
    renderControls();
    renderLayout();
  });

  app.chatView = new ChatView({
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
      if (app.session && app.session.sendChat(text)) return true;
      showNotice({ key: 'chat_offline', level: 'warning' });
      return false;
    },
    lookup: (pid) => (app.session ? app.session.participants[pid] || null : null),
    announce,
  });
  app.lobbyList = new LobbyList({
    root: ui.lobbyList,
    onAdmit: (id) => app.session && app.session.admit(id),
    onDeny: (id) => app.session && app.session.deny(id),
  });
  app.inviteDialog = new InviteDialog({
    create: async (role, name) => {
      const invite = await app.session.createInvite(role, name);
      app.lastInvite = invite;
      return invite;
    },
  });
  createRecordingDialogs();
}
