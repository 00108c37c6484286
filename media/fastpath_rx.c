/* The receive path of the shared media port in C (media/fastpath_build.py builds it into
   media._fastpath, after the send path it calls): hz_rx reads every datagram waiting on the
   port (recvmmsg, with the kernel's receive times), finds each one's connection by its
   sender's address, SRTP-decrypts the RTP of connections Python has keyed (libsrtp's
   srtp_unprotect, from pylibsrtp's binding, on that connection's own session) and forwards
   what it can to every subscriber at once (hz_fanout_to), before Python sees any of it. What
   it forwards leaves at the end of the read, in one sendmmsg: a frame's packets that arrived
   together leave together (a UDP GSO message per subscriber), and none waits for the rest of
   its frame, as on Python's path (media/sendpath.py), where a video frame leaves at its last
   packet. Measured side by side at 8 and 16 subscribers, holding frames here saved no CPU
   (bench/README.md) and cost latency.
   Python then reads the records in order: the bookkeeping of what C forwarded (history,
   taps, statistics, aiortc's receiver), and whatever C left to it.

   C forwards a packet only when Python would have forwarded it the same way: the source's
   next packet in sequence (no open gap, no stream restart), not a keyframe's start (that
   may move subscribers between layers or start them), not audio silence (Python decides
   whether to skip it), of a source whose subscribers are grouped (hz_src.ready, which
   Python sets after each packet it processes). Once a datagram needs Python (RTP C did not
   forward, RTCP), C forwards nothing more of this read: Python sees everything after it in
   arrival order, as before. STUN and DTLS do not hold C back: they touch no forwarding
   state. Nor do the subscribers hz_fanout leaves to Python (not started, an audio gap, a
   sink C cannot send through): Python forwards each of them its packets in order, C's
   decision for a packet being made before Python's work on the one before can change it —
   and the only change that would matter, a subscriber starting, comes at a keyframe's
   start, which C never forwards. */

#include <time.h>

#define HZ_RX_RAW 0     /* Python does all (STUN, DTLS, RTCP, a connection not keyed) */
#define HZ_RX_PLAIN 1   /* decrypted RTP; Python parses and forwards it */
#define HZ_RX_SENT 2    /* forwarded by C; Python does the bookkeeping (and `todo`) */
#define HZ_RX_DROP 3    /* failed to decrypt: dropped (as aiortc drops it) */

#define HZ_BATCH 64
#define HZ_SILENCE_LEVEL 120  /* media/source.py's SILENCE_LEVEL */

static double hz_clock(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A sender's address as hz_peer.key holds it: family (network order), port, address. */
static void hz_peer_key(const struct sockaddr_storage *sa, unsigned char *key)
{
    memset(key, 0, HZ_KEY);
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        key[1] = AF_INET;
        memcpy(key + 2, &v4->sin_port, 2);
        memcpy(key + 4, &v4->sin_addr, 4);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        key[1] = AF_INET6;
        memcpy(key + 2, &v6->sin6_port, 2);
        memcpy(key + 4, &v6->sin6_addr, 16);
    }
}

static int hz_vp8_key(const unsigned char *p, int n)
{  /* media/rtp.py's vp8_is_keyframe_start */
    if (n < 1 || !(p[0] & 0x10) || (p[0] & 0x07))
        return 0;
    int pos = 1;
    if (p[0] & 0x80) {
        if (n < 2)
            return 0;
        int x = p[1];
        pos = 2;
        if (x & 0x80) {
            if (n <= pos)
                return 0;
            pos += (p[pos] & 0x80) ? 2 : 1;
        }
        if (x & 0x40)
            pos += 1;
        if (x & 0x30)
            pos += 1;
    }
    return n > pos && !(p[pos] & 0x01);
}

static int hz_h264_key_nal(int type)
{
    return type == 5 || type == 7;
}

static int hz_h264_key(const unsigned char *p, int n)
{  /* media/rtp.py's h264_is_keyframe_start */
    if (n < 1)
        return 0;
    int type = p[0] & 0x1F;
    if (hz_h264_key_nal(type))
        return 1;
    if (type == 24) {
        int pos = 1;
        while (pos + 2 < n) {
            int size = (p[pos] << 8) | p[pos + 1];
            if (hz_h264_key_nal(p[pos + 2] & 0x1F))
                return 1;
            pos += 2 + size;
        }
        return 0;
    }
    if (type == 28 && n > 1)
        return (p[1] & 0x80) && hz_h264_key_nal(p[1] & 0x1F);
    return 0;
}

