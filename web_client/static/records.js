// Huizhen web client: the patient's record (/records#t=<records token>[&e=<encounter id>]).
//
// A patient (portal token) sees their own visits, a clinician the visits they took part in
// (and, giving a reason, a patient's record: break-glass, logged). Each visit shows its date,
// kind, clinicians and duration, and plays its recordings through short-lived signed links
// that honour range requests, so the player seeks. No access, an expired link, no network:
// a message that says what happened and what to do, never an empty page.
// The server's API: docs/api.md ("The record, as patients and clinicians see it").

import { applyCare, loadCare } from './care.js';
import { applyTranslations, errorText, getLang, onLangChange, t, toggleLang } from './i18n.js';
import { tokenClaims } from './token.js';

const TOKEN_KEY = 'huizhen.records.token';
const PATIENT_ROLES = new Set(['patient', 'guardian']);
const CARE_TEAM = new Set(['host', 'doctor', 'specialist', 'nurse', 'presenter', 'moderator']);

const $ = (id) => document.getElementById(id);
const ui = {
  heading: $('records-heading'),
  status: $('records-status'),
  problem: $('records-problem'),
  problemTitle: $('problem-title'),
  problemText: $('problem-text'),
  problemHelp: $('problem-help'),
  retry: $('btn-retry'),
  showAll: $('btn-show-all'),
  player: $('player'),
  playerTitle: $('player-title'),
  playerNote: $('player-note'),
  video: $('video'),
  closePlayer: $('btn-close-player'),
  lookup: $('lookup'),
  lookupPatient: $('lookup-patient'),
  lookupReason: $('lookup-reason'),
  visits: $('visits'),
  care: $('btn-care'),
  lang: $('btn-lang'),
};

const state = {
  token: null,
  encounterId: null, // a link to one visit
  viewer: null, // {identity, role, patient_ref}
  encounters: [],
  lookupPatient: null, // a clinician opens this patient's record …
  reason: null, // … for this reason (break-glass, logged)
  problem: null, // {kind, code, message}
  playing: null, // {encounter, recording}
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- the link and the API ----------------------------------------------------------------

/** The token from the link (kept for this tab only, then taken out of the address bar). */
function readLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  let token = params.get('t');
  const encounterId = params.get('e');
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else token = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lives as long as the page
  }
  if (params.has('t')) {
    history.replaceState(null, '', encounterId ? `/records#e=${encodeURIComponent(encounterId)}` : '/records');
  }
  return { token, encounterId };
}

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${state.token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network', '');
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new ApiError(response.status, error.code || 'http', error.message || '');
  }
  return data;
}

function withReason(path) {
  return state.reason ? `${path}${path.includes('?') ? '&' : '?'}reason=${encodeURIComponent(state.reason)}` : path;
}

// ---- loading -----------------------------------------------------------------------------

async function load() {
  state.problem = null;
  setView('loading');
  if (!state.token) {
    showProblem({ kind: 'no_link' });
    return;
  }
  try {
    if (state.encounterId) {
      const one = await api('GET', withReason(`/records/api/encounters/${encodeURIComponent(state.encounterId)}`));
      state.encounters = [one];
    } else {
      const listed = await api('GET', withReason(state.lookupPatient
        ? `/records/api/encounters?patient=${encodeURIComponent(state.lookupPatient)}`
        : '/records/api/encounters'));
      state.viewer = listed.viewer;
      state.encounters = listed.encounters;
    }
    setView(state.encounterId ? 'visit' : 'list');
  } catch (error) {
    showProblem(problemOf(error));
  }
}

function problemOf(error) {
  if (!(error instanceof ApiError)) return { kind: 'generic' };
  if (error.status === 0) return { kind: 'network' };
  if (error.status === 401) return { kind: 'token', code: error.code, message: error.message };
  if (error.status === 403) return { kind: 'forbidden', code: error.code };
  if (error.status === 404) return { kind: 'not_found' };
  return { kind: 'generic' };
}

// ---- views -------------------------------------------------------------------------------

function setView(view) {
  document.body.dataset.view = view;
  render();
}

function showProblem(problem) {
  state.problem = problem;
  setView('problem');
}

