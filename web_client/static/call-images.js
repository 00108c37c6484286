// Huizhen web client: MDT case images (docs/protocol.md, "Case images"; docs/api.md).
//
// The presenting doctor (grants.publish_screen) uploads PNG, JPEG or DICOM pictures of the case
// and shows one; everyone sees the served file itself (an <img> of the original pixels, DICOM
// rendered by the server with the window/level in force), never a video of it, with the
// presenter's pointer, zoom and pan. The presenter drives it: tap/click or move to point, drag
// to pan, buttons, wheel or pinch to zoom, and for DICOM window presets and sliders. Its moves
// go to the server at most every SEND_MS (the server merges further and sends `image_view`).
//
// Image bytes are fetched with the participant token in an Authorization header (never in a
// URL) and shown from a blob: URL.
//
// For tests: window.huizhen.images = {view, shown: {id, naturalWidth, naturalHeight, src
// window}, list, presenter}; elements #btn-images #images-sheet #image-file #images-list
// #image-panel #case-image #image-pointer #btn-zoom-in #btn-zoom-out #btn-zoom-fit
// #image-window (#image-preset #image-wc #image-ww) #btn-image-stop #btn-image-hide.

import { t } from './i18n.js';
import { app, ui } from './call-state.js';

const SEND_MS = 80; // the presenter's pointer/zoom at most this often
const WINDOW_FETCH_MS = 250; // a new window/level is fetched once the sliders rest
const MAX_ZOOM = 16;
const PRESETS = [
  ['default', null],
  ['soft', { center: 40, width: 400 }],
  ['lung', { center: -600, width: 1500 }],
  ['bone', { center: 400, width: 1800 }],
  ['brain', { center: 40, width: 80 }],
];

const $ = (id) => document.getElementById(id);
const state = {
  view: null, // the shared view as the server last said (with our own changes applied)
  seq: -1,
  images: new Map(), // id -> image metadata
  shown: null, // {id, window: 'c/w', url, naturalWidth, naturalHeight}
  hidden: false, // a viewer put the panel away (locally)
  sheetOpen: false,
  pending: null, // our unsent change {pointer?, zoom?, center?, window?}
  sendTimer: null,
  lastSent: 0,
  fetchTimer: null,
  fetchGen: 0,
  pointers: new Map(), // active pointers on the viewport (pinch, drag)
  drag: null,
  geometry: null, // where the image sits in the viewport: {left, top, scale, box}
  listed: null, // the connection (session.gen) whose list we fetched
};
let el = null;

/** Read-only state for tests. */
export function imagesState() {
  return {
    view: state.view ? JSON.parse(JSON.stringify(state.view)) : null,
    shown: state.shown ? { ...state.shown } : null,
    list: [...state.images.values()].map((i) => ({ ...i })),
    presenter: isPresenter(),
    hidden: state.hidden,
  };
}

function isPresenter() {
  const s = app.session;
  return !!(s && s.me && s.me.grants && s.me.grants.publish_screen && s.admission === 'active');
}

function token() {
  return app.session ? app.session.token : '';
}

function roomId() {
  return app.session && app.session.room ? app.session.room.id : '';
}

// ---- the page's elements (made here: join.html only links the stylesheet) ----------------------