/* Forwards a decrypted RTP packet (`p`, `n` bytes) of `conn` if C may (see the top):
   1 when it did (rec->src, rec->todo_*), 0 to leave it to Python. */
static int hz_rx_forward(hz_rxbuf *b, hz_conn *conn, unsigned char *p, int n, hz_rxrec *rec)
{
    int cc = p[0] & 0x0F, pt = p[1] & 0x7F, marker = p[1] >> 7;
    int seq = (p[2] << 8) | p[3];
    unsigned int ts = ((unsigned int)p[4] << 24) | ((unsigned int)p[5] << 16)
                      | ((unsigned int)p[6] << 8) | p[7];
    unsigned int ssrc = ((unsigned int)p[8] << 24) | ((unsigned int)p[9] << 16)
                        | ((unsigned int)p[10] << 8) | p[11];
    int pos = 12 + 4 * cc, level = -1, voice = 0, has_abs = 0;
    if (pos > n)
        return 0;
    if (p[0] & 0x10) {
        if (pos + 4 > n || p[pos] != 0xBE || p[pos + 1] != 0xDE)
            return 0;  /* none, or two-byte extensions: Python's parser */
        int end = pos + 4 + 4 * ((p[pos + 2] << 8) | p[pos + 3]);
        if (end > n)
            return 0;
        for (int i = pos + 4; i < end;) {
            int id = p[i] >> 4, len = (p[i] & 0x0F) + 1;
            if (p[i] == 0) {
                i++;
                continue;
            }
            if (id == 15)
                break;
            if (i + 1 + len > end)
                return 0;
            if (id == conn->audio_level) {
                level = p[i + 1] & 0x7F;
                voice = p[i + 1] >> 7;
            } else if (id == conn->abs_send_time) {
                has_abs = 1;
            }
            i += 1 + len;
        }
        pos = end;
    }
    int padding = 0;
    if (p[0] & 0x20) {
        padding = p[n - 1];
        if (padding == 0 || padding > n - pos)
            return 0;
    }
    const unsigned char *payload = p + pos;
    int payload_len = n - pos - padding;

    hz_src *s = NULL;
    for (int k = 0; k < conn->nsrcs; k++) {
        if (conn->srcs[k]->ready && conn->srcs[k]->ssrc == ssrc) {
            s = conn->srcs[k];
            rec->src = k;
            break;
        }
    }
    if (s == NULL || pt != s->pt || seq != s->next_seq)
        return 0;
    if ((s->codec == HZ_VP8 && hz_vp8_key(payload, payload_len))
        || (s->codec == HZ_H264 && hz_h264_key(payload, payload_len))
        || (level >= HZ_SILENCE_LEVEL && !voice))
        return 0;
    int downs = 0;
    for (int g = 0; g < s->ngroups; g++)
        downs += s->groups[g].n;
    if (downs > b->scratch_cap || b->todo_used + downs > b->todo_cap
        || 8 + 4 + payload_len + padding > b->tail_cap)
        return 0;

    int abs_now = 0;
    if (has_abs)  /* the SFU's own clock, as media/rtp.py's abs_send_time_now */
        abs_now = (int)((long long)(hz_clock(CLOCK_REALTIME) * 262144.0) & 0xFFFFFF);
    rec->todo_off = b->todo_used;
    for (int g = 0; g < s->ngroups; g++) {
        hz_group *group = &s->groups[g];
        unsigned char *t = b->tail;
        int body = 0;
        if (group->audio_level && level >= 0) {
            t[4 + body++] = (unsigned char)(group->audio_level << 4);
            t[4 + body++] = (unsigned char)((voice ? 0x80 : 0) | level);
        }
        if (group->abs_send_time && has_abs) {
            t[4 + body++] = (unsigned char)((group->abs_send_time << 4) | 2);
            t[4 + body++] = (unsigned char)(abs_now >> 16);
            t[4 + body++] = (unsigned char)(abs_now >> 8);
            t[4 + body++] = (unsigned char)abs_now;
        }
        int length = 0;
        if (body) {
            while (body % 4)
                t[4 + body++] = 0;
            t[0] = 0xBE; t[1] = 0xDE; t[2] = 0; t[3] = (unsigned char)(body / 4);
            length = 4 + body;
        }
        memcpy(t + length, payload, (size_t)payload_len);
        length += payload_len;
        if (padding) {
            memset(t + length, 0, (size_t)padding - 1);
            t[length + padding - 1] = (unsigned char)padding;
            length += padding;
        }
        int first_byte = 0x80 | (body ? 0x10 : 0) | (padding ? 0x20 : 0);
        int k = hz_fanout_to(group->downs, group->n, t, length, first_byte, marker, seq, ts,
                             payload_len, rec->mono, b->scratch_todo, b->scratch_codes,
                             b->touched, &b->ntouched, b->touched_cap);
        for (int j = 0; j < k; j++) {
            hz_todo *e = &b->todo[b->todo_used++];
            e->group = g;
            e->index = b->scratch_todo[j];
            e->code = b->scratch_codes[j];
        }
    }
    rec->todo_n = b->todo_used - rec->todo_off;
    s->next_seq = (seq + 1) & 0xFFFF;
    b->forwarded++;
    return 1;
}

