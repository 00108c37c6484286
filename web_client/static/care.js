// Care mode (large type, big buttons), remembered on this device for every page of the client.

const CARE_KEY = 'huizhen.care';

export function loadCare() {
  try {
    return localStorage.getItem(CARE_KEY) === '1';
  } catch {
    return false; // storage disabled: off
  }
}

/** Turn care mode on or off: the body's class, the toggle's state, and the stored choice. */
export function applyCare(on, button) {
  document.body.classList.toggle('care', on);
  button?.setAttribute('aria-pressed', String(on));
  try {
    localStorage.setItem(CARE_KEY, on ? '1' : '0');
  } catch {
    // not remembered
  }
}
