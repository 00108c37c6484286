// Huizhen web client: what moderators (grants.moderate: the doctor, the host) see in addition.
//
// * #lobby-list: who waits in the lobby, each <li data-participant-id> with .btn-admit / .btn-deny
// * the invite dialog (#invite-dialog): role → `create_invite` → #invite-link + Copy
// * a confirm dialog (#confirm-dialog) for Remove and "End for everyone" (never window.confirm:
//   some in-app browsers block it)
// * recording (grants.record): #btn-record (start ↔ stop, the patient's consent under it),
//   #btn-rec-pause (pause ↔ resume), and #rec-dialog when a start is refused for want of consent
//   (`consent_required`): Ask the patient | Record anyway… (a reason, ≥ 5 characters, logged) |
//   Cancel

import { roleLabel, t } from './i18n.js';
import { ICONS } from './icons.js';

/** Least length of an override reason (recording/service.py MIN_OVERRIDE_REASON). */
export const MIN_OVERRIDE_REASON = 5;

/** Roles a moderator may invite, per room kind (docs/api.md), most useful first. */
export const INVITE_ROLES = {
  clinic: ['guardian', 'interpreter', 'nurse', 'patient', 'doctor'],
  joint_clinic: ['specialist', 'interpreter', 'guardian', 'nurse', 'patient', 'doctor'],
  ward_round: ['specialist', 'doctor', 'nurse'],
  mdt: ['specialist', 'presenter', 'doctor', 'patient', 'viewer', 'moderator'],
  broadcast: ['presenter', 'viewer', 'moderator'],
};

const FALLBACK_ROLES = ['specialist', 'interpreter', 'guardian'];

// ---- confirm ----------------------------------------------------------------------------------

