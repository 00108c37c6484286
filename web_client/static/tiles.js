// Huizhen web client: one video tile (a remote participant, or our own preview).
//
// A remote tile plays one MediaStream holding the participant's microphone and camera tracks
// (a newly attached track replaces the one of the same kind), in a <video> that also plays the
// sound. A screen-share video, if any, gets a second <video> laid over the tile.
//
// Attributes for styling and tests:
//   data-participant-id   (remote tiles)        id="local-tile" data-local="true" (our preview)
//   data-mic-muted        "true" when no unmuted microphone track
//   data-cam-muted        "true" when no unmuted camera track
//   data-video            "on" when camera media is attached and not muted
//   data-playing          "true" once video frames are being shown
//   data-held             "true" while a moderator has put the participant on hold
//   data-video-paused     "true" while the server pauses its video for us (weak network)
//   data-speaking         "true" while the participant is talking
//   data-speaker          "main" on the tile shown large (phones: the active speaker)
// Moderators get a menu button (.tile-menu-btn) opening .tile-menu with buttons
// [data-action="hold"|"mute"|"remove"].

import { ICONS } from './icons.js';

/** Initials for the avatar: "Dr Li" → "DL", "李医生" → "李". */
export function initials(name) {
  const words = String(name || '').trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return '?';
  const first = (w) => Array.from(w)[0] || '';
  if (words.length === 1) return first(words[0]).toUpperCase();
  return (first(words[0]) + first(words[words.length - 1])).toUpperCase();
}

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function makeVideo(className, muted) {
  const video = el('video', className);
  // both as attributes (markup/tests) and properties (what the element actually does)
  video.setAttribute('playsinline', '');
  video.setAttribute('autoplay', '');
  video.playsInline = true;
  video.autoplay = true;
  if (muted) {
    video.setAttribute('muted', '');
    video.muted = true;
  }
  return video;
}

let openMenuTile = null;

document.addEventListener('click', (ev) => {
  if (openMenuTile && !openMenuTile.el.contains(ev.target)) openMenuTile.closeMenu();
});
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && openMenuTile) {
    const tile = openMenuTile;
    tile.closeMenu();
    tile.menuBtn.focus();
  }
});
window.addEventListener('resize', () => {
  if (openMenuTile) openMenuTile.closeMenu();
});

export class TileView {
  /**
   * @param {{participantId?: string, local?: boolean,
   *          onAutoplayBlocked?: (tile: TileView) => void}} options
   */
  constructor({ participantId = null, local = false, onAutoplayBlocked = null,
    onVideoSize = null } = {}) {
    this.local = local;
    this.onAutoplayBlocked = onAutoplayBlocked;
    this.onVideoSize = onVideoSize;
    this.videoTrackId = null;
    this.sizeTimer = null;
    this.stream = new MediaStream();
    this.screenStream = null;
    this.screenVideo = null;
    this.refreshPending = false;

    const root = el('div', local ? 'tile tile-local' : 'tile', { role: 'group' });
    if (local) {
      root.id = 'local-tile';
      root.dataset.local = 'true';
    } else {
      root.dataset.participantId = participantId;
    }
    root.dataset.micMuted = 'true';
    root.dataset.camMuted = 'true';
    root.dataset.video = 'off';
    root.dataset.playing = 'false';

    this.avatar = el('div', 'tile-avatar', { 'aria-hidden': 'true' });
    this.avatarText = el('span', 'avatar-initials');
    this.avatar.append(this.avatarText);

    // our own preview is always muted (no echo); remote videos carry the sound
    this.video = makeVideo('tile-video', local);
    const onFrames = () => {
      root.dataset.playing = this.video.videoWidth > 0 ? 'true' : 'false';
    };
    for (const ev of ['loadeddata', 'resize', 'playing']) this.video.addEventListener(ev, onFrames);
    this.video.addEventListener('emptied', () => {
      root.dataset.playing = 'false';
    });
    if (onVideoSize && typeof ResizeObserver === 'function') {
      new ResizeObserver(() => this.reportSize()).observe(this.video);
    }

    const label = el('div', 'tile-label');
    this.nameEl = el('span', 'tile-name');
    this.roleEl = el('span', 'tile-role');
    this.micBadge = el('span', 'badge badge-mic', { role: 'img' });
    this.micBadge.innerHTML = ICONS.micOff;
    this.camBadge = el('span', 'badge badge-cam', { role: 'img' });
    this.camBadge.innerHTML = ICONS.camOff;
    label.append(this.micBadge, this.camBadge, this.nameEl, this.roleEl);

    // "on hold" / "video paused" notes over the picture
    this.statusEl = el('div', 'tile-status', { 'aria-live': 'polite' });
    this.statusEl.hidden = true;

    root.append(this.avatar, this.video, this.statusEl, label);
    this.menuBtn = null;
    this.menu = null;
    // tap a remote tile to switch between "whole picture" and "fill the tile"
    if (!local) root.addEventListener('click', () => root.classList.toggle('fit-cover'));
    this.el = root;
  }