#define HZ_MMSG 64  /* messages per sendmmsg */

/* Part of hz_send_touched: one sendmmsg (or several, after an error) of `m` messages on `fd`;
   message i holds packets first[i]..end[i]-1 of sink owner[i]'s batch. */
static void hz_send_messages(hz_rxbuf *b, int fd, struct mmsghdr *msgs, int m,
                             hz_sink **owner, const int *first, const int *end)
{
    int done = 0;
    while (done < m) {
        int sent = sendmmsg(fd, msgs + done, (unsigned int)(m - done), MSG_DONTWAIT);
        if (sent > 0) {
            done += sent;
            continue;
        }
        int code = errno;  /* the first message not sent failed: skip it, send the rest */
        hz_sink *s = owner[done];
        if (code == EAGAIN || code == EWOULDBLOCK || code == EINTR || code == ENOBUFS) {
            s->dropped += end[done] - first[done];
        } else if (s->gso && hz_no_gso(code)) {  /* one packet at a time from here */
            int failed = 0;
            s->last_errno = code;
            s->gso = 0;
            b->gso_off++;
            int result = hz_send_batch(fd, s->batch, s->sizes, first[done], end[done], s->addr,
                                       s->addrlen, 0, &failed);
            if (result >= 0)
                s->dropped += result;
            else
                s->last_errno = -result;
        } else {
            s->last_errno = code;
        }
        done++;
    }
}

/* Sends what the read's fan-out held in each touched sink (HZ_GSO_OFF and errors as
   hz_flush counts them): each run of same-size packets to a subscriber is one message (a UDP
   GSO one where there are several), and the messages of sinks on one socket (the shared
   port: all of them) go in one sendmmsg, instead of a sendmsg per subscriber. */
static void hz_send_touched(hz_rxbuf *b)
{
    struct mmsghdr msgs[HZ_MMSG];
    struct iovec iovs[HZ_MMSG];
    hz_gso_control controls[HZ_MMSG];
    hz_sink *owner[HZ_MMSG];
    int first[HZ_MMSG], end[HZ_MMSG];
    int m = 0, fd = -1;
    for (int i = 0; i < b->ntouched; i++) {
        hz_sink *s = b->touched[i];
        s->touched = 0;
        int count = s->count;
        s->count = 0;  /* sent below: the batch's bytes stay as they are until then */
        s->used = 0;
        if (count == 0 || s->fd < 0)
            continue;
        if (m && s->fd != fd) {
            hz_send_messages(b, fd, msgs, m, owner, first, end);
            m = 0;
        }
        fd = s->fd;
        size_t start = 0;
        for (int at = 0; at < count;) {
            int stop = hz_run_end(s->sizes, at, count, s->gso);
            size_t length = 0;
            for (int k = at; k < stop; k++)
                length += (size_t)s->sizes[k];
            if (m == HZ_MMSG) {
                hz_send_messages(b, fd, msgs, m, owner, first, end);
                m = 0;
            }
            hz_message(&msgs[m].msg_hdr, &iovs[m], &controls[m], s->batch + start, length,
                       s->addr, s->addrlen, stop - at, s->sizes[at]);
            owner[m] = s;
            first[m] = at;
            end[m] = stop;
            m++;
            start += length;
            at = stop;
        }
    }
    if (m)
        hz_send_messages(b, fd, msgs, m, owner, first, end);
    b->ntouched = 0;
}