/** Ask "are you sure?"; resolves true for yes. */
export function confirmAction(text, yesLabel) {
  const dialog = document.getElementById('confirm-dialog');
  const yes = document.getElementById('btn-confirm-yes');
  const no = document.getElementById('btn-confirm-no');
  document.getElementById('confirm-text').textContent = text;
  yes.textContent = yesLabel;
  return new Promise((resolve) => {
    const done = (value) => {
      yes.onclick = null;
      no.onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    yes.onclick = () => done(true);
    no.onclick = () => done(false);
    dialog.onclose = () => done(false);
    if (typeof dialog.showModal === 'function') dialog.showModal();
    else dialog.setAttribute('open', '');
    no.focus();
  });
}

// ---- lobby list -------------------------------------------------------------------------------

export class LobbyList {
  /**
   * @param {{root: HTMLElement, onAdmit: (id) => void, onDeny: (id) => void}} options
   */
  constructor({ root, onAdmit, onDeny }) {
    this.root = root;
    this.title = root.querySelector('.lobby-list-title');
    this.list = root.querySelector('.lobby-items');
    this.onAdmit = onAdmit;
    this.onDeny = onDeny;
    this.items = [];
    this.pending = new Set(); // ids we have just admitted/denied (buttons disabled)
    this.list.addEventListener('click', (ev) => {
      const button = ev.target.closest('button');
      const li = ev.target.closest('li[data-participant-id]');
      if (!button || !li) return;
      const id = li.dataset.participantId;
      this.pending.add(id);
      for (const b of li.querySelectorAll('button')) b.disabled = true;
      if (button.classList.contains('btn-admit')) this.onAdmit(id);
      else if (button.classList.contains('btn-deny')) this.onDeny(id);
    });
  }

  /** @param {Array<{id, name, identity, role}>} people  (empty when not a moderator) */
  render(people, force = false) {
    this.items = people;
    const ids = new Set(people.map((p) => p.id));
    for (const id of [...this.pending]) if (!ids.has(id)) this.pending.delete(id);
    // rebuild only when something shown changed (a tap on Admit must not hit a vanished button)
    const key = JSON.stringify([people.map((p) => [p.id, p.name, p.role]), [...this.pending]]);
    if (key === this.key && !force) return;
    this.key = key;
    this.root.hidden = people.length === 0;
    this.title.textContent = t('lobby_list_title', { n: people.length });
    this.list.textContent = '';
    for (const p of people) {
      const li = document.createElement('li');
      li.className = 'lobby-item';
      li.dataset.participantId = p.id;
      const who = document.createElement('div');
      who.className = 'lobby-who';
      const name = document.createElement('span');
      name.className = 'lobby-name';
      name.textContent = p.name || p.identity || '…';
      const role = document.createElement('span');
      role.className = 'lobby-role';
      role.textContent = roleLabel(p.role);
      who.append(name, role);
      const admit = document.createElement('button');
      admit.type = 'button';
      admit.className = 'btn-admit';
      admit.textContent = t('admit');
      admit.setAttribute('aria-label', t('admit_label', { name: name.textContent }));
      const deny = document.createElement('button');
      deny.type = 'button';
      deny.className = 'btn-deny';
      deny.textContent = t('deny');
      deny.setAttribute('aria-label', t('deny_label', { name: name.textContent }));
      if (this.pending.has(p.id)) {
        admit.disabled = true;
        deny.disabled = true;
      }
      const actions = document.createElement('div');
      actions.className = 'lobby-actions';
      actions.append(admit, deny);
      li.append(who, actions);
      this.list.append(li);
    }
  }
}

// ---- invite -----------------------------------------------------------------------------------

export class InviteDialog {
  /**
   * @param {{create: (role: string, name: string) => Promise<object>}} options
   */
  constructor({ create }) {
    this.create = create;
    this.dialog = document.getElementById('invite-dialog');
    this.role = document.getElementById('invite-role');
    this.name = document.getElementById('invite-name');
    this.result = document.getElementById('invite-result');
    this.link = document.getElementById('invite-link');
    this.expires = document.getElementById('invite-expires');
    this.copied = document.getElementById('invite-copied');
    this.error = document.getElementById('invite-error');
    this.createBtn = document.getElementById('btn-invite-create');
    this.kind = null;
    this.last = null;
    this.createBtn.addEventListener('click', () => this.submit());
    document.getElementById('btn-invite-close').addEventListener('click', () => this.dialog.close());
    document.getElementById('btn-invite-copy').addEventListener('click', () => this.copy());
    this.link.addEventListener('focus', () => this.link.select());
  }

  open(kind) {
    this.kind = kind;
    this.renderRoles();
    this.result.hidden = true;
    this.error.hidden = true;
    this.copied.textContent = '';
    this.link.value = '';
    this.name.value = '';
    if (typeof this.dialog.showModal === 'function') this.dialog.showModal();
    else this.dialog.setAttribute('open', '');
    this.role.focus();
  }

  renderRoles() {
    const roles = INVITE_ROLES[this.kind] || FALLBACK_ROLES;
    const selected = this.role.value;
    this.role.textContent = '';
    for (const r of roles) {
      const opt = document.createElement('option');
      opt.value = r;
      opt.textContent = roleLabel(r);
      this.role.append(opt);
    }
    if (roles.includes(selected)) this.role.value = selected;
  }

  async submit() {
    this.error.hidden = true;
    this.createBtn.disabled = true;
    try {
      const invite = await this.create(this.role.value, this.name.value.trim());
      this.show(invite);
    } catch (err) {
      this.error.textContent = t('invite_failed', { reason: err && err.message ? err.message : '' });
      this.error.hidden = false;
    } finally {
      this.createBtn.disabled = false;
    }
  }

  show(invite) {
    if (!invite || !invite.join_url) return;
    this.last = invite;
    this.link.value = invite.join_url;
    this.result.hidden = false;
    this.copied.textContent = '';
    this.renderExpiry();
  }

  renderExpiry() {
    const invite = this.last;
    if (!invite || !invite.expires_at) {
      this.expires.textContent = '';
      return;
    }
    const ts = typeof invite.expires_at === 'number' ? invite.expires_at * 1000 : Date.parse(invite.expires_at);
    const d = new Date(ts);
    this.expires.textContent = Number.isNaN(d.getTime())
      ? ''
      : t('invite_expires', {
          time: d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }),
          role: roleLabel(invite.role),
        });
  }

  async copy() {
    const text = this.link.value;
    if (!text) return;
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch {
      // no clipboard API / permission: select and copy the old way
      this.link.focus();
      this.link.select();
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
    }
    this.copied.textContent = ok ? t('copied') : t('copy_manual');
  }

  rerender() {
    if (this.dialog.open) {
      this.renderRoles();
      this.renderExpiry();
    }
  }
}

// ---- recording ----------------------------------------------------------------------------------

/** The consent status the host sees: i18n key for the room's consent and our open question. */
export function consentStatusKey(recording, consentBy, asked) {
  const who = consentBy === 'guardian' ? 'guardian' : 'patient';
  if (recording.consent === 'granted') return `rec_consent_granted_${who}`;
  if (asked) return 'rec_consent_asked';
  if (recording.consent === 'declined') return `rec_consent_declined_${who}`;
  return 'rec_consent_none';
}

/**
 * Render #btn-record and #btn-rec-pause for a recording state.
 * @param {{record: HTMLButtonElement, pause: HTMLButtonElement, consent: HTMLElement}} ui
 * @param {{state, consent}} recording
 * @param {{show: boolean, enabled: boolean, busy: boolean, consentBy: string|null, asked: boolean}} o
 */
