// Huizhen web client: the join page (/join/{room_id}#t=<participant token>).
//
// Flow: read the room id from the path and the token from the fragment → ask for the
// microphone/camera the token allows → the pre-call check (precheck.js) → Join → connect and
// join → in the lobby until a moderator admits us (clinic patients) → publish what the grants
// allow → receive everyone else on the subscribe connection. See session.js for the protocol.
//
// Views (body[data-view]): precheck | call | lobby | hold | end.
//
// This module starts the page and wires the session to the view; the rest lives in
// call-state.js (shared elements and state), call-view.js (views, banner, top bar, care mode),
// call-controls.js (the control bar), call-tiles.js (the others' tiles and the layout) and
// call-recording.js (recording and consent).
//
// For tests (read-only): window.huizhen = {state, view, pcs: {publish, subscribe, screen},
// participants, lobby, chat, quality, precheck, activeSpeaker, …} and the stable ids
// #btn-mic #btn-cam #btn-leave #btn-chat #btn-screen #btn-invite #btn-end #btn-join #btn-care
// #tiles #banner #precheck #lobby-wait #lobby-list #hold-screen #chat-panel #chat-log #quality
// #rec-indicator #subject (tiles: [data-participant-id], moderator menu buttons [data-action]).
// Recording (recording.js, host.js): #rec-indicator[data-state], #rec-declined, #consent-dialog
// (#btn-consent-yes / #btn-consent-no), #btn-record, #btn-rec-pause, #rec-consent, #rec-dialog
// (#btn-rec-ask, #btn-rec-override, #rec-reason, #btn-rec-override-start);
// window.huizhen.recording.

import { applyTranslations, getLang, onLangChange, roleLabel, t } from './i18n.js';
import { countCameras, getLocalMedia, kindsFromToken } from './media.js';
import { CallMonitor } from './monitor.js';
import { PrecheckView } from './precheck.js';
import { Session } from './session.js';
import { installIcons, renderControls, wireControls } from './call-controls.js';
import {
  isRecordingBusy,
  noLongerNobodyToAsk,
  onConsentRequest,
  onRecordingChanged,
  onRecordingConsent,
  onRecordingError,
  renderRecording,
  rerenderRecordingDialogs,
} from './call-recording.js';
import { app, SKIP_CHECK_KEY, TERMINAL_STATES, ui } from './call-state.js';
import {
  getActiveSpeaker,
  onActiveSpeaker,
  onSpeakers,
  remoteTiles,
  removeTile,
  renderLayout,
  renderTile,
  tileFor,
} from './call-tiles.js';
import {
  announce,
  currentNotice,
  hideNotice,
  localTile,
  onSubjectChanged,
  renderBanner,
  renderLobbyList,
  renderQuality,
  renderStatus,
  renderView,
  setAppState,
  setCare,
  setLocalPreview,
  showEnd,
  showNotice,
  watchTopbar,
} from './call-view.js';
import { loadCare } from './care.js';
import { wireBroadcast } from './broadcast.js';
import { initClinical, setupClinical } from './call-clinical.js';
import { imagesState, installImages, renderImages, wireImages } from './call-images.js';

// banners about the connection itself, cleared once we are back
const RECONNECT_NOTICES = new Set(['connection_lost', 'media_connection_failed']);

// ---- read-only view for tests and debugging ---------------------------------------------------