function render() {
  const view = document.body.dataset.view;
  const patient = state.viewer && PATIENT_ROLES.has(state.viewer.role);
  ui.heading.textContent = state.lookupPatient
    ? t('records_title_of', { patient: state.lookupPatient })
    : t(patient || !state.viewer ? 'records_title' : 'records_title_clinician');
  ui.status.hidden = view !== 'loading';
  renderProblem();
  ui.lookup.hidden = !(state.viewer && CARE_TEAM.has(state.viewer.role)) || view === 'problem';
  renderVisits(view === 'list' || view === 'visit' ? state.encounters : null);
  renderPlayer();
}

function renderProblem() {
  const p = state.problem;
  ui.problem.hidden = !p;
  if (!p) return;
  const texts = {
    no_link: ['records_no_link_title', 'records_no_link', 'records_ask_hospital'],
    token: ['records_link_title', null, 'records_ask_hospital'],
    forbidden: ['records_forbidden_title', 'records_forbidden', 'records_forbidden_help'],
    not_found: ['records_not_found_title', 'records_not_found', 'records_ask_hospital'],
    network: ['records_network_title', 'records_network', null],
    generic: ['records_generic_title', 'error_generic', null],
  }[p.kind];
  ui.problemTitle.textContent = t(texts[0]);
  ui.problemText.textContent = texts[1] ? t(texts[1]) : errorText(p.code, p.message);
  if (p.kind === 'forbidden' && p.code === 'reason_required') ui.problemText.textContent = t('records_reason_required');
  ui.problemHelp.textContent = texts[2] ? t(texts[2]) : '';
  ui.problemHelp.hidden = !texts[2];
  ui.retry.hidden = !(p.kind === 'network' || p.kind === 'generic');
  ui.showAll.hidden = !(state.encounterId && (p.kind === 'forbidden' || p.kind === 'not_found'));
}

function renderVisits(encounters) {
  ui.visits.replaceChildren();
  if (!encounters) return;
  if (encounters.length === 0) {
    const empty = document.createElement('li');
    empty.className = 'visit visit-empty';
    empty.textContent = t(state.lookupPatient ? 'records_none_patient' : 'records_none');
    ui.visits.append(empty);
    return;
  }
  for (const encounter of encounters) ui.visits.append(visitCard(encounter));
  if (state.encounterId) {
    const all = document.createElement('li');
    all.className = 'visit-more';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn-secondary';
    button.textContent = t('records_show_all');
    button.addEventListener('click', showAll);
    all.append(button);
    ui.visits.append(all);
  }
}

function visitCard(encounter) {
  const card = document.createElement('li');
  card.className = 'visit';
  card.dataset.encounter = encounter.id;

  const when = document.createElement('h2');
  when.className = 'visit-date';
  when.textContent = formatDate(encounter.started_at);
  const kind = document.createElement('p');
  kind.className = 'visit-kind';
  kind.textContent = t(`kind_${encounter.kind}`);
  if (encounter.part_of) kind.textContent += ` · ${t('records_segment')}`;
  card.append(when, kind);

  const facts = document.createElement('dl');
  facts.className = 'visit-facts';
  const clinicians = [...new Set(encounter.participants
    .filter((p) => CARE_TEAM.has(p.role)).map((p) => p.name))];
  addFact(facts, 'records_clinicians', clinicians.join('、') || '—');
  addFact(facts, 'records_duration', encounter.duration_s == null
    ? t('records_in_progress') : formatMinutes(encounter.duration_s));
  if (state.viewer && !PATIENT_ROLES.has(state.viewer.role) && encounter.patient_ref) {
    addFact(facts, 'records_patient', encounter.patient_ref);
  }
  card.append(facts);

  const recordings = encounter.recordings.filter((r) => r.status !== 'purged');
  if (recordings.length === 0) {
    const none = document.createElement('p');
    none.className = 'visit-note';
    none.textContent = t(encounter.recordings.length ? 'records_purged' : 'records_not_recorded');
    card.append(none);
  }
  recordings.forEach((recording, i) => {
    if (recording.status !== 'ready') {
      const wait = document.createElement('p');
      wait.className = 'visit-note';
      wait.textContent = t(recording.status === 'failed' ? 'records_recording_failed' : 'records_preparing');
      card.append(wait);
      return;
    }
    const play = document.createElement('button');
    play.type = 'button';
    play.className = 'btn-primary btn-play';
    play.dataset.recording = recording.id;
    const label = recordings.length > 1 ? t('records_play_n', { n: i + 1 }) : t('records_play');
    play.textContent = `▶ ${label} (${formatClock(recording.duration_s || 0)})`;
    play.addEventListener('click', () => startPlaying(encounter, recording));
    card.append(play);
  });
  return card;
}

