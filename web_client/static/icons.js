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
  sound: svg(
    '<path d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z"/><path d="M15.5 9a4 4 0 0 1 0 6"/>' +
      '<path d="M18 6.5a7.5 7.5 0 0 1 0 11"/>',
  ),
};
