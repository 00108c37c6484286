// Huizhen web client: inline SVG icons (no external assets). Decorative: the buttons and
// badges that hold them carry their own text / aria-label.

const svg = (body) =>
  '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
  'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">' +
  body +
  '</svg>';

const MIC = '<rect x="9" y="2.5" width="6" height="12" rx="3"/>' +
  '<path d="M5.5 11a6.5 6.5 0 0 0 13 0"/><path d="M12 17.5V21"/><path d="M8.5 21h7"/>';
const CAM = '<rect x="2.5" y="6" width="13" height="12" rx="2.5"/>' +
  '<path d="M15.5 10.5l6-3.5v10l-6-3.5z"/>';
const SLASH = '<path d="M3.5 3.5l17 17"/>';

export const ICONS = {
  mic: svg(MIC),
  micOff: svg(MIC + SLASH),
  cam: svg(CAM),
  camOff: svg(CAM + SLASH),
  flip: svg(
    '<path d="M3 12a9 9 0 0 1 15.4-6.4L21 8"/><path d="M21 3v5h-5"/>' +
      '<path d="M21 12a9 9 0 0 1-15.4 6.4L3 16"/><path d="M3 21v-5h5"/>',
  ),
  // a telephone handset, hung up
  leave: svg(
    '<path fill="currentColor" stroke="none" d="M12 8.5c-3.3 0-6.4.9-8.9 2.4-.6.4-.9 1.1-.8 ' +
      '1.8l.3 2.1c.1.7.8 1.2 1.5 1.1l3.3-.5c.6-.1 1.1-.6 1.2-1.2l.3-1.8c2.1-.6 4.1-.6 6.2 ' +
      '0l.3 1.8c.1.6.6 1.1 1.2 1.2l3.3.5c.7.1 1.4-.4 1.5-1.1l.3-2.1c.1-.7-.2-1.4-.8-1.8C18.4 ' +
      '9.4 15.3 8.5 12 8.5z"/>',
  ),
  more: svg(
    '<circle cx="12" cy="5" r="1.6" fill="currentColor"/><circle cx="12" cy="12" r="1.6" ' +
      'fill="currentColor"/><circle cx="12" cy="19" r="1.6" fill="currentColor"/>',
  ),
  moreH: svg(
    '<circle cx="5" cy="12" r="1.6" fill="currentColor"/><circle cx="12" cy="12" r="1.6" ' +
      'fill="currentColor"/><circle cx="19" cy="12" r="1.6" fill="currentColor"/>',
  ),
  host: svg('<path d="M4 17l2-9 4 4 2-6 2 6 4-4 2 9z"/><path d="M4 20h16"/>'),
  pause: svg('<rect x="6" y="5" width="4" height="14" rx="1"/><rect x="14" y="5" width="4" height="14" rx="1"/>'),
  remove: svg(
    '<circle cx="9" cy="8" r="4"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0"/><path d="M16 11h6"/>',
  ),
  // a clipboard with lines: case notes and documents
  notes: svg(
    '<rect x="5" y="4" width="14" height="17" rx="2"/><path d="M9 4V2.8h6V4"/>' +
      '<path d="M8.5 10h7"/><path d="M8.5 14h7"/><path d="M8.5 18h4"/>',
  ),
  chat: svg(
    '<path d="M4 5.5h16a1.5 1.5 0 0 1 1.5 1.5v9a1.5 1.5 0 0 1-1.5 1.5H10l-4.5 3.5V17.5H4A1.5 ' +
      '1.5 0 0 1 2.5 16V7A1.5 1.5 0 0 1 4 5.5z"/>',
  ),
  screen: svg(
    '<rect x="2.5" y="4" width="19" height="13" rx="2"/><path d="M8 21h8"/><path d="M12 17v4"/>' +
      '<path d="M12 13.5V8"/><path d="M9.5 10.5L12 8l2.5 2.5"/>',
  ),
  invite: svg(
    '<circle cx="9" cy="8" r="4"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0"/><path d="M19 8v6"/>' +
      '<path d="M16 11h6"/>',
  ),
  end: svg('<circle cx="12" cy="12" r="9"/><rect x="9" y="9" width="6" height="6" rx="1" fill="currentColor"/>'),
  // recording: start and resume (a dot), stop (a square), not recorded (crossed out)
  record: svg('<circle cx="12" cy="12" r="7" fill="currentColor" stroke="none"/>'),
  recordStop: svg('<rect x="6" y="6" width="12" height="12" rx="2" fill="currentColor" stroke="none"/>'),
  recordResume: svg('<circle cx="12" cy="12" r="6" fill="currentColor" stroke="none"/>'),
  recordOff: svg('<circle cx="12" cy="12" r="8"/><path d="M6.3 6.3l11.4 11.4"/>'),
  send: svg('<path d="M4 12l16-8-6 16-2.5-6.5z"/><path d="M11.5 13.5L20 4"/>'),
  close: svg('<path d="M6 6l12 12"/><path d="M18 6L6 18"/>'),
  check: svg('<path d="M4.5 12.5l5 5L19.5 7"/>'),
  warn: svg('<path d="M12 3.5l9.5 17h-19z"/><path d="M12 10v4.5"/><path d="M12 17.6v.1"/>'),
  copy: svg('<rect x="8.5" y="8.5" width="12" height="12" rx="2"/><path d="M15.5 8.5V5a1.5 1.5 0 0 0-1.5-1.5H5A1.5 1.5 0 0 0 3.5 5v9A1.5 1.5 0 0 0 5 15.5h3.5"/>'),
  speaker: svg(
    '<path d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z"/><path d="M15.5 9a4 4 0 0 1 0 6"/>' +
      '<path d="M18 6.5a7.5 7.5 0 0 1 0 11"/>',
  ),
  wifi: svg(
    '<path d="M2 8.5a15 15 0 0 1 20 0"/><path d="M5.5 12a10 10 0 0 1 13 0"/>' +
      '<path d="M9 15.5a5 5 0 0 1 6 0"/><path d="M12 19.2v.1"/>',
  ),
  sound: svg(
    '<path d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z"/><path d="M15.5 9a4 4 0 0 1 0 6"/>' +
      '<path d="M18 6.5a7.5 7.5 0 0 1 0 11"/>',
  ),
};
