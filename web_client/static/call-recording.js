// Huizhen web client, the join page: recording and consent — the badges in the top bar
// (recording.js), the host's Record / Pause buttons and Record dialog (host.js), the patient's
// consent question, and the messages that tell everyone what happened.

import { errorText, t } from './i18n.js';
import { RecordDialog, renderRecordControls } from './host.js';
import { ConsentPrompt, recordingNotice, renderRecordingBadges } from './recording.js';
import { CONSENT_ROLES } from './session.js';
import { setMoreOpen } from './call-controls.js';
import { app, ui } from './call-state.js';
import { currentNotice, hideNotice, showNotice } from './call-view.js';

// a recording message the server has not answered (with a state or an error) by then is let go
const RECORDING_BUSY_MS = 10000;
// the host asked the patient from the Record dialog: their "yes" within this time starts it
const ASK_STARTS_WITHIN_MS = 10 * 60 * 1000;

let recordDialog = null;
let consentPrompt = null;
let recordingBusy = false; // a start/stop/pause/resume of ours awaits the server
let recordingBusyTimer = null;
let askedToStartAt = null; // the host asked the patient via Record: start when they agree
let consentAnswered = null; // patient/guardian: what we answered last (true/false)

export function isRecordingBusy() {
  return recordingBusy;
}

/** The host's Record dialog and the patient's consent question (once, at start). */
export function createRecordingDialogs() {
  recordDialog = new RecordDialog({
    ask: askForConsent,
    override: (reason) => {
      if (!app.session || !app.session.recordingAction('start', reason)) {
        recordDialog.showError(t('chat_offline'));
        return;
      }
      setRecordingBusy(true);
    },
  });
  consentPrompt = new ConsentPrompt({
    answer: (granted) => {
      if (app.session && app.session.answerConsent(granted)) consentAnswered = granted;
      else showNotice({ key: 'chat_offline', level: 'warning' });
    },
  });
}

export function closeRecordingDialogs() {
  if (recordDialog) recordDialog.close();
  if (consentPrompt) consentPrompt.close();
}

export function rerenderRecordingDialogs() {
  if (recordDialog) recordDialog.rerender();
  if (consentPrompt) consentPrompt.rerender();
}

/** A clinician asks us (patient/guardian) to agree to recording. */
export function onConsentRequest({ by }) {
  consentAnswered = null;
  consentPrompt.open(by);
}

// ---- top bar and host tools ---------------------------------------------------------------------

export function renderRecording() {
  const { session, view } = app;
  const show = !!session && view !== 'end' && view !== 'start' && view !== 'precheck';
  renderRecordingBadges({ indicator: ui.rec, declined: ui.recDeclined },
    session ? session.recording : null,
    { show, declinedBadge: !!(session && session.givesConsent) });
  renderRecordHost();
}

/** The host's Record / Pause buttons (in the moderator tools), with the consent status. */
export function renderRecordHost() {
  const session = app.session;
  const inCall = app.view === 'call';
  const canRecord = !!(inCall && session && session.canRecord);
  renderRecordControls(
    { record: ui.record, pause: ui.recPause, consent: ui.recConsent },
    session ? session.recording : { state: 'off', consent: null },
    {
      show: canRecord,
      enabled: app.state === 'joined',
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
  if (!app.session) return;
  setRecordingBusy(app.session.recordingAction('start', overrideReason));
}

export function onRecordClick() {
  const session = app.session;
  if (!session || recordingBusy) return;
  setMoreOpen(false);
  if (session.recording.state === 'off') startRecording();
  else setRecordingBusy(session.recordingAction('stop'));
}

export function onRecordPauseClick() {
  const session = app.session;
  if (!session || recordingBusy || session.recording.state === 'off') return;
  setMoreOpen(false);
  const action = session.recording.state === 'paused' ? 'resume' : 'pause';
  setRecordingBusy(session.recordingAction(action));
}

function askForConsent() {
  if (!app.session) return;
  if (app.session.requestConsent()) {
    askedToStartAt = Date.now();
    showNotice({ key: 'rec_asked', level: 'info' });
  }
}

// ---- what the server says -----------------------------------------------------------------------

/** The server's recording state changed (or we joined): render, and tell everyone plainly. */
export function onRecordingChanged(next, previous, info) {
  setRecordingBusy(false);
  if (next.state !== 'off') askedToStartAt = null;
  if (next.state === 'recording' && recordDialog && recordDialog.isOpen) recordDialog.close();
  renderRecording();
  const key = recordingNotice(next, previous, info);
  if (!key) return;
  // joining a recorded consultation: the badge says it too, so never over a message that matters
  if (info.joined && info.first && currentNotice()) return;
  showNotice({ key, level: 'info' });
}

export function onRecordingConsent({ granted, given_by_role: by }) {
  if (consentPrompt) consentPrompt.close();
  renderRecording();
  const session = app.session;
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
export function noLongerNobodyToAsk(people) {
  const notice = currentNotice();
  if (notice && notice.code === 'no_patient' && people.some((p) => CONSENT_ROLES.has(p.role))) {
    hideNotice();
  }
}

export function onRecordingError({ action, code, message }) {
  setRecordingBusy(false);
  if (action === 'request_consent') askedToStartAt = null;
  if (action === 'start' && code === 'consent_required') {
    recordDialog.open(app.session ? app.session.recording.consent : null);
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