  /**
   * @param {{name: string, avatarName?: string, role: string, micMuted: boolean,
   *          camMuted: boolean, micLabel: string, camLabel: string, groupLabel: string}} info
   */
  setInfo({ name, avatarName, role, micMuted, camMuted, micLabel, camLabel, groupLabel }) {
    this.nameEl.textContent = name;
    this.roleEl.textContent = role || '';
    this.roleEl.hidden = !role;
    this.avatarText.textContent = initials(avatarName || name);
    this.el.dataset.micMuted = String(!!micMuted);
    this.el.dataset.camMuted = String(!!camMuted);
    this.micBadge.hidden = !micMuted;
    this.micBadge.setAttribute('aria-label', micLabel);
    this.micBadge.title = micLabel;
    this.camBadge.hidden = !camMuted;
    this.camBadge.setAttribute('aria-label', camLabel);
    this.camBadge.title = camLabel;
    this.el.setAttribute('aria-label', groupLabel);
    this.updateVideoFlag();
  }

  /** Hold / paused-video notes. Labels are already translated. */
  setConditions({ held, videoPaused, heldLabel, pausedLabel }) {
    this.el.dataset.held = String(!!held);
    this.el.dataset.videoPaused = String(!!videoPaused);
    const text = held ? heldLabel : videoPaused ? pausedLabel : '';
    this.statusEl.textContent = text;
    this.statusEl.hidden = !text;
    this.statusEl.dataset.kind = held ? 'held' : videoPaused ? 'paused' : '';
  }

  setSpeaking(speaking) {
    this.el.dataset.speaking = String(!!speaking);
  }

  setMain(main) {
    if (main) this.el.dataset.speaker = 'main';
    else delete this.el.dataset.speaker;
  }

  // ---- moderator menu ------------------------------------------------------------------------

  /**
   * Add (or remove, with null) the moderator menu.
   * @param {{onAction: (action: string) => void}|null} options
   */
  setMenu(options) {
    if (!options) {
      if (this.menuBtn) {
        this.closeMenu();
        this.menuBtn.remove();
        this.menu.remove();
        this.menuBtn = null;
        this.menu = null;
      }
      return;
    }
    this.onAction = options.onAction;
    if (this.menuBtn) return;
    this.menuBtn = el('button', 'tile-menu-btn', {
      type: 'button',
      'aria-haspopup': 'menu',
      'aria-expanded': 'false',
    });
    this.menuBtn.innerHTML = ICONS.more;
    this.menuBtn.addEventListener('click', (ev) => {
      ev.stopPropagation();
      if (this.menu.hidden) this.openMenu();
      else this.closeMenu();
    });
    this.menu = el('div', 'tile-menu', { role: 'menu' });
    this.menu.hidden = true;
    for (const action of ['hold', 'mute', 'host', 'remove']) {
      const b = el('button', `tile-action tile-action-${action}`, {
        type: 'button',
        role: 'menuitem',
      });
      b.dataset.action = action;
      b.innerHTML = `<span class="tile-action-icon" aria-hidden="true">${ICONS[{ hold: 'pause', mute: 'micOff', host: 'host' }[action] || 'remove']}</span><span class="tile-action-text"></span>`;
      b.addEventListener('click', (ev) => {
        ev.stopPropagation();
        this.closeMenu();
        if (this.onAction) this.onAction(action);
      });
      this.menu.append(b);
    }
    this.menu.addEventListener('click', (ev) => ev.stopPropagation());
    this.el.append(this.menuBtn, this.menu);
  }

  /** @param {{menu: string, hold: string, mute: string, host: string, remove: string, muteDisabled: boolean, canHost: boolean}} labels */
  setMenuLabels(labels) {
    if (!this.menuBtn) return;
    this.menuBtn.setAttribute('aria-label', labels.menu);
    this.menuBtn.title = labels.menu;
    for (const b of this.menu.querySelectorAll('[data-action]')) {
      b.querySelector('.tile-action-text').textContent = labels[b.dataset.action];
    }
    const mute = this.menu.querySelector('[data-action="mute"]');
    mute.disabled = !!labels.muteDisabled;
    const hold = this.menu.querySelector('[data-action="hold"]');
    hold.dataset.held = String(!!labels.held);
    this.menu.querySelector('[data-action="host"]').hidden = !labels.canHost;
  }

  openMenu() {
    if (!this.menu) return;
    if (openMenuTile && openMenuTile !== this) openMenuTile.closeMenu();
    openMenuTile = this;
    this.menu.hidden = false;
    this.menuBtn.setAttribute('aria-expanded', 'true');
    this.el.classList.add('menu-open');
    // fixed position next to the button, kept on screen (tiles clip their content)
    const r = this.menuBtn.getBoundingClientRect();
    const m = this.menu.getBoundingClientRect();
    const vw = document.documentElement.clientWidth;
    const vh = document.documentElement.clientHeight;
    let left = r.right - m.width;
    let top = r.bottom + 4;
    if (top + m.height > vh - 8) top = Math.max(8, r.top - m.height - 4);
    left = Math.min(Math.max(8, left), vw - m.width - 8);
    this.menu.style.left = `${Math.round(left)}px`;
    this.menu.style.top = `${Math.round(top)}px`;
    const first = this.menu.querySelector('button:not(:disabled)');
    if (first) first.focus({ preventScroll: true });
  }

