// Huizhen web client: the Session's clinical work (docs/protocol.md, "Agenda" and "Clinical
// documents"): a ward round's patient list or an MDT's cases, and the documents the room writes
// (consult opinion, notes, minutes, conclusion) — versioned, signed by their author.
// Methods of Session (session.js), mixed into its prototype. Events:
//   'agenda'     (agenda)     {items: [{id, patient_ref, label, presenter, question}], current}
//                             or null (no agenda)
//   'documents'  (documents)  every version we know, oldest first (see documentsLatest())

import { SignalingError } from './signaling.js';

/** The agenda as the client keeps it (unknown shapes made safe), or null. */
export function agendaState(a) {
  if (!a || typeof a !== 'object' || !Array.isArray(a.items) || a.items.length === 0) return null;
  const items = a.items
    .filter((i) => i && typeof i.id === 'string' && typeof i.patient_ref === 'string')
    .map((i) => ({
      id: i.id,
      patient_ref: i.patient_ref,
      label: typeof i.label === 'string' && i.label ? i.label : i.patient_ref,
      presenter: typeof i.presenter === 'string' ? i.presenter : null,
      question: typeof i.question === 'string' ? i.question : null,
    }));
  const current = items.some((i) => i.id === a.current) ? a.current : null;
  return items.length ? { items, current } : null;
}

/** The latest version of each document series, oldest series first. */
export function documentsLatest(documents) {
  const latest = new Map();
  for (const d of documents) {
    const had = latest.get(d.series_id);
    if (!had || d.version > had.version) latest.set(d.series_id, d);
  }
  return [...latest.values()];
}

export const clinicalMethods = {
  /** The kinds of document this room writes (from the policy table, via `joined`). */
  documentKinds() {
    const kinds = this.room && Array.isArray(this.room.documents) ? this.room.documents : [];
    const grants = (this.me && this.me.grants) || {};
    return grants.sign ? kinds.filter((k) => typeof k === 'string') : [];
  },

  setAgenda(next) {
    this.agenda = agendaState(next);
    this.emit('agenda', this.agenda);
  },

  onAgenda(m) {
    this.setAgenda(m.agenda);
  },

  /** Moderators: go to an agenda item (null: the next one). */
  agendaGo(itemId = null) {
    const msg = { type: 'agenda_go' };
    if (itemId) msg.item_id = itemId;
    return this.sendMessage(msg);
  },

  onDocument(m) {
    this.upsertDocument(m.document);
  },

  upsertDocument(d) {
    if (!d || typeof d.id !== 'string' || typeof d.series_id !== 'string') return;
    const list = (this.documents || []).filter((x) => x.id !== d.id);
    list.push(d);
    // a newer version makes the older ones of its series not latest
    for (const x of list) {
      if (x.series_id === d.series_id && x.version < d.version) x.latest = false;
    }
    list.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0));
    this.documents = list;
    this.emit('documents', this.documents);
  },

  async requestClinical(msg) {
    if (!this.sig || this.state !== 'joined') throw new SignalingError('disconnected', 'offline');
    return this.sig.request(msg);
  },

  /** The room's documents (care team), fetched again after a (re)join. */
  async loadDocuments() {
    const reply = await this.requestClinical({ type: 'document_list' });
    this.documents = [];
    for (const d of reply.documents || []) this.upsertDocument(d);
    this.emit('documents', this.documents);
    return this.documents;
  },

  /**
   * Save a document: new (no seriesId) or a new version of the series, based on the version we
   * saw (the server refuses with document_conflict when someone saved meanwhile).
   */
  async saveDocument({ kind, text, title, seriesId, baseVersion }) {
    const msg = { type: 'document_save', kind, text };
    if (title) msg.title = title;
    if (seriesId) {
      msg.series_id = seriesId;
      msg.base_version = baseVersion;
    }
    const reply = await this.requestClinical(msg);
    this.upsertDocument(reply.document);
    return reply.document;
  },

  /** Sign one of our versions with our certificate (the server holds the key). */
  async signDocument(documentId) {
    const reply = await this.requestClinical({ type: 'document_sign', document_id: documentId });
    this.upsertDocument(reply.document);
    return reply.document;
  },
};