export function renderRecordControls(ui, recording, o) {
  const on = recording.state !== 'off';
  const paused = recording.state === 'paused';
  ui.record.hidden = !o.show;
  ui.pause.hidden = !o.show || !on;
  ui.record.disabled = !o.enabled || o.busy;
  ui.pause.disabled = !o.enabled || o.busy;
  ui.record.dataset.recording = recording.state;
  const statusKey = consentStatusKey(recording, o.consentBy, o.asked);
  const status = t(statusKey);
  ui.consent.textContent = status;
  ui.consent.dataset.consent = statusKey.replace(/^rec_consent_/, '').replace(/_(patient|guardian)$/, '');
  ui.record.querySelector('.ctrl-text').textContent = t(on ? 'record_stop' : 'record');
  ui.record.setAttribute('aria-label', t(on ? 'record_stop_label' : 'record_label', { status }));
  ui.record.title = ui.record.getAttribute('aria-label');
  const icon = ui.record.querySelector('.ctrl-icon');
  const iconName = on ? 'recordStop' : 'record';
  if (icon.dataset.icon !== iconName) {
    icon.innerHTML = ICONS[iconName];
    icon.dataset.icon = iconName;
  }
  ui.pause.dataset.paused = String(paused);
  ui.pause.querySelector('.ctrl-text').textContent = t(paused ? 'record_resume' : 'record_pause');
  ui.pause.setAttribute('aria-label', t(paused ? 'record_resume_label' : 'record_pause_label'));
  ui.pause.title = ui.pause.getAttribute('aria-label');
  const pauseIcon = ui.pause.querySelector('.ctrl-icon');
  const pauseName = paused ? 'recordResume' : 'pause';
  if (pauseIcon.dataset.icon !== pauseName) {
    pauseIcon.innerHTML = ICONS[pauseName];
    pauseIcon.dataset.icon = pauseName;
  }
}

/** Code points, as the server counts a reason's length (Python len). */
function reasonLength(text) {
  return [...text.trim()].length;
}

export class RecordDialog {
  /**
   * @param {{ask: () => void, override: (reason: string) => void}} options
   */
  constructor({ ask, override }) {
    this.ask = ask;
    this.override = override;
    this.dialog = document.getElementById('rec-dialog');
    this.stepConsent = document.getElementById('rec-step-consent');
    this.stepReason = document.getElementById('rec-step-reason');
    this.title = document.getElementById('rec-dialog-title');
    this.reasonTitle = document.getElementById('rec-override-title');
    this.reason = document.getElementById('rec-reason');
    this.error = document.getElementById('rec-reason-error');
    this.askBtn = document.getElementById('btn-rec-ask');
    this.start = document.getElementById('btn-rec-override-start');
    this.consent = null;
    this.busy = false;
    this.askBtn.addEventListener('click', () => {
      this.close();
      this.ask();
    });
    document.getElementById('btn-rec-override').addEventListener('click', () => this.showReason());
    document.getElementById('btn-rec-cancel').addEventListener('click', () => this.close());
    document.getElementById('btn-rec-back').addEventListener('click', () => this.showConsent());
    this.reason.addEventListener('input', () => {
      this.error.hidden = true;
      this.renderStart();
    });
    this.start.addEventListener('click', () => this.submit());
    this.dialog.addEventListener('close', () => {
      this.busy = false;
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  /** The start was refused for want of consent; `consent`: null (not asked) or 'declined'. */
  open(consent) {
    this.consent = consent;
    this.busy = false;
    this.reason.value = '';
    this.error.hidden = true;
    this.showConsent();
    if (!this.dialog.open) {
      if (typeof this.dialog.showModal === 'function') this.dialog.showModal();
      else this.dialog.setAttribute('open', '');
    }
    this.askBtn.focus();
  }

  showConsent() {
    this.stepReason.hidden = true;
    this.stepConsent.hidden = false;
    this.dialog.setAttribute('aria-labelledby', 'rec-dialog-title');
    this.render();
    if (this.dialog.open) this.askBtn.focus();
  }

  showReason() {
    this.stepConsent.hidden = true;
    this.stepReason.hidden = false;
    this.dialog.setAttribute('aria-labelledby', 'rec-override-title');
    this.renderStart();
    this.reason.focus();
  }

  submit() {
    const reason = this.reason.value.trim();
    if (reasonLength(reason) < MIN_OVERRIDE_REASON) {
      this.showError(t('rec_reason_short'));
      return;
    }
    this.busy = true;
    this.renderStart();
    this.override(reason);
  }

  /** The server refused the start with a reason (the dialog stays open to correct it). */
  showError(text) {
    this.busy = false;
    this.error.textContent = text;
    this.error.hidden = false;
    this.renderStart();
    if (this.dialog.open && !this.stepReason.hidden) this.reason.focus();
  }

  renderStart() {
    this.start.disabled = this.busy || reasonLength(this.reason.value) < MIN_OVERRIDE_REASON;
  }

  render() {
    this.title.textContent = t(
      this.consent === 'declined' ? 'rec_dialog_title_declined' : 'rec_dialog_title_none',
    );
  }

  close() {
    this.busy = false;
    if (this.dialog.open) this.dialog.close();
  }

  rerender() {
    if (this.dialog.open) this.render();
  }
}