static int hz_is_rtp(const unsigned char *p, int n)
{  /* media/rxstamps.py's is_srtp / is_srtcp */
    return n >= 12 && p[0] >= 0x80 && p[0] < 0xC0 && !(p[1] >= 192 && p[1] <= 223);
}

static int hz_is_rtcp(const unsigned char *p, int n)
{
    return n >= 8 && p[0] >= 0x80 && p[0] < 0xC0 && p[1] >= 192 && p[1] <= 223;
}

/* Reads what waits on `fd` (up to b->cap datagrams, HZ_BATCH per call to the kernel) into
   b->rx records; returns how many, or -errno when the first read failed. */
static int hz_rx(int fd, hz_rxbuf *b)
{
    struct mmsghdr msgs[HZ_BATCH];
    struct iovec iovs[HZ_BATCH];
    struct sockaddr_storage addrs[HZ_BATCH];
    union { char buf[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; }
        controls[HZ_BATCH];
    int count = 0, held = 0;
    b->todo_used = 0;
    while (count < b->cap) {
        int want = b->cap - count < HZ_BATCH ? b->cap - count : HZ_BATCH;
        for (int i = 0; i < want; i++) {
            iovs[i].iov_base = b->data + (size_t)(count + i) * (size_t)b->slot;
            iovs[i].iov_len = (size_t)b->slot;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = controls[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof controls[i].buf;
        }
        int got = recvmmsg(fd, msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (got <= 0) {
            if (got < 0 && count == 0 && errno != EAGAIN && errno != EWOULDBLOCK
                && errno != EINTR)
                return -errno;
            break;
        }
        double mono = hz_clock(CLOCK_MONOTONIC), now = 0;
        for (int i = 0; i < got; i++) {
            hz_rxrec *rec = &b->rx[count];
            unsigned char *p = b->data + (size_t)count * (size_t)b->slot;
            int n = (int)msgs[i].msg_len;
            rec->off = count * b->slot;
            rec->len = n;
            rec->status = HZ_RX_RAW;
            rec->src = -1;
            rec->todo_off = rec->todo_n = 0;
            rec->mono = mono;
            rec->stamp = 0;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm != NULL;
                 cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPNS) {
                    struct timespec t;
                    memcpy(&t, CMSG_DATA(cm), sizeof t);
                    rec->stamp = (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
                }
            }
            if (rec->stamp == 0) {
                if (now == 0)
                    now = hz_clock(CLOCK_REALTIME);
                rec->stamp = now;
            }
            count++;
            hz_peer_key(&addrs[i], rec->key);
            rec->peer = -1;
            for (int k = 0; k < b->npeers; k++) {
                if (memcmp(b->peers[k].key, rec->key, HZ_KEY) == 0) {
                    rec->peer = k;
                    break;
                }
            }
            hz_conn *conn = rec->peer >= 0 ? b->peers[rec->peer].conn : NULL;
            if (hz_is_rtp(p, n)) {
                if (conn == NULL || conn->srtp == NULL) {
                    held = 1;
                    continue;
                }
                int length = n;
                if (((hz_protect_fn)conn->unprotect)(conn->srtp, p, &length) != 0) {
                    rec->status = HZ_RX_DROP;
                    continue;
                }
                rec->len = length;
                rec->status = HZ_RX_PLAIN;
                if (!held && length >= 12 && hz_rx_forward(b, conn, p, length, rec)) {
                    rec->status = HZ_RX_SENT;
                } else {
                    held = 1;
                }
            } else if (hz_is_rtcp(p, n)) {
                held = 1;
            }
        }
        if (got < want)
            break;
    }
    hz_send_touched(b);
    return count;
}