function build() {
  const button = document.createElement('button');
  button.id = 'btn-images';
  button.className = 'ctrl';
  button.type = 'button';
  button.hidden = true;
  button.innerHTML =
    '<span class="ctrl-icon" aria-hidden="true"><svg viewBox="0 0 24 24" fill="none" ' +
    'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">' +
    '<rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="10" r="2"/>' +
    '<path d="M21 17l-5-5-8 8"/></svg></span><span class="ctrl-text"></span>';
  ui.controls.insertBefore(button, ui.chat);

  const sheet = document.createElement('section');
  sheet.id = 'images-sheet';
  sheet.className = 'images-sheet';
  sheet.hidden = true;
  sheet.innerHTML =
    '<header class="images-head"><h2 class="images-title"></h2>' +
    '<button id="btn-images-close" class="btn-secondary" type="button"></button></header>' +
    '<label class="btn-primary images-upload"><span class="images-upload-text"></span>' +
    '<input id="image-file" type="file" class="sr-only" ' +
    'accept="image/png,image/jpeg,application/dicom,.dcm,.dicom"></label>' +
    '<p class="images-status" role="status"></p>' +
    '<p class="images-empty"></p><ul id="images-list" class="images-list"></ul>';
  ui.stage.append(sheet);

  const panel = document.createElement('section');
  panel.id = 'image-panel';
  panel.className = 'image-panel';
  panel.hidden = true;
  panel.innerHTML =
    '<header class="image-head"><p class="image-caption"></p>' +
    '<button id="btn-image-stop" class="btn-secondary" type="button"></button>' +
    '<button id="btn-image-hide" class="btn-secondary" type="button"></button></header>' +
    '<div id="image-viewport" class="image-viewport">' +
    '<img id="case-image" class="case-image" alt="" draggable="false">' +
    '<span id="image-pointer" class="image-pointer" hidden></span>' +
    '<p class="image-loading" hidden></p></div>' +
    '<footer class="image-tools">' +
    '<button id="btn-zoom-out" class="btn-secondary image-zoom" type="button">−</button>' +
    '<span class="image-zoom-level" aria-live="off"></span>' +
    '<button id="btn-zoom-in" class="btn-secondary image-zoom" type="button">+</button>' +
    '<button id="btn-zoom-fit" class="btn-secondary" type="button"></button>' +
    '<div id="image-window" class="image-window" hidden>' +
    '<select id="image-preset" class="field-input"></select>' +
    '<label><span class="image-wc-label"></span> <input id="image-wc" type="range" ' +
    'min="-1200" max="3000" step="1"></label>' +
    '<label><span class="image-ww-label"></span> <input id="image-ww" type="range" ' +
    'min="1" max="4000" step="1"></label></div></footer>';
  ui.stage.append(panel);

  el = {
    button,
    sheet,
    panel,
    file: $('image-file'),
    list: $('images-list'),
    status: sheet.querySelector('.images-status'),
    viewport: $('image-viewport'),
    img: $('case-image'),
    pointer: $('image-pointer'),
    loading: panel.querySelector('.image-loading'),
    caption: panel.querySelector('.image-caption'),
    zoomLevel: panel.querySelector('.image-zoom-level'),
    tools: panel.querySelector('.image-tools'),
    windowBox: $('image-window'),
    preset: $('image-preset'),
    wc: $('image-wc'),
    ww: $('image-ww'),
  };
}

// ---- rendering ------------------------------------------------------------------------------------

