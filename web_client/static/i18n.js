// Huizhen web client: every user-visible string, in Simplified Chinese and English.
//
// The language comes from a stored choice (the toggle button), else from navigator.language
// (zh, zh-CN, zh-TW, … → Chinese; anything else → English).
// Placeholders look like {name} and are filled by t(key, {name: …}).

const STRINGS = {
  en: {
    app_name: 'Huizhen',
    page_title: 'Video consultation · Huizhen',
    lang_toggle: '中文',
    lang_toggle_label: '切换到中文 (Switch to Chinese)',

    status_idle: 'Starting…',
    status_media: 'Waiting for camera and microphone…',
    status_connecting: 'Connecting…',
    status_joining: 'Joining…',
    status_joined: 'Connected',
    status_reconnecting: 'Reconnecting…',
    status_left: 'Left',
    status_ended: 'Ended',
    status_failed: 'Not connected',

    mic_mute: 'Mute',
    mic_unmute: 'Unmute',
    mic_mute_label: 'Mute microphone',
    mic_unmute_label: 'Unmute microphone',
    mic_none: 'No mic',
    mic_none_label: 'Microphone not available',
    cam_off: 'Stop video',
    cam_on: 'Start video',
    cam_off_label: 'Turn camera off',
    cam_on_label: 'Turn camera on',
    cam_none: 'No camera',
    cam_none_label: 'Camera not available',
    flip: 'Flip',
    flip_label: 'Switch between front and back camera',
    leave: 'Leave',
    leave_label: 'Leave the consultation',
    rejoin: 'Rejoin',
    rejoin_label: 'Join the consultation again',
    dismiss_label: 'Close message',
    sound_on: 'Tap to turn on sound',
    controls_label: 'Call controls',
    tiles_label: 'Participants',

    you: 'You',
    waiting_others: 'Waiting for others to join…',
    waiting_lobby: 'Please wait. The clinic will let you in shortly.',
    mic_muted_badge: 'Microphone off',
    cam_off_badge: 'Camera off',
    tile_label: '{name}, {role}',
    announce_joined: '{name} joined',
    announce_left: '{name} left',

    role_host: 'Host',
    role_doctor: 'Doctor',
    role_specialist: 'Specialist',
    role_nurse: 'Nurse',
    role_interpreter: 'Interpreter',
    role_patient: 'Patient',
    role_guardian: 'Guardian',
    role_presenter: 'Presenter',
    role_moderator: 'Moderator',
    role_viewer: 'Viewer',

    link_incomplete: 'This link is incomplete. Ask for a new link.',
    media_denied:
      'Camera and microphone are blocked. You can still see and hear the others. ' +
      'To be seen and heard, allow access in your browser settings and reload the page.',
    media_missing: 'No camera or microphone was found. You can still see and hear the others.',
    media_busy:
      'Your camera or microphone is being used by another app. ' +
      'You can still see and hear the others.',
    media_insecure:
      'This page cannot use the camera or microphone (the connection is not secure). ' +
      'You can still see and hear the others.',
    media_partial_video: 'Your camera could not be started. Others can hear you but not see you.',
    media_partial_audio: 'Your microphone could not be started. Others can see you but not hear you.',
    camera_stopped: 'Your camera stopped working.',
    mic_stopped: 'Your microphone stopped working.',
    flip_failed: 'Could not switch camera.',
    publish_failed: 'Your camera and microphone could not be sent. Others cannot see or hear you.',
    ended: 'The consultation has ended.',
    left: 'You left the consultation.',
    replaced: 'You joined from another tab or device, so this window was disconnected.',
    disconnected: 'You were disconnected from the consultation.',
    connection_lost: 'Connection lost. Trying to reconnect…',
    connection_failed: 'Could not connect. Check your network, then tap Rejoin.',
    media_connection_failed: 'The video connection failed. Reconnecting…',
    browser_unsupported:
      'This browser cannot make video calls. Please use a recent Chrome, Edge, Firefox or Safari.',
    error_generic: 'Something went wrong.',

    // server error codes (docs/protocol.md) that deserve plain words
    error_token_missing: 'This link is incomplete. Ask for a new link.',
    error_token_malformed: 'This link is not valid. Ask the clinic for a new link.',
    error_token_algorithm: 'This link is not valid. Ask the clinic for a new link.',
    error_token_unknown_key: 'This link is not valid. Ask the clinic for a new link.',
    error_token_signature: 'This link is not valid. Ask the clinic for a new link.',
    error_token_audience: 'This link is not valid. Ask the clinic for a new link.',
    error_token_claims: 'This link is not valid. Ask the clinic for a new link.',
    error_token_expired: 'This link has expired. Ask the clinic for a new link.',
    error_token_not_yet_valid:
      'This link is not active yet. Please open it again at your appointment time.',
    error_token_wrong_room: 'This link is for a different consultation. Ask the clinic for a new link.',
    error_token_role: 'This link does not allow you to join this consultation. Ask the clinic for a new link.',
    error_room_not_found: 'This consultation could not be found. Check the link or ask the clinic.',
    error_room_ended: 'The consultation has ended.',
    error_room_full: 'This consultation is full. Please try again later or contact the clinic.',
    error_unsupported_version: 'This page is out of date. Please reload it.',
  },

  zh: {
    app_name: '会诊',
    page_title: '视频会诊 · 会诊 Huizhen',
    lang_toggle: 'English',
    lang_toggle_label: 'Switch to English (切换到英文)',

    status_idle: '正在启动…',
    status_media: '正在等待摄像头和麦克风…',
    status_connecting: '正在连接…',
    status_joining: '正在加入…',
    status_joined: '已连接',
    status_reconnecting: '正在重新连接…',
    status_left: '已离开',
    status_ended: '已结束',
    status_failed: '未连接',

    mic_mute: '静音',
    mic_unmute: '取消静音',
    mic_mute_label: '关闭麦克风',
    mic_unmute_label: '打开麦克风',
    mic_none: '无麦克风',
    mic_none_label: '麦克风不可用',
    cam_off: '关闭视频',
    cam_on: '开启视频',
    cam_off_label: '关闭摄像头',
    cam_on_label: '打开摄像头',
    cam_none: '无摄像头',
    cam_none_label: '摄像头不可用',
    flip: '翻转',
    flip_label: '切换前置或后置摄像头',
    leave: '离开',
    leave_label: '离开会诊',
    rejoin: '重新加入',
    rejoin_label: '重新加入会诊',
    dismiss_label: '关闭提示',
    sound_on: '点按以开启声音',
    controls_label: '通话控制',
    tiles_label: '参与者',

    you: '我',
    waiting_others: '正在等待其他人加入…',
    waiting_lobby: '请稍候，诊室马上会让您进入。',
    mic_muted_badge: '麦克风已关闭',
    cam_off_badge: '摄像头已关闭',
    tile_label: '{name}，{role}',
    announce_joined: '{name} 已加入',
    announce_left: '{name} 已离开',

    role_host: '主持人',
    role_doctor: '医生',
    role_specialist: '专家',
    role_nurse: '护士',
    role_interpreter: '翻译',
    role_patient: '患者',
    role_guardian: '监护人',
    role_presenter: '报告人',
    role_moderator: '主持人',
    role_viewer: '旁听',

    link_incomplete: '此链接不完整，请索取新的链接。',
    media_denied:
      '摄像头和麦克风的使用权限被拒绝。您仍可以看到和听到其他人。' +
      '如需让对方看到和听到您，请在浏览器设置中允许访问，然后刷新页面。',
    media_missing: '未找到摄像头或麦克风。您仍可以看到和听到其他人。',
    media_busy: '摄像头或麦克风正被其他应用占用。您仍可以看到和听到其他人。',
    media_insecure: '此页面无法使用摄像头或麦克风（连接不安全）。您仍可以看到和听到其他人。',
    media_partial_video: '无法启动摄像头。对方可以听到您，但看不到您。',
    media_partial_audio: '无法启动麦克风。对方可以看到您，但听不到您。',
    camera_stopped: '您的摄像头已停止工作。',
    mic_stopped: '您的麦克风已停止工作。',
    flip_failed: '无法切换摄像头。',
    publish_failed: '无法发送您的视频和声音，对方看不到也听不到您。',
    ended: '会诊已结束。',
    left: '您已离开会诊。',
    replaced: '您已在其他标签页或设备上加入，此窗口已断开。',
    disconnected: '您已与会诊断开连接。',
    connection_lost: '网络连接中断，正在尝试重新连接…',
    connection_failed: '无法连接。请检查网络，然后点按"重新加入"。',
    media_connection_failed: '视频连接失败，正在重新连接…',
    browser_unsupported: '此浏览器无法进行视频通话。请使用较新版本的 Chrome、Edge、Firefox 或 Safari。',
    error_generic: '出现了问题。',

    error_token_missing: '此链接不完整，请索取新的链接。',
    error_token_malformed: '此链接无效，请联系诊所获取新链接。',
    error_token_algorithm: '此链接无效，请联系诊所获取新链接。',
    error_token_unknown_key: '此链接无效，请联系诊所获取新链接。',
    error_token_signature: '此链接无效，请联系诊所获取新链接。',
    error_token_audience: '此链接无效，请联系诊所获取新链接。',
    error_token_claims: '此链接无效，请联系诊所获取新链接。',
    error_token_expired: '此链接已过期，请联系诊所获取新链接。',
    error_token_not_yet_valid: '此链接尚未生效，请在预约时间再次打开。',
    error_token_wrong_room: '此链接属于另一场会诊，请联系诊所获取新链接。',
    error_token_role: '此链接不允许您加入本次会诊，请联系诊所获取新链接。',
    error_room_not_found: '找不到此会诊。请检查链接或联系诊所。',
    error_room_ended: '会诊已结束。',
    error_room_full: '本次会诊人数已满。请稍后再试或联系诊所。',
    error_unsupported_version: '此页面版本过旧，请刷新页面。',
  },
};

