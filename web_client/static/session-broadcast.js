// Huizhen web client: the Session's part in a teaching broadcast (docs/protocol.md, "Teaching
// broadcast"): the viewer count, raised hands, promotion to speak (our microphone, and camera
// if allowed, published on promotion and stopped on demotion) and the moderated questions.
// Methods of Session (session.js), mixed into its prototype. The server sends `room.questions`
// only in rooms with an audience: that is how the client knows (no room kind is named here).

/** Server messages of the broadcast (each handled by onAudienceMessage). */
export const AUDIENCE_MESSAGES = ['audience', 'hands', 'hand', 'question'];

const MAX_QUESTION = 500;

function question(q) {
  return {
    id: String(q.id),
    participant_id: q.participant_id || null,
    name: q.name || '',
    text: String(q.text || ''),
    at: q.at || null,
    status: q.status === 'approved' || q.status === 'dismissed' ? q.status : 'pending',
  };
}

export function emptyAudience() {
  return {
    enabled: false, // a room with an audience (room.questions came in joined)
    member: false, // we are in it (a viewer): we raise hands and ask
    viewers: null, // how many watch (those outside the audience are told)
    hands: [], // moderators: [{participant_id, name, since}]
    handRaised: false,
    promoted: false,
    questions: [], // [{id, participant_id, name, text, at, status}]
  };
}

export const broadcastMethods = {
  /** From `joined.room` (every join and reconnect: a promoted viewer comes back promoted). */
  applyAudienceRoom(room) {
    const a = emptyAudience();
    if (room && Array.isArray(room.questions)) {
      a.enabled = true;
      a.member = !!room.in_audience;
      a.promoted = !!room.promoted;
      a.viewers = room.audience && Number.isFinite(room.audience.viewers)
        ? room.audience.viewers : null;
      a.hands = Array.isArray(room.hands) ? room.hands : [];
      a.questions = room.questions.map(question);
    }
    this.audience = a;
    this.emit('audience');
  },

  onAudienceMessage(m) {
    const a = this.audience;
    if (m.type === 'audience') a.viewers = Number(m.viewers) || 0;
    else if (m.type === 'hands') a.hands = Array.isArray(m.hands) ? m.hands : [];
    else if (m.type === 'hand') a.handRaised = !!m.raised;
    else if (m.type === 'question' && m.question) {
      const q = question(m.question);
      const i = a.questions.findIndex((x) => x.id === q.id);
      if (q.status === 'dismissed') {
        if (i >= 0) a.questions.splice(i, 1);
        if (this.me && q.participant_id === this.me.id) {
          this.emit('notice', { key: 'qa_dismissed', level: 'info' });
        }
      } else if (i >= 0) a.questions[i] = q;
      else a.questions.push(q);
      if (q.status === 'approved') this.emit('question-approved', q);
    }
    this.emit('audience');
  },

  /** role_changed with `promoted`: publish (or stop) our microphone and camera. */
  async onPromotion(m, gen) {
    if (typeof m.promoted !== 'boolean' || !this.audience.enabled) return;
    this.audience.promoted = m.promoted;
    this.audience.handRaised = false;
    this.emit('audience');
    this.stopPromotedMedia((this.me && this.me.grants) || {});
    if (!m.promoted) {
      this.emit('notice', { key: 'bc_demoted', level: 'info' });
      return;
    }
    const grants = (this.me && this.me.grants) || {};
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: !!grants.publish_audio,
        video: grants.publish_video ? { width: 640, height: 480 } : false,
      });
    } catch (err) {
      console.warn('[huizhen] no microphone for speaking', err && err.name);
      this.emit('notice', { key: 'media_denied', level: 'warning' });
      return;
    }
    if (gen !== this.gen || !this.audience.promoted) {
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.localStream = stream;
    const a = stream.getAudioTracks()[0];
    const v = stream.getVideoTracks()[0];
    this.local.audio = a ? this.localItem(a, 'microphone') : null;
    this.local.video = v ? this.localItem(v, 'camera') : null;
    this.emit('local-updated');
    this.emit('local-stream');
    this.emit('notice', { key: grants.publish_video ? 'bc_promoted_video' : 'bc_promoted', level: 'info' });
    await this.publish(gen);
  },

  /**
   * Stop sending: our publish connection closed, microphone and camera released. The server
   * took down what `grants` no longer allow (a demotion: everything); we unpublish the rest.
   */
  stopPromotedMedia(grants) {
    const pc = this.pcs.publish;
    if (pc) {
      for (const item of [this.local.audio, this.local.video]) {
        const still = grants[item && item.kind === 'audio' ? 'publish_audio' : 'publish_video'];
        if (item && item.trackId && still) {
          this.sendMessage({ type: 'unpublish', track_id: item.trackId });
        }
      }
      pc.onconnectionstatechange = null;
      pc.close();
      this.pcs.publish = null;
    }
    for (const item of [this.local.audio, this.local.video]) if (item) item.track.stop();
    this.local = { audio: null, video: null };
    this.localStream = null;
    this.emit('local-updated');
    this.emit('local-stream');
  },

  raiseHand(raised) {
    return this.sendMessage({ type: 'raise_hand', raised: !!raised });
  },

  /** Moderators: let a viewer speak (microphone; camera too with video). */
  promote(participantId, video) {
    return this.sendMessage({ type: 'promote', participant_id: participantId, video: !!video });
  },

  demote(participantId) {
    return this.sendMessage({ type: 'demote', participant_id: participantId });
  },

  ask(text) {
    const clean = String(text || '').trim().slice(0, MAX_QUESTION);
    if (!clean) return false;
    return this.sendMessage({ type: 'ask', text: clean });
  },

  answerQuestion(questionId, approve) {
    return this.sendMessage({
      type: approve ? 'approve_question' : 'dismiss_question',
      question_id: questionId,
    });
  },
};