/** Everything that depends on the language, the grants and the view. */
export function renderImages() {
  if (!el) return;
  const inCall = app.view === 'call' && app.session;
  const presenter = isPresenter();
  const view = state.view;
  el.button.hidden = !(inCall && (presenter || view || state.images.size));
  el.button.querySelector('.ctrl-text').textContent = t('images');
  el.button.setAttribute('aria-label', t('images_label'));
  el.button.setAttribute('aria-expanded', String(state.sheetOpen));
  ui.controls.dataset.count = String(
    [...ui.controls.querySelectorAll(':scope > .ctrl')].filter((b) => !b.hidden).length,
  );
  el.sheet.hidden = !(inCall && state.sheetOpen);
  el.sheet.querySelector('.images-title').textContent = t('images_title');
  $('btn-images-close').textContent = t('close');
  el.sheet.querySelector('.images-upload').hidden = !presenter;
  el.sheet.querySelector('.images-upload-text').textContent = t('images_upload');
  el.sheet.querySelector('.images-empty').textContent = t('images_empty');
  el.sheet.querySelector('.images-empty').hidden = state.images.size > 0;
  renderList(presenter);

  el.panel.hidden = !(inCall && view && !state.hidden);
  el.panel.dataset.presenter = String(presenter);
  $('btn-image-stop').hidden = !presenter;
  $('btn-image-stop').textContent = t('images_stop');
  $('btn-image-hide').hidden = presenter;
  $('btn-image-hide').textContent = t('images_hide');
  $('btn-zoom-in').setAttribute('aria-label', t('images_zoom_in'));
  $('btn-zoom-out').setAttribute('aria-label', t('images_zoom_out'));
  $('btn-zoom-fit').textContent = t('images_zoom_fit');
  el.tools.hidden = !presenter;
  el.loading.textContent = t('images_loading');
  if (!view) return;
  const image = view.image;
  const who = app.session.participants[view.by];
  const parts = [image.label || t('images_untitled')];
  parts.push(t('images_pixels', { w: image.width, h: image.height }));
  const w = image.kind === 'dicom' ? view.window || image.window : null;
  if (w) parts.push(`${t('images_ww')} ${w.width} ${t('images_wc')} ${w.center}`);
  if (who && !presenter) parts.push(t('images_shown_by', { name: who.name || who.identity }));
  el.caption.textContent = parts.join(' · ');
  el.zoomLevel.textContent = `${Math.round(view.zoom * 100)}%`;
  const dicom = image.kind === 'dicom';
  el.windowBox.hidden = !(presenter && dicom);
  if (dicom && presenter) renderWindowTools(view);
  place();
}

function renderList(presenter) {
  el.list.replaceChildren();
  for (const image of state.images.values()) {
    const li = document.createElement('li');
    li.dataset.imageId = image.id;
    const name = document.createElement('span');
    name.className = 'images-name';
    name.textContent = `${image.label || t('images_untitled')} · ${image.kind.toUpperCase()} ` +
      `${image.width}×${image.height}`;
    li.append(name);
    if (presenter) {
      const show = document.createElement('button');
      show.type = 'button';
      show.className = 'btn-primary btn-image-show';
      const current = state.view && state.view.image.id === image.id;
      show.textContent = t(current ? 'images_showing' : 'images_show');
      show.disabled = current;
      show.addEventListener('click', () => showImage(image.id));
      li.append(show);
    }
    el.list.append(li);
  }
}

function renderWindowTools(view) {
  const w = view.window || view.image.window;
  if (el.preset.options.length !== PRESETS.length || el.preset.dataset.lang !== t('images')) {
    el.preset.replaceChildren(
      ...PRESETS.map(([key]) => new Option(t(`images_preset_${key}`), key)),
    );
    el.preset.dataset.lang = t('images');
  }
  const match = PRESETS.find(([, p]) => p && w && p.center === w.center && p.width === w.width);
  el.preset.value = match ? match[0] : 'default';
  el.panel.querySelector('.image-wc-label').textContent = t('images_wc');
  el.panel.querySelector('.image-ww-label').textContent = t('images_ww');
  if (w && document.activeElement !== el.wc) el.wc.value = String(w.center);
  if (w && document.activeElement !== el.ww) el.ww.value = String(w.width);
}

/** Size and place the image and the pointer for the current view. */
function place() {
  const view = state.view;
  if (!view || el.panel.hidden) return;
  const { width: W, height: H } = view.image;
  const box = el.viewport.getBoundingClientRect();
  if (!box.width || !box.height) return;
  const scale = Math.min(box.width / W, box.height / H) * view.zoom;
  const left = box.width / 2 - view.center[0] * W * scale;
  const top = box.height / 2 - view.center[1] * H * scale;
  el.img.style.width = `${W}px`;
  el.img.style.height = `${H}px`;
  el.img.style.transform = `translate(${left}px, ${top}px) scale(${scale})`;
  const p = view.pointer;
  el.pointer.hidden = !p;
  if (p) {
    el.pointer.style.transform = `translate(${left + p[0] * W * scale}px, ` +
      `${top + p[1] * H * scale}px)`;
    el.pointer.dataset.x = String(p[0]);
    el.pointer.dataset.y = String(p[1]);
  }
  state.geometry = { left, top, scale, box };
}