function addFact(list, key, value) {
  const term = document.createElement('dt');
  term.textContent = t(key);
  const detail = document.createElement('dd');
  detail.textContent = value;
  list.append(term, detail);
}

function locale() {
  return getLang() === 'zh' ? 'zh-CN' : 'en-GB';
}

function formatDate(iso) {
  return new Intl.DateTimeFormat(locale(), {
    year: 'numeric', month: 'long', day: 'numeric', weekday: 'long', hour: '2-digit', minute: '2-digit',
  }).format(new Date(iso));
}

function formatMinutes(seconds) {
  const minutes = Math.round(seconds / 60);
  return minutes < 1 ? t('records_under_a_minute') : t('records_minutes', { n: minutes });
}

function formatClock(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(h ? 2 : 1, '0');
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

// ---- playing -----------------------------------------------------------------------------

async function signedLink(encounter, recording) {
  const path = `/records/api/encounters/${encodeURIComponent(encounter.id)}/recordings/${encodeURIComponent(recording.id)}/link`;
  const body = { purpose: 'play', file: 'composite.mp4' };
  if (state.reason) body.reason = state.reason;
  return (await api('POST', path, body)).url;
}

async function startPlaying(encounter, recording) {
  state.playing = { encounter, recording, renewals: 0 };
  ui.playerNote.textContent = t('records_opening');
  renderPlayer();
  ui.player.scrollIntoView({ block: 'start' });
  try {
    ui.video.src = await signedLink(encounter, recording);
    ui.playerNote.textContent = '';
    ui.video.focus();
    ui.video.play().catch(() => {}); // a browser that wants another tap shows its play button
  } catch (error) {
    state.playing = null;
    showProblem(problemOf(error));
  }
}

/** A link lasts minutes; when it has run out mid-film, get a new one and go on where we were. */
async function renewLink() {
  const playing = state.playing;
  if (!playing || !ui.video.error || playing.renewals >= 3) {
    if (playing && ui.video.error) ui.playerNote.textContent = t('records_play_failed');
    return;
  }
  playing.renewals += 1;
  const at = ui.video.currentTime;
  const wasPlaying = !ui.video.paused;
  try {
    ui.video.src = await signedLink(playing.encounter, playing.recording);
    ui.video.currentTime = at;
    if (wasPlaying) ui.video.play().catch(() => {});
  } catch (error) {
    showProblem(problemOf(error));
  }
}

function renderPlayer() {
  const playing = state.playing;
  ui.player.hidden = !playing || document.body.dataset.view === 'problem';
  if (!playing) return;
  ui.playerTitle.textContent = `${formatDate(playing.recording.started_at)} · ${t(`kind_${playing.encounter.kind}`)}`;
}

function closePlayer() {
  ui.video.pause();
  ui.video.removeAttribute('src');
  ui.video.load();
  state.playing = null;
  renderPlayer();
}

function showAll() {
  state.encounterId = null;
  history.replaceState(null, '', '/records');
  load();
}

// ---- start -------------------------------------------------------------------------------

function start() {
  const link = readLink();
  state.token = link.token;
  state.encounterId = link.encounterId;
  const claims = link.token ? tokenClaims(link.token) : null;
  if (claims) state.viewer = { identity: claims.sub, role: claims.role, patient_ref: claims.patient ?? null };
  applyCare(loadCare(), ui.care);
  applyTranslations();
  ui.care.addEventListener('click', () => applyCare(!document.body.classList.contains('care'), ui.care));
  ui.lang.addEventListener('click', toggleLang);
  onLangChange(render);
  ui.retry.addEventListener('click', load);
  ui.showAll.addEventListener('click', showAll);
  ui.closePlayer.addEventListener('click', closePlayer);
  ui.video.addEventListener('error', renewLink);
  ui.video.addEventListener('playing', () => { if (state.playing) state.playing.renewals = 0; });
  ui.lookup.addEventListener('submit', (event) => {
    event.preventDefault();
    state.lookupPatient = ui.lookupPatient.value.trim();
    state.reason = ui.lookupReason.value.trim();
    state.encounterId = null;
    closePlayer();
    load();
  });
  load();
}

start();
