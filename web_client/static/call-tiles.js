// Huizhen web client, the join page: the others' tiles (one TileView per participant, tiles.js),
// the moderator's menu on each, the layout (a grid, or the speaker large on a phone or when a
// screen is shared) and the active speaker.

import { confirmAction } from './host.js';
import { roleLabel, t } from './i18n.js';
import { app, NARROW, ui } from './call-state.js';
import { TileView } from './tiles.js';

/** who may be handed the host role (rooms/policy.py CARE_TEAM) */
const CLINICIANS = new Set(['host', 'doctor', 'specialist', 'nurse', 'presenter', 'moderator']);

export const remoteTiles = new Map(); // participant id -> TileView
let soundBlocked = false;
let activeSpeaker = null; // participant id shown large
let speaking = new Set();

export function getActiveSpeaker() {
  return activeSpeaker;
}

function onAutoplayBlocked() {
  soundBlocked = true;
  ui.sound.hidden = false;
}

/** The "turn the sound on" button was pressed. */
export function unblockSound() {
  soundBlocked = false;
  ui.sound.hidden = true;
  for (const tile of remoteTiles.values()) tile.unmute();
}

/** The visit is over: take every tile down. */
export function destroyTiles() {
  for (const tile of remoteTiles.values()) tile.destroy();
  remoteTiles.clear();
}

export function tileFor(participant) {
  let tile = remoteTiles.get(participant.id);
  if (!tile) {
    tile = new TileView({
      participantId: participant.id,
      onAutoplayBlocked,
      onVideoSize: (trackId, height) => app.session && app.session.setVideoSize(trackId, height),
    });
    if (soundBlocked) tile.video.muted = true;
    remoteTiles.set(participant.id, tile);
    ui.tiles.append(tile.el);
    renderLayout();
  }
  return tile;
}

async function onTileAction(participantId, action) {
  const session = app.session;
  if (!session) return;
  const p = session.participants[participantId];
  if (!p) return;
  const name = p.name || p.identity || '';
  if (action === 'hold') session.hold(participantId, p.state !== 'held');
  else if (action === 'mute') session.muteParticipant(participantId, 'audio');
  else if (action === 'host') {
    const yes = await confirmAction(t('make_host_confirm', { name }), t('make_host_confirm_yes'));
    if (yes && session && !session.isTerminal) session.handOff(participantId);
  } else if (action === 'remove') {
    const yes = await confirmAction(t('remove_confirm', { name }), t('remove_confirm_yes'));
    if (yes && session && !session.isTerminal) session.remove(participantId);
  }
}

export function renderTile(participant) {
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
  // a moderator sees whose connection is weak (connection_quality)
  const quality = participant.quality ? participant.quality.level : '';
  if (tile.el.dataset.quality !== quality) tile.el.dataset.quality = quality;
  tile.setConditions({
    held: participant.state === 'held',
    videoPaused: !!participant.videoPaused,
    heldLabel: t('tile_held'),
    pausedLabel: t('tile_video_paused'),
  });
  if (app.session && app.session.isModerator) {
    tile.setMenu({ onAction: (action) => onTileAction(participant.id, action) });
    const held = participant.state === 'held';
    tile.setMenuLabels({
      menu: t('tile_menu_label', { name }),
      hold: t(held ? 'action_resume' : 'action_hold'),
      mute: t('action_mute'),
      host: t('action_make_host'),
      remove: t('action_remove'),
      canHost: CLINICIANS.has(participant.role) && participant.state === 'active'
        && !(participant.grants && participant.grants.moderate),
      muteDisabled: micMuted,
      held,
    });
  } else {
    tile.setMenu(null);
  }
}

export function removeTile(id) {
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

export function renderLayout() {
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

export function renderWaiting() {
  ui.waiting.hidden = !(remoteTiles.size === 0 && app.state === 'joined' && app.view === 'call');
}

export function onSpeakers(info) {
  speaking = info.speaking;
  for (const [id, tile] of remoteTiles) tile.setSpeaking(speaking.has(id));
}

/** The server's active speaker (active_speaker): shown large on a phone. */
export function onActiveSpeaker(id) {
  if (id === activeSpeaker) return;
  activeSpeaker = id;
  if (ui.tiles.dataset.layout === 'speaker') renderLayout();
}