// ---- the served file ------------------------------------------------------------------------------

function windowKey(view) {
  const w = view.image.kind === 'dicom' ? view.window : null;
  return w ? `${w.center}/${w.width}` : '';
}

/** Fetch the image (again when a DICOM's window changed), then show it. */
function loadImage(immediate) {
  const view = state.view;
  if (!view) return;
  const key = windowKey(view);
  if (state.shown && state.shown.id === view.image.id && state.shown.window === key) return;
  clearTimeout(state.fetchTimer);
  const sameImage = state.shown && state.shown.id === view.image.id;
  state.fetchTimer = setTimeout(() => fetchImage(view.image, key), immediate || !sameImage
    ? 0 : WINDOW_FETCH_MS);
}

async function fetchImage(image, key) {
  const gen = ++state.fetchGen;
  el.loading.hidden = false;
  let query = '';
  if (key) {
    const [c, w] = key.split('/');
    query = `?wc=${encodeURIComponent(c)}&ww=${encodeURIComponent(w)}`;
  }
  try {
    const resp = await fetch(`/rooms/${encodeURIComponent(roomId())}/images/` +
      `${encodeURIComponent(image.id)}${query}`, {
      headers: { Authorization: `Bearer ${token()}` },
      cache: 'no-store',
    });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const url = URL.createObjectURL(await resp.blob());
    if (gen !== state.fetchGen) {
      URL.revokeObjectURL(url);
      return;
    }
    await new Promise((resolve, reject) => {
      el.img.onload = resolve;
      el.img.onerror = () => reject(new Error('not an image'));
      el.img.src = url;
    });
    if (state.shown && state.shown.url) URL.revokeObjectURL(state.shown.url);
    state.shown = {
      id: image.id,
      window: key,
      url,
      naturalWidth: el.img.naturalWidth,
      naturalHeight: el.img.naturalHeight,
    };
    el.panel.dataset.imageId = image.id;
  } catch (err) {
    console.warn('[huizhen] case image could not be loaded', err);
  } finally {
    if (gen === state.fetchGen) el.loading.hidden = true;
  }
  place();
}

// ---- server messages ------------------------------------------------------------------------------

function applyView(view, seq) {
  if (typeof seq === 'number') {
    if (seq <= state.seq) return;
    state.seq = seq;
  }
  const me = app.session && app.session.me;
  const driving = view && state.view && me && view.by === me.id &&
    state.view.image.id === view.image.id && isPresenter();
  const previous = state.view;
  if (!driving) state.view = view ? JSON.parse(JSON.stringify(view)) : null;
  if (view) state.images.set(view.image.id, view.image);
  if (!view && state.shown) {
    URL.revokeObjectURL(state.shown.url);
    state.shown = null;
    el.img.removeAttribute('src');
  }
  if (view && (!previous || previous.image.id !== view.image.id)) state.hidden = false;
  renderImages();
  loadImage(false);
}

async function refreshList() {
  state.listed = app.session ? app.session.gen : null;
  try {
    const resp = await fetch(`/rooms/${encodeURIComponent(roomId())}/images`, {
      headers: { Authorization: `Bearer ${token()}` },
    });
    if (!resp.ok) return;
    for (const image of (await resp.json()).images || []) state.images.set(image.id, image);
    renderImages();
  } catch {
    // offline: the list comes back with the next image_added
  }
}

// ---- the presenter's actions ----------------------------------------------------------------------