  closeMenu() {
    if (!this.menu || this.menu.hidden) return;
    this.menu.hidden = true;
    this.menuBtn.setAttribute('aria-expanded', 'false');
    this.el.classList.remove('menu-open');
    if (openMenuTile === this) openMenuTile = null;
  }

  updateVideoFlag() {
    const hasVideo = this.stream.getVideoTracks().some((t) => t.readyState === 'live');
    this.el.dataset.video = hasVideo && this.el.dataset.camMuted !== 'true' ? 'on' : 'off';
  }

  // ---- remote media -------------------------------------------------------------------------

  /**
   * Report how tall the camera video is shown, in device pixels rounded up to 120 (so a
   * layout change reports once, not on every pixel), a moment after it settles.
   */
  reportSize() {
    if (!this.onVideoSize || !this.videoTrackId) return;
    clearTimeout(this.sizeTimer);
    this.sizeTimer = setTimeout(() => {
      const px = this.video.clientHeight * (window.devicePixelRatio || 1);
      if (px > 0) this.onVideoSize(this.videoTrackId, Math.ceil(px / 120) * 120);
    }, 300);
  }

  /** @param {{kind: string, source: string, track: MediaStreamTrack, trackId?: string}} att */
  addTrack(att) {
    if (att.kind === 'video' && att.source === 'screen') {
      if (!this.screenStream) this.screenStream = new MediaStream();
      if (!this.screenVideo) {
        this.screenVideo = makeVideo('tile-screen', true);
        this.el.insertBefore(this.screenVideo, this.video.nextSibling);
      }
      for (const t of this.screenStream.getVideoTracks()) this.screenStream.removeTrack(t);
      this.screenStream.addTrack(att.track);
      this.el.classList.add('has-screen');
    } else {
      if (att.kind === 'video') {
        this.videoTrackId = att.trackId || null;
        this.reportSize();
      }
      // one track per kind: the new one replaces the old
      for (const t of this.stream.getTracks()) {
        if (t.kind === att.track.kind && t !== att.track) this.stream.removeTrack(t);
      }
      if (!this.stream.getTracks().includes(att.track)) this.stream.addTrack(att.track);
    }
    this.scheduleRefresh();
  }

  /** @param {{kind: string, source: string, track: MediaStreamTrack}} att */
  removeTrack(att) {
    if (this.screenStream && this.screenStream.getTracks().includes(att.track)) {
      this.screenStream.removeTrack(att.track);
      if (this.screenStream.getTracks().length === 0) {
        this.el.classList.remove('has-screen');
        if (this.screenVideo) {
          this.screenVideo.srcObject = null;
          this.screenVideo.remove();
        }
        this.screenVideo = null;
        this.screenStream = null;
      }
    }
    if (this.stream.getTracks().includes(att.track)) this.stream.removeTrack(att.track);
    this.scheduleRefresh();
  }

  /** Our own preview: show this stream (a fresh MediaStream with only the video track). */
  setLocalStream(stream) {
    this.stream = stream || new MediaStream();
    this.scheduleRefresh();
  }

  /**
   * Re-attach the streams once per burst of changes (several tracks usually change in one
   * offer). Assigning srcObject again makes every browser pick up added/removed tracks.
   */
  scheduleRefresh() {
    if (this.refreshPending) return;
    this.refreshPending = true;
    queueMicrotask(() => {
      this.refreshPending = false;
      this.refresh();
    });
  }

  refresh() {
    this.updateVideoFlag();
    const hasTracks = this.stream.getTracks().length > 0;
    this.video.srcObject = null;
    if (hasTracks) {
      this.video.srcObject = this.stream;
      this.play(this.video);
    }
    if (this.screenVideo && this.screenStream) {
      this.screenVideo.srcObject = this.screenStream;
      this.play(this.screenVideo);
    }
  }

  play(video) {
    const p = video.play();
    if (!p || typeof p.catch !== 'function') return;
    p.catch((err) => {
      if (err && err.name === 'NotAllowedError' && !video.muted) {
        // autoplay with sound blocked until the user taps: play muted for now
        video.muted = true;
        video.play().catch(() => {});
        if (this.onAutoplayBlocked) this.onAutoplayBlocked(this);
      }
      // AbortError: srcObject changed while starting; the next play() takes over
    });
  }

  /** After a user gesture: turn the sound on again (remote tiles). */
  unmute() {
    if (this.local) return;
    this.video.muted = false;
    if (this.video.srcObject) this.video.play().catch(() => {});
  }

  setMirrored(mirrored) {
    this.el.classList.toggle('mirrored', !!mirrored);
  }

  destroy() {
    this.closeMenu();
    this.video.srcObject = null;
    if (this.screenVideo) this.screenVideo.srcObject = null;
    this.el.remove();
  }
}