window.huizhen = Object.freeze({
  /** idle|media|connecting|joining|joined|reconnecting|left|ended|failed */
  get state() {
    return app.state;
  },
  /** precheck|call|lobby|hold|end */
  get view() {
    return app.view;
  },
  get pcs() {
    return {
      publish: app.session ? app.session.pcs.publish : null,
      subscribe: app.session ? app.session.pcs.subscribe : null,
      screen: app.session ? app.session.pcs.screen : null,
    };
  },
  /** our state in the room: lobby|active|held (null before joining) */
  get admission() {
    return app.session ? app.session.admission : null;
  },
  /** moderators: who waits in the lobby [{id, identity, name, role}] */
  get lobby() {
    return app.session
      ? Object.values(app.session.lobby).map((p) => ({
          id: p.id,
          identity: p.identity,
          name: p.name,
          role: p.role,
        }))
      : [];
  },
  /** chat messages, oldest first [{id, participant_id, name, text, at, mine}] */
  get chat() {
    return app.session ? app.session.chat.map((m) => ({ ...m })) : [];
  },
  /** {level: good|fair|poor|unknown, rtt_ms, loss_pct} */
  get quality() {
    return { ...app.quality };
  },
  /** the pre-call check's result, or null while it runs */
  get precheck() {
    return app.precheckResult ? { ...app.precheckResult } : null;
  },
  get activeSpeaker() {
    return getActiveSpeaker();
  },
  get screenSharing() {
    return !!(app.session && app.session.isSharingScreen);
  },
  get care() {
    return document.body.classList.contains('care');
  },
  get invite() {
    return app.lastInvite ? { ...app.lastInvite } : null;
  },
  /** id -> {id, identity, name, role, grants, state, tracks: {track_id: {…, muted}}, receiving} */
  get participants() {
    return app.session ? app.session.participants : {};
  },
  get me() {
    return app.session ? app.session.me : null;
  },
  get room() {
    return app.session ? app.session.room : null;
  },
  /** the patient under discussion (ward rounds, MDT): {patient_ref, label, segment_id, since,
   *  set_by} or null */
  get subject() {
    return app.session && app.session.subject ? { ...app.session.subject } : null;
  },
  /** the ward round / MDT agenda {items, current} and the room's clinical documents */
  get agenda() {
    return app.session && app.session.agenda ? JSON.parse(JSON.stringify(app.session.agenda)) : null;
  },
  get documents() {
    return app.session ? app.session.documents.map((d) => ({ ...d })) : [];
  },
  /** a broadcast's audience as this page sees it {enabled, member, viewers, hands, handRaised,
   *  promoted, questions} (session-broadcast.js) */
  get audience() {
    return app.session ? JSON.parse(JSON.stringify(app.session.audience)) : null;
  },
  /** MDT case images (call-images.js): {view, shown, list, presenter, hidden} */
  get images() {
    return imagesState();
  },
  /** {audio: {track_id, muted, mid}|null, video: …|null} */
  get local() {
    const view = (item) =>
      item ? { track_id: item.trackId, muted: item.muted, mid: item.mid, ended: item.ended } : null;
    return app.session
      ? { audio: view(app.session.local.audio), video: view(app.session.local.video) }
      : { audio: null, video: null };
  },
  /** why the session ended: {state, key, code, message} or null */
  get end() {
    return app.endInfo;
  },
  get lang() {
    return getLang();
  },
  /** {state: off|recording|paused, consent: null|granted|declined, override, recording_id,
   *   consent_by, consent_asked (moderators), consent_request: {by}|null (patient), busy} */
  get recording() {
    const session = app.session;
    if (!session) return null;
    return {
      ...session.recording,
      consent_by: session.consentBy,
      consent_asked: session.consentAsked,
      consent_request: session.consentRequest ? { ...session.consentRequest } : null,
      busy: isRecordingBusy(),
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

// ---- session wiring ---------------------------------------------------------------------------

function wireSession(s) {
  s.on('state', (state) => setAppState(state));
  s.on('active-speaker', onActiveSpeaker);
  s.on('connection-quality', (m) => {
    if (s.me && m.participant_id === s.me.id) {
      if (app.monitor) app.monitor.serverReport(m);
      return;
    }
    const p = s.participants[m.participant_id]; // a moderator hears of everyone
    if (!p) return;
    p.quality = m;
    renderTile(p);
  });
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
  s.on('subject', onSubjectChanged);
  s.on('role-changed', (me) => {
    rerenderAll();
    renderControls();
    announce(t('role_now', { role: roleLabel(me && me.role) }));
  });
  s.on('consent-request', onConsentRequest);
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
  s.on('chat', (m) => app.chatView.add(m));
  setupClinical(s);
  s.on('invite', (invite) => {
    app.lastInvite = invite;
    app.inviteDialog.show(invite);
  });
  s.on('notice', (n) => showNotice(n));
  s.on('notice-clear', () => {
    const notice = currentNotice();
    if (notice && RECONNECT_NOTICES.has(notice.key)) hideNotice();
  });
  s.on('end', (info) => showEnd(info));
  wireBroadcast(s); // a teaching broadcast: hands, promotion, Q&A (after the handlers above)
}

function rerenderAll() {
  renderView();
  if (app.lobbyList) app.lobbyList.render(app.lobbyList.items, true);
  renderBanner();
  if (app.session) for (const p of Object.values(app.session.participants)) renderTile(p);
  if (app.chatView) app.chatView.rerender();
  if (app.inviteDialog) app.inviteDialog.rerender();
  rerenderRecordingDialogs();
  if (app.precheck) app.precheck.render();
  renderImages();
}

// ---- start ------------------------------------------------------------------------------------

function startCall(roomId, token) {
  if (app.session || app.leaveRequested) return;
  if (app.precheck) {
    app.precheck.destroy();
    app.precheck = null;
  }
  const { stream } = app.localMedia;
  const session = new Session({ wsUrl: wsUrl(roomId), token, localStream: stream });
  app.session = session;
  wireSession(session);
  wireImages(session);
  setLocalPreview();
  renderView();
  app.monitor = new CallMonitor({
    session,
    onSpeakers,
    onQuality: (q) => {
      app.quality = q;
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
  initClinical();
  applyTranslations();
  onLangChange(rerenderAll);
  ui.stage.append(localTile.el);
  localTile.el.hidden = true;
  wireControls();
  installImages();
  watchTopbar();
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
    app.precheck = new PrecheckView({
      root: ui.precheck,
      wsUrl: wsUrl(roomId),
      token,
      onResult: (result) => {
        app.precheckResult = result;
      },
      onLinkError: (code, message) => {
        app.precheckResult = { verdict: 'link', code };
        // already joining: the join itself says what is wrong with the link
        if (!app.session) showEnd({ state: 'failed', code, message });
      },
    });
    renderView();
    ui.join.addEventListener('click', () => startCall(roomId, token));
    // the connection check needs no camera: run both at once
    app.precheck.runConnectivity();
  }

  setAppState('media');
  app.localMedia = await getLocalMedia(wants);
  const { stream, problem } = app.localMedia;
  if (app.leaveRequested || TERMINAL_STATES.includes(app.state)) {
    if (stream) for (const track of stream.getTracks()) track.stop();
    return;
  }
  if (problem) showNotice({ key: problem, code: problem, level: 'warning', sticky: true });
  if (stream && stream.getVideoTracks().length) app.cameraCount = await countCameras();
  if (app.precheck) {
    app.precheck.setStream(stream, problem);
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
  if (app.session && !app.session.isTerminal) app.session.leave();
});
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted) location.reload();
});

main().catch((err) => {
  console.error('[huizhen] failed to start', err);
  showEnd({ state: 'failed', key: 'error_generic', code: 'internal', message: String(err) });
});