function showImage(imageId) {
  if (!app.session.sendMessage({ type: 'show_image', image_id: imageId })) return;
  state.sheetOpen = false;
  const image = imageId && state.images.get(imageId);
  // our own view at once; the server's echo confirms it
  state.view = image ? { image, by: app.session.me.id, zoom: 1, center: [0.5, 0.5],
    pointer: null, window: image.window } : null;
  renderImages();
  loadImage(true);
}

/** Change the view locally and send it (throttled to SEND_MS, the last change always goes). */
function change(update) {
  const view = state.view;
  if (!view || !isPresenter()) return;
  Object.assign(view, update);
  view.by = app.session.me.id;
  state.pending = { ...(state.pending || {}), ...update };
  renderImages();
  if (update.window !== undefined) loadImage(false);
  if (state.sendTimer) return;
  const wait = Math.max(0, state.lastSent + SEND_MS - Date.now());
  state.sendTimer = setTimeout(flush, wait);
}

function flush() {
  state.sendTimer = null;
  const view = state.view;
  if (!view || !state.pending) return;
  const msg = { type: 'image_view', image_id: view.image.id, ...state.pending };
  state.pending = null;
  state.lastSent = Date.now();
  app.session.sendMessage(msg);
}

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const round = (v) => Math.round(v * 10000) / 10000;

function clampCenter(center, zoom) {
  const half = 0.5 / zoom;
  return [round(clamp(center[0], half, 1 - half)), round(clamp(center[1], half, 1 - half))];
}

function zoomTo(zoom) {
  const view = state.view;
  if (!view) return;
  const z = round(clamp(zoom, 1, MAX_ZOOM));
  change({ zoom: z, center: clampCenter(view.center, z) });
}

/** The image point (0..1, 0..1) under a client position, or null outside the image. */
function imagePoint(clientX, clientY) {
  const g = state.geometry;
  const view = state.view;
  if (!g || !view) return null;
  const box = el.viewport.getBoundingClientRect();
  const x = (clientX - box.left - g.left) / (view.image.width * g.scale);
  const y = (clientY - box.top - g.top) / (view.image.height * g.scale);
  return x >= 0 && x <= 1 && y >= 0 && y <= 1 ? [round(x), round(y)] : null;
}

function onPointerDown(ev) {
  if (!isPresenter() || !state.view) return;
  el.viewport.setPointerCapture(ev.pointerId);
  state.pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
  if (state.pointers.size === 1) {
    state.drag = { x: ev.clientX, y: ev.clientY, center: [...state.view.center], moved: false };
  } else if (state.pointers.size === 2) {
    const [a, b] = [...state.pointers.values()];
    state.drag = { pinch: Math.hypot(a.x - b.x, a.y - b.y), zoom: state.view.zoom };
  }
}

function onPointerMove(ev) {
  if (!isPresenter() || !state.view) return;
  if (state.pointers.has(ev.pointerId)) state.pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
  const drag = state.drag;
  if (drag && drag.pinch && state.pointers.size === 2) {
    const [a, b] = [...state.pointers.values()];
    zoomTo(drag.zoom * (Math.hypot(a.x - b.x, a.y - b.y) / drag.pinch));
    return;
  }
  if (drag && state.pointers.size === 1) {
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 6) return;
    drag.moved = true;
    if (state.view.zoom > 1 && state.geometry) {
      const g = state.geometry;
      const c = [drag.center[0] - dx / (state.view.image.width * g.scale),
        drag.center[1] - dy / (state.view.image.height * g.scale)];
      change({ center: clampCenter(c, state.view.zoom) });
      return;
    }
  }
  if (ev.pointerType === 'mouse' || drag) {
    const point = imagePoint(ev.clientX, ev.clientY);
    if (point) change({ pointer: point });
  }
}

function onPointerUp(ev) {
  const drag = state.drag;
  state.pointers.delete(ev.pointerId);
  if (drag && !drag.pinch && !drag.moved) {
    const point = imagePoint(ev.clientX, ev.clientY); // a tap points
    if (point) change({ pointer: point });
  }
  state.drag = null;
}

