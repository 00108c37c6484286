// Huizhen web client: the local camera and microphone.

/** Capture size asked for (ideal values: the browser may deliver something close). */
import { tokenClaims } from './token.js';

export const VIDEO_CONSTRAINTS = { width: 640, height: 480 };

function isDenied(err) {
  // NotAllowedError: the user (or a policy) said no. SecurityError: permissions policy / insecure.
  return err && (err.name === 'NotAllowedError' || err.name === 'SecurityError');
}

function isBusy(err) {
  return err && (err.name === 'NotReadableError' || err.name === 'AbortError');
}

/**
 * Ask for the microphone and/or camera.
 *
 * @param {{audio: boolean, video: boolean}} kinds  what to ask for
 * @returns {Promise<{stream: MediaStream|null, problem: string|null}>}
 *   `problem` is an i18n key describing what went wrong (null when everything asked for was
 *   obtained). Never throws: without media the participant still joins to watch and listen.
 */
export async function getLocalMedia(kinds) {
  if (!kinds.audio && !kinds.video) return { stream: null, problem: null };
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    // mediaDevices only exists in secure contexts (https, or http://localhost)
    return { stream: null, problem: 'media_insecure' };
  }
  const gum = (constraints) => navigator.mediaDevices.getUserMedia(constraints);
  const video = { ...VIDEO_CONSTRAINTS };
  try {
    const stream = await gum({ audio: !!kinds.audio, video: kinds.video ? video : false });
    return { stream, problem: null };
  } catch (err) {
    console.warn('[huizhen] getUserMedia failed:', err && err.name, err && err.message);
    if (isDenied(err)) return { stream: null, problem: 'media_denied' };
    // One device is missing or busy: get what we can rather than nothing. (Not after a denial,
    // which would only show the user more permission prompts.)
    if (kinds.audio && kinds.video) {
      try {
        return { stream: await gum({ audio: true }), problem: 'media_partial_video' };
      } catch (e) {
        if (isDenied(e)) return { stream: null, problem: 'media_denied' };
      }
      try {
        return { stream: await gum({ video }), problem: 'media_partial_audio' };
      } catch (e) {
        if (isDenied(e)) return { stream: null, problem: 'media_denied' };
      }
    }
    return { stream: null, problem: isBusy(err) ? 'media_busy' : 'media_missing' };
  }
}

/** Number of cameras (after permission has been granted, so the list is complete). */
export async function countCameras() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((d) => d.kind === 'videoinput').length;
  } catch {
    return 0;
  }
}

/**
 * Open the "other" camera: the opposite facing mode on phones, else the next camera in the
 * device list. The caller must stop the current track first (many phones cannot open two
 * cameras at once) and must be ready to reopen it if this throws.
 *
 * @param {MediaTrackSettings} settings  getSettings() of the video track in use, taken before
 *                                       it was stopped
 * @returns {Promise<MediaStreamTrack>}
 */
export async function openOtherCamera(settings = {}) {
  let constraints;
  if (settings.facingMode) {
    const next = settings.facingMode === 'environment' ? 'user' : 'environment';
    constraints = { ...VIDEO_CONSTRAINTS, facingMode: { exact: next } };
  } else {
    const cams = (await navigator.mediaDevices.enumerateDevices()).filter(
      (d) => d.kind === 'videoinput',
    );
    const index = cams.findIndex((d) => d.deviceId === settings.deviceId);
    const next = cams[(index + 1) % cams.length];
    constraints = { ...VIDEO_CONSTRAINTS, deviceId: next ? { exact: next.deviceId } : undefined };
  }
  const stream = await navigator.mediaDevices.getUserMedia({ video: constraints });
  return stream.getVideoTracks()[0];
}

/** Reopen the camera described by `settings` (used when switching failed). */
export async function reopenCamera(settings) {
  const constraints = { ...VIDEO_CONSTRAINTS };
  if (settings && settings.deviceId) constraints.deviceId = { ideal: settings.deviceId };
  else if (settings && settings.facingMode) constraints.facingMode = { ideal: settings.facingMode };
  const stream = await navigator.mediaDevices.getUserMedia({ video: constraints });
  return stream.getVideoTracks()[0];
}

/**
 * Which kinds to ask for before joining, from the token's `grants` claim. This is only a hint
 * (the token is not verified here; the server's `joined.me.grants` decides), so that a viewer is
 * not asked for a camera it may not use. Unreadable token → ask for both.
 */
export function kindsFromToken(token) {
  const grants = tokenClaims(token)?.grants;
  if (!grants || typeof grants !== 'object') return { audio: true, video: true };
  return { audio: grants.publish_audio === true, video: grants.publish_video === true };
}
