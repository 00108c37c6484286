// Huizhen web client, the join page: what its modules share — the page's elements (`ui`) and the
// state of the visit (`app`, one object changed in place). app.js starts it all; the view
// (call-view.js), the control bar (call-controls.js), the tiles (call-tiles.js) and the
// recording glue (call-recording.js) read and change it.

export const $ = (id) => document.getElementById(id);

export const ui = {
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
  subject: $('subject'),
  subjectText: $('subject-text'),
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

export const TERMINAL_STATES = ['left', 'ended', 'failed'];
export const SKIP_CHECK_KEY = 'huizhen.skipcheck';
// narrow screens (phones upright): the active speaker large, the others small
export const NARROW = window.matchMedia('(max-width: 799px)');

export const app = {
  /** idle|media|connecting|joining|joined|reconnecting|left|ended|failed */
  state: 'idle',
  /** start|precheck|call|lobby|hold|end */
  view: 'start',
  /** the Session (session.js) once Join was pressed */
  session: null,
  /** why the session ended: {state, key, code, message} or null */
  endInfo: null,
  leaveRequested: false,
  localMedia: { stream: null, problem: null },
  cameraCount: 0,
  /** the pre-call check (PrecheckView) while it shows, and its result */
  precheck: null,
  precheckResult: null,
  monitor: null,
  quality: { level: 'unknown', rtt_ms: null, loss_pct: null },
  lastInvite: null,
  chatView: null,
  lobbyList: null,
  inviteDialog: null,
};
