// Huizhen web client: the language of every user-visible string (strings-en.js, strings-zh.js).
//
// The language comes from a stored choice (the toggle button), else from navigator.language
// (zh, zh-CN, zh-TW, … → Chinese; anything else → English).
// Placeholders look like {name} and are filled by t(key, {name: …}).

import { EN } from './strings-en.js';
import { ZH } from './strings-zh.js';

const STRINGS = { en: EN, zh: ZH };

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
 * [data-i18n-title] sets title, [data-i18n-placeholder] sets placeholder. Also sets <html lang> and the document title.
 */
export function applyTranslations(root = document) {
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  }
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  if (root === document && document.body?.dataset.i18nPageTitle) {
    document.title = t(document.body.dataset.i18nPageTitle);
  }
}
