// Huizhen web client: the Session's roster — who is in the room, in the lobby, on hold, and
// which tracks each one has (docs/protocol.md, "Lobby, hold and moderation"). Methods of
// Session (session.js), mixed into its prototype.

function makeParticipant(p) {
  const record = {
    id: p.id,
    identity: p.identity || '',
    name: p.name || p.identity || '',
    role: p.role || '',
    grants: { ...(p.grants || {}) },
    state: p.state || 'active',
    joined_at: p.joined_at || null,
    // track_id -> {id, kind, source, muted}
    tracks: {},
    // track ids whose media is currently attached (arriving on the subscribe connection)
    receiving: [],
    // the server paused this participant's video for us (weak network)
    videoPaused: false,
  };
  for (const tr of p.tracks || []) record.tracks[tr.id] = trackRecord(tr);
  return record;
}

function trackRecord(tr) {
  return {
    id: tr.id,
    kind: tr.kind,
    source: tr.source || (tr.kind === 'audio' ? 'microphone' : 'camera'),
    muted: !!tr.muted,
  };
}

export const rosterMethods = {
  // ---- the room's participants and the lobby ------------------------------------------------

  /** Replace everyone we know with `list` (joined / admitted). */
  setParticipants(list) {
    if (Object.keys(this.participants).length) {
      for (const mid of [...this.attached.keys()]) {
        const a = this.attached.get(mid);
        if (!list.some((p) => p.id === a.participantId)) this.detachMid(mid);
      }
    }
    const previous = this.participants;
    this.participants = {};
    this.lobby = {};
    for (const p of list) {
      if (!p || !p.id || (this.me && p.id === this.me.id)) continue;
      if (p.state === 'lobby') {
        this.lobby[p.id] = makeParticipant(p);
        continue;
      }
      const record = makeParticipant(p);
      const old = previous[p.id];
      if (old) {
        record.receiving = old.receiving;
        record.tracks = { ...old.tracks, ...record.tracks };
      }
      this.participants[p.id] = record;
      this.noteAdmitted(record);
      this.emit(old ? 'participant-updated' : 'participant-added', record);
    }
    for (const [id, old] of Object.entries(previous)) {
      if (!this.participants[id]) this.emit('participant-removed', old, 'left');
    }
    this.emit('lobby');
  },

  onParticipantJoined({ participant }) {
    if (!participant || !participant.id || (this.me && participant.id === this.me.id)) return;
    this.departed.delete(participant.id);
    if (participant.state === 'lobby') {
      // only moderators hear of people in the lobby
      this.lobby[participant.id] = makeParticipant(participant);
      this.emit('lobby');
      this.maybeAutoAdmit(this.lobby[participant.id]);
      return;
    }
    if (this.lobby[participant.id]) {
      delete this.lobby[participant.id];
      this.emit('lobby');
    }
    const existing = this.participants[participant.id];
    const record = makeParticipant(participant);
    this.noteAdmitted(record);
    if (existing) {
      // we created a placeholder when its media arrived first; keep what we know
      record.receiving = existing.receiving;
      record.tracks = { ...existing.tracks, ...record.tracks };
      this.participants[participant.id] = record;
      this.emit('participant-updated', record);
    } else {
      this.participants[participant.id] = record;
      this.emit('participant-added', record);
    }
  },

  onParticipantLeft({ participant_id: id, reason }) {
    if (this.me && id === this.me.id) {
      // our own session was closed by the server
      if (reason === 'replaced') this.finish('failed', { key: 'replaced', code: 'replaced' });
      else if (reason === 'room_ended') this.finish('ended', { key: 'ended' });
      else this.forceReconnect('connection_lost');
      return;
    }
    if (this.lobby[id]) {
      delete this.lobby[id];
      this.emit('lobby');
    }
    const record = this.participants[id];
    if (!record) {
      this.departed.add(id);
      return;
    }
    for (const [mid, a] of [...this.attached]) if (a.participantId === id) this.detachMid(mid);
    delete this.participants[id];
    this.departed.add(id);
    this.emit('participant-removed', record, reason);
  },

  /** A participant's state changed: lobby → active, active ↔ held (docs/protocol.md). */
  onParticipantUpdated({ participant: p }) {
    if (!p || !p.id) return;
    if (this.me && p.id === this.me.id) {
      if (p.state === 'held' || p.state === 'active') this.setAdmission(p.state);
      return;
    }
    if (p.state === 'lobby') {
      this.lobby[p.id] = makeParticipant(p);
      this.emit('lobby');
      return;
    }
    if (this.lobby[p.id]) {
      delete this.lobby[p.id];
      this.emit('lobby');
    }
    const existing = this.participants[p.id];
    if (!existing) {
      this.onParticipantJoined({ participant: p });
      return;
    }
    existing.state = p.state || existing.state;
    if (p.name) existing.name = p.name;
    if (p.role) existing.role = p.role;
    if (p.grants) existing.grants = { ...p.grants };
    for (const tr of p.tracks || []) {
      existing.tracks[tr.id] = { ...(existing.tracks[tr.id] || {}), ...trackRecord(tr) };
    }
    this.noteAdmitted(existing);
    this.emit('participant-updated', existing);
  },

  /** We were let in from the lobby: the room as in `joined`, then media offers follow. */
  /** A hand-off gave us another role (and its grants): who we see changes with it. */
  onRoleChanged(msg) {
    if (msg.me && typeof msg.me === 'object') this.me = { ...(this.me || {}), ...msg.me };
    if (Array.isArray(msg.participants)) this.setParticipants(msg.participants);
    this.emit('role-changed', this.me);
  },

  async onAdmitted(msg, gen) {
    if (Array.isArray(msg.participants)) this.setParticipants(msg.participants);
    if (msg.room && typeof msg.room === 'object') {
      this.room = { ...(this.room || {}), ...msg.room };
      this.emit('room-updated', this.room);
    }
    this.setAdmission('active');
    // connected from the lobby already: only the tracks go on (else publish now)
    if (this.pcs.publish && this.publishStandby) await this.attachTracks();
    await this.publishAll(gen);
  },

  async onHeld({ held }, gen) {
    this.setAdmission(held ? 'held' : 'active');
    // publishing is refused while on hold; a reconnect during the hold publishes now
    if (!held) await this.publishAll(gen);
  },

  onMutedByHost({ kind }) {
    if (kind !== 'audio' && kind !== 'video') return;
    const item = this.local[kind];
    if (item && !item.muted) {
      item.muted = true;
      item.track.enabled = false;
      // the server has marked the track muted already
      item.sentMuted = true;
      this.emit('local-updated');
    }
    this.emit('notice', {
      key: kind === 'audio' ? 'muted_by_host_audio' : 'muted_by_host_video',
      level: 'info',
    });
  },

  onVideoPaused({ participant_id: pid, paused }) {
    const record = this.participants[pid];
    if (!record) return;
    record.videoPaused = !!paused;
    this.emit('participant-updated', record);
  },

  /** Moderators remember who has been in the call (see knownAdmitted). */
  noteAdmitted(record) {
    if (record && record.identity && record.state !== 'lobby') {
      this.knownAdmitted.add(record.identity);
    }
  },

  maybeAutoAdmit(record) {
    if (!record || !this.isModerator || this.state !== 'joined') return;
    if (!record.identity || !this.knownAdmitted.has(record.identity)) return;
    console.info('[huizhen] admitting', record.identity, 'again (was in the call before)');
    this.sig.request({ type: 'admit', participant_id: record.id }).catch(() => {
      // admitted by someone else meanwhile, or gone: nothing to do
    });
  },

  // ---- tracks announced by the server --------------------------------------------------------

  onTrackPublished({ track }) {
    if (!track || !track.participant_id) return;
    if (this.me && track.participant_id === this.me.id) return;
    if (this.departed.has(track.participant_id)) return;
    const record = this.ensureParticipant(track.participant_id);
    record.tracks[track.id] = trackRecord(track);
    this.emit('participant-updated', record);
  },

  onTrackUnpublished({ track_id: trackId, participant_id: pid }) {
    for (const [mid, a] of [...this.attached]) if (a.trackId === trackId) this.detachMid(mid);
    const record = this.participants[pid];
    if (record && record.tracks[trackId]) {
      delete record.tracks[trackId];
      this.emit('participant-updated', record);
    }
  },

  onTrackMuted({ track_id: trackId, participant_id: pid, muted }) {
    if (this.me && pid === this.me.id) return; // our own mute, echoed
    const record = this.participants[pid];
    if (!record) return;
    const tr = record.tracks[trackId];
    if (tr) {
      tr.muted = !!muted;
    } else {
      // not announced (yet): remember the state; kind/source are filled by the offer mapping
      const att = [...this.attached.values()].find((a) => a.trackId === trackId);
      record.tracks[trackId] = {
        id: trackId,
        kind: att ? att.kind : null,
        source: att ? att.source : null,
        muted: !!muted,
      };
    }
    this.emit('participant-updated', record);
  },

  /** The record for id, creating a placeholder if media or a track arrives before the join. */
  ensureParticipant(id) {
    if (!this.participants[id]) {
      this.participants[id] = makeParticipant({ id });
      this.emit('participant-added', this.participants[id]);
    }
    return this.participants[id];
  },

};