function onWheel(ev) {
  if (!isPresenter() || !state.view) return;
  ev.preventDefault();
  zoomTo(state.view.zoom * Math.pow(1.2, -ev.deltaY / 100));
}

async function upload(file) {
  if (!file) return;
  const status = el.status;
  status.textContent = t('images_uploading');
  const type = file.type || (/\.(dcm|dicom)$/i.test(file.name) ? 'application/dicom' : '');
  const label = file.name.replace(/\.[^.]+$/, '').slice(0, 200);
  try {
    // the label (it may name the patient) goes in a header, never in the URL
    const resp = await fetch(`/rooms/${encodeURIComponent(roomId())}/images`, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${token()}`,
        'Content-Type': type || 'application/octet-stream',
        'X-Label': encodeURIComponent(label),
      },
      body: file,
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((body.error && body.error.message) || `HTTP ${resp.status}`);
    state.images.set(body.id, body);
    status.textContent = '';
    showImage(body.id);
  } catch (err) {
    status.textContent = t('images_upload_failed', { message: err.message });
  } finally {
    el.file.value = '';
  }
}

function onWindowInput() {
  const c = Number(el.wc.value);
  const w = Math.max(1, Number(el.ww.value));
  change({ window: { center: c, width: w } });
}

function onPreset() {
  const preset = PRESETS.find(([key]) => key === el.preset.value);
  if (!preset || !state.view) return;
  change({ window: preset[1] || state.view.image.window });
}

// ---- start ------------------------------------------------------------------------------------------

/** Build the elements and wire the session's events; call once the session exists. */
export function wireImages(session) {
  if (!el) build();
  session.on('joined', () => {
    state.seq = -1;
    applyView(session.room ? session.room.image_view || null : null,
      session.room && session.room.image_view ? session.room.image_view.seq : undefined);
    // the lobby may not list the images (403): admitted participants fetch them
    if (session.me && session.me.state === 'active') refreshList();
  });
  session.on('admission', (admission) => {
    if (admission === 'active' && state.listed !== session.gen) refreshList();
    renderImages();
  });
  session.on('image-view', (m) => applyView(m.view, m.seq));
  session.on('image-added', (image) => {
    if (image) state.images.set(image.id, image);
    renderImages();
  });
  session.on('role-changed', () => renderImages());
  session.on('state', () => renderImages());
  session.on('end', () => renderImages());
}

/** Once per page: the controls' listeners. */
export function installImages() {
  if (!el) build();
  el.button.addEventListener('click', () => {
    if (state.hidden && state.view) state.hidden = false;
    else state.sheetOpen = !state.sheetOpen;
    renderImages();
  });
  $('btn-images-close').addEventListener('click', () => {
    state.sheetOpen = false;
    renderImages();
  });
  el.file.addEventListener('change', () => upload(el.file.files && el.file.files[0]));
  $('btn-image-stop').addEventListener('click', () => showImage(null));
  $('btn-image-hide').addEventListener('click', () => {
    state.hidden = true;
    renderImages();
  });
  $('btn-zoom-in').addEventListener('click', () => zoomTo(state.view.zoom * 1.5));
  $('btn-zoom-out').addEventListener('click', () => zoomTo(state.view.zoom / 1.5));
  $('btn-zoom-fit').addEventListener('click', () => change({ zoom: 1, center: [0.5, 0.5] }));
  el.viewport.addEventListener('pointerdown', onPointerDown);
  el.viewport.addEventListener('pointermove', onPointerMove);
  el.viewport.addEventListener('pointerup', onPointerUp);
  el.viewport.addEventListener('pointercancel', onPointerUp);
  el.viewport.addEventListener('wheel', onWheel, { passive: false });
  el.wc.addEventListener('input', onWindowInput);
  el.ww.addEventListener('input', onWindowInput);
  el.preset.addEventListener('change', onPreset);
  window.addEventListener('resize', place);
}
