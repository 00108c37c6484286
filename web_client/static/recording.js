// Huizhen web client: what everyone sees of the recording, and the patient's consent question
// (docs/protocol.md, "Recording and consent"). The host's controls are in host.js.
//
// * #rec-indicator in the top bar: data-state="recording" (red, "REC" / "录制中") or "paused"
//   ("Paused" / "已暂停"); hidden while nothing is recorded.
// * #rec-declined: "Not recorded" / "未录制", shown to the patient or guardian after they said no
//   (the room's consent is "declined") while nothing is recorded.
// * #consent-dialog: "Dr Li asks to record this consultation…" with two equally large answers,
//   #btn-consent-yes and #btn-consent-no (neither is focused first: the question is).

import { getLang, t } from './i18n.js';
import { ICONS } from './icons.js';

/** The top-bar badges for a recording state; `declinedBadge`: show "Not recorded" if it fits. */
export function renderRecordingBadges({ indicator, declined }, recording, { show, declinedBadge }) {
  const state = show && recording ? recording.state : 'off';
  indicator.hidden = state === 'off';
  indicator.dataset.state = state;
  indicator.dataset.override = String(!!(recording && recording.override));
  if (state !== 'off') {
    const paused = state === 'paused';
    indicator.querySelector('.rec-text').textContent = t(paused ? 'recording_paused' : 'recording');
    const label = t(paused ? 'recording_paused_label' : 'recording_label');
    indicator.setAttribute('aria-label', label);
    indicator.title = label;
  }
  declined.hidden = !(show && declinedBadge && state === 'off' && recording.consent === 'declined');
  declined.title = t('not_recorded_label');
}

/** Which notice (i18n key) a change of the recording state deserves, or null. */
export function recordingNotice(next, previous, info) {
  if (info.joined && info.first) {
    // joining a consultation that is being recorded: say so once
    if (next.state === 'off') return null;
    return next.override ? 'rec_ongoing_override' : 'rec_ongoing';
  }
  if (next.state === previous.state) return null;
  if (next.state === 'recording') {
    if (previous.state === 'paused') return 'rec_resumed';
    return next.override ? 'rec_started_override' : 'rec_started';
  }
  if (next.state === 'paused') return 'rec_paused';
  // stopped
  const reason = info.reason || 'stopped';
  if (reason === 'room_ended') return null; // the end of the consultation says it all
  if (reason === 'consent_withdrawn') return 'rec_stopped_consent_withdrawn';
  if (reason === 'server_shutdown') return 'rec_stopped_server_shutdown';
  return 'rec_stopped';
}

/** "{name}" as it reads before Chinese text: a Latin name keeps a space ("Dr Li 请求…"). */
function nameForTitle(name) {
  if (getLang() === 'zh' && /[A-Za-z0-9.]$/.test(name)) return `${name} `;
  return name;
}

export class ConsentPrompt {
  /** @param {{answer: (granted: boolean) => void}} options */
  constructor({ answer }) {
    this.answer = answer;
    this.dialog = document.getElementById('consent-dialog');
    this.title = document.getElementById('consent-title');
    this.yes = document.getElementById('btn-consent-yes');
    this.no = document.getElementById('btn-consent-no');
    this.by = '';
    this.dialog.querySelector('.consent-icon').innerHTML = ICONS.record;
    this.yes.querySelector('.btn-consent-icon').innerHTML = ICONS.check;
    this.no.querySelector('.btn-consent-icon').innerHTML = ICONS.close;
    this.yes.addEventListener('click', () => this.reply(true));
    this.no.addEventListener('click', () => this.reply(false));
  }

  get isOpen() {
    return this.dialog.open;
  }

  /** Ask (again): `by` is the clinician's name. */
  open(by) {
    this.by = by || '';
    this.render();
    if (!this.dialog.open) {
      if (typeof this.dialog.showModal === 'function') this.dialog.showModal();
      else this.dialog.setAttribute('open', '');
    }
    // the question first, not one of the answers: Enter must not answer by accident
    this.title.focus();
  }

  reply(granted) {
    this.close();
    this.answer(granted);
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  render() {
    const name = this.by.trim();
    this.title.textContent = name
      ? t('consent_title', { name: nameForTitle(name) })
      : t('consent_title_anon');
  }

  rerender() {
    if (this.dialog.open) this.render();
  }
}