const STORAGE_KEY = 'huizhen.lang';
const listeners = new Set();
let current = detectLanguage();

/** 'zh' or 'en': a stored choice first, then the browser's language. */
export function detectLanguage() {
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (stored && STRINGS[stored]) return stored;
  } catch {
    // storage disabled (private mode, sandboxed frame): fall through
  }
  const lang = (navigator.language || '').toLowerCase();
  return lang.startsWith('zh') ? 'zh' : 'en';
}

export function getLang() {
  return current;
}

/** Switch language, remember the choice and tell every listener (they re-render). */
export function setLang(lang) {
  if (!STRINGS[lang] || lang === current) return;
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // not remembered; harmless
  }
  applyTranslations();
  for (const fn of listeners) fn(lang);
}

export function toggleLang() {
  setLang(current === 'zh' ? 'en' : 'zh');
}

/** Call fn(lang) after every language change. Returns an unsubscribe function. */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function hasKey(key) {
  return key in STRINGS[current] || key in STRINGS.en;
}

/** The string for key in the current language (English if missing there, else the key). */
export function t(key, vars) {
  let text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

/** Localised role label; unknown roles are shown as sent by the server. */
export function roleLabel(role) {
  const key = `role_${role}`;
  return hasKey(key) ? t(key) : String(role || '');
}

/**
 * Plain-words text for a server error: our own wording for the codes we know
 * (token problems, room problems), else the server's `message`.
 */
export function errorText(code, message) {
  const key = `error_${code}`;
  if (code && hasKey(key)) return t(key);
  return message || t('error_generic');
}

/**
 * Fill static markup: [data-i18n] sets textContent, [data-i18n-label] sets aria-label,
 * [data-i18n-title] sets title. Also sets <html lang> and the document title.
 */
export function applyTranslations(root = document) {
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  }
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  if (root === document && document.body?.dataset.i18nPageTitle) {
    document.title = t(document.body.dataset.i18nPageTitle);
  }
}
