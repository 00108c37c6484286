"""Builds ``media._fastpath`` (cffi, API mode): the per-packet, per-subscriber step of the send
path in C. Run by setuptools at install time (setup.py's ``cffi_modules``; ``make`` does it),
never at run time: the server needs no compiler.

``hz_stamp_protect`` writes one subscriber's RTP packet (its 12-byte header, then the template's
shared tail: extensions, payload, padding) into a send batch at ``off`` and SRTP-protects it in
place with libsrtp's ``srtp_protect``, which it is handed as a function pointer taken from
pylibsrtp's own binding (pylibsrtp links libsrtp statically and exports no symbols: the same
library and session, no second copy). ``hz_protect`` does the same for a packet that is already
whole (a retransmission, a padding filler). Each writes the packet's protected size into the
batch's ``sizes`` array. ``hz_send_batch`` then sends the batch to one subscriber: each run of
same-size packets as one UDP GSO ``sendmsg`` (the kernel splits it), or one ``sendto`` per
packet without GSO. ``hz_forward`` / ``hz_send_whole`` do a packet's whole step on a
subscriber's batch (``hz_sink``: its bookkeeping, socket and address): send what the batch
holds when the packet belongs to another frame or does not fit, protect the packet into it,
send the batch at a frame's end; Python sends only where the sink has no socket of its own
to give C (a relayed pair, a simulated downlink). ``hz_fanout`` is the loop over a source's
subscribers (their DownTracks' state: ``hz_down``): one call per packet and header-extension
profile forwards it to every started subscriber whose sink is armed, and lists the others for
``DownTrack.forward``. ``hz_rx`` (media/fastpath_rx.c) is the shared media port's receive
path: it reads, decrypts and forwards what it can before Python sees it (media/udpmux.py).
What the send path replaces in Python cost two
copies of the payload, two allocations and a dozen interpreter steps per packet and
subscriber, and building a ``sendmsg``'s arguments per frame (bench/README.md, "The send path
in C").
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

# A subscriber connection's send batch (media/sendpath.py's SrtpUdpSink): `count` protected
# packets back to back in `batch` (`used` bytes, their sizes in `sizes`), all of one frame of one
# stream (`batch_ts`, `batch_ssrc`); sent to `addr` on `fd`, or by Python when fd < 0 (a relayed
# pair, a simulated downlink, no pair yet). `last_errno`: of the last send that failed.
SINK = """
typedef struct {
    unsigned char *batch;
    int *sizes;
    int cap, max_packets, count, used;
    long long batch_ts, batch_ssrc;
    int fd, addrlen, gso;
    unsigned char addr[28];
    long long dropped;
    int last_errno;
    void *protect, *srtp;
    int armed, touched;
} hz_sink;
"""
# `protect`/`srtp`: libsrtp's srtp_protect and the connection's session; `armed`: hz_fanout may
# send through this sink (Python checked its session, nominated pair and socket, and clears it
# when one of them changes); `touched`: C's receive path holds packets in it, to be sent at the
# end of the read (hz_rx).

# A DownTrack's rewriting state (media/downtrack.py keeps its fields here, so that hz_fanout
# can forward a packet to a started subscriber without Python): what it last sent, its offsets
# from the source's numbering, its counters, and what it sent under each of its last
# HZ_SENT sequence numbers (for NACKs: the source packet's number and the DownTrack's source
# generation `gen`, or a padding filler).
DOWN = """
typedef struct {
    unsigned short seq, src_seq, gen;
    unsigned char kind;
    unsigned int ts;
} hz_sent;

typedef struct {
    hz_sink *sink;
    unsigned int ssrc;
    int payload_type, active, paused, started, video, gen;
    int seq_offset, first_src_seq, last_out_seq;
    unsigned int ts_offset, last_out_ts;
    double last_out_time;
    long long packets, octets;
    hz_sent sent[512];
} hz_down;
"""

# The receive path (media/fastpath_rx.c): a source's subscribers by header-extension profile
# (media/source.py's _Group), what C needs of a published track (hz_src: set by Python after
# each packet it processes; `next_seq`: the one C may forward next), of a publish connection
# (hz_conn: its SRTP session once keyed, its header-extension ids, its tracks) and of a sender
# (hz_peer: its address as `key`); a read's records (hz_rxrec) and the subscribers C left to
# Python (hz_todo: the group, the index in it, and the send's code or 0).
RECEIVE = """
#define HZ_KEY 20
#define HZ_MAX_GROUPS 8
#define HZ_MAX_SRCS 16
#define HZ_VP8 1
#define HZ_H264 2

typedef struct {
    int audio_level, abs_send_time, n;
    hz_down **downs;
} hz_group;

typedef struct {
    unsigned int ssrc;
    int pt, ready, codec, next_seq, ngroups;
    hz_group groups[8];
} hz_src;

typedef struct {
    void *unprotect, *srtp;
    int audio_level, abs_send_time, nsrcs;
    hz_src *srcs[16];
} hz_conn;

typedef struct {
    unsigned char key[20];
    hz_conn *conn;
} hz_peer;

typedef struct {
    int off, len, status, peer, src, todo_off, todo_n;
    double stamp, mono;
    unsigned char key[20];
} hz_rxrec;

typedef struct {
    int group, index, code;
} hz_todo;

typedef struct {
    unsigned char *data;
    int slot, cap;
    hz_rxrec *rx;
    hz_peer *peers;
    int npeers;
    hz_todo *todo;
    int todo_cap, todo_used;
    int *scratch_todo, *scratch_codes;
    int scratch_cap;
    unsigned char *tail;
    int tail_cap;
    hz_sink **touched;
    int touched_cap, ntouched;
    long long forwarded, gso_off;
} hz_rxbuf;
"""

CDEF = """
int hz_stamp_protect(void *protect, void *session, unsigned char *batch, int off, int cap,
                     const unsigned char *tail, int tail_len, int first_byte, int marker_pt,
                     int seq, unsigned int timestamp, unsigned int ssrc);
int hz_protect(void *protect, void *session, unsigned char *batch, int off, int cap,
               const unsigned char *packet, int length);
int hz_send_batch(int fd, const unsigned char *batch, const int *sizes, int first, int count,
                  const unsigned char *addr, int addrlen, int gso, int *failed_at);
""" + SINK + """
int hz_forward(void *protect, void *session, hz_sink *s, const unsigned char *tail,
               int tail_len, int first_byte, int marker_pt, int seq, unsigned int timestamp,
               unsigned int ssrc, int end_of_frame);
int hz_send_whole(void *protect, void *session, hz_sink *s, const unsigned char *packet,
                  int length);
int hz_flush(hz_sink *s);
""" + DOWN + """
int hz_fanout(hz_down **downs, int n, const unsigned char *tail, int tail_len, int first_byte,
              int marker, int src_seq, unsigned int src_ts, int payload_len, double arrived,
              int *todo, int *codes);
""" + RECEIVE + """
#define HZ_RX_RAW 0
#define HZ_RX_PLAIN 1
#define HZ_RX_SENT 2
#define HZ_RX_DROP 3
int hz_rx(int fd, hz_rxbuf *b);
"""

SOURCE = r"""
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* recvmmsg (Python.h defines it already) */
#endif
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103  /* linux/udp.h */
#endif
#define HZ_GSO_MAX_SEGMENTS 64  /* UDP_MAX_SEGMENTS of the oldest kernels with UDP GSO (4.18) */
#define HZ_GSO_MAX_BYTES 60000  /* a GSO send is one IP packet before it is split */

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) */
typedef int (*hz_protect_fn)(void *, void *, int *);

#define HZ_TRAILER_ROOM 144  /* SRTP_MAX_TRAILER_LEN: the tag and MKI libsrtp may append */

/* The packet's length once protected (> 0); -1: it does not fit in the batch;
   -1000 - status: libsrtp refused it. */
static int hz_protect_in_place(void *protect, void *session, unsigned char *at, int length)
{
    int status = ((hz_protect_fn)protect)(session, at, &length);
    return status ? -1000 - status : length;
}

static int hz_stamp_protect(void *protect, void *session, unsigned char *batch, int off, int cap,
                            const unsigned char *tail, int tail_len, int first_byte,
                            int marker_pt, int seq, unsigned int timestamp, unsigned int ssrc)
{
    if (off < 0 || tail_len < 0 || (long)off + 12 + tail_len + HZ_TRAILER_ROOM > cap)
        return -1;
    unsigned char *at = batch + off;
    at[0] = (unsigned char)first_byte;
    at[1] = (unsigned char)marker_pt;
    at[2] = (unsigned char)(seq >> 8);  at[3] = (unsigned char)seq;
    at[4] = (unsigned char)(timestamp >> 24); at[5] = (unsigned char)(timestamp >> 16);
    at[6] = (unsigned char)(timestamp >> 8);  at[7] = (unsigned char)timestamp;
    at[8] = (unsigned char)(ssrc >> 24); at[9] = (unsigned char)(ssrc >> 16);
    at[10] = (unsigned char)(ssrc >> 8); at[11] = (unsigned char)ssrc;
    memcpy(at + 12, tail, (size_t)tail_len);
    return hz_protect_in_place(protect, session, at, 12 + tail_len);
}

static int hz_protect(void *protect, void *session, unsigned char *batch, int off, int cap,
                      const unsigned char *packet, int length)
{
    if (off < 0 || length < 12 || (long)off + length + HZ_TRAILER_ROOM > cap)
        return -1;
    memcpy(batch + off, packet, (size_t)length);
    return hz_protect_in_place(protect, session, batch + off, length);
}

/* The cmsg room of a UDP GSO message. */
typedef union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } hz_gso_control;

/* Where the run of packets from `first` (of `count`, sizes in `sizes`) that one send carries
   ends: with `gso`, the packets of the first one's size (the last may be shorter) up to the
   kernel's GSO limits; else just the one. */
static int hz_run_end(const int *sizes, int first, int count, int gso)
{
    int size = sizes[first], end = first + 1;
    if (gso && size > 0) {
        int limit = first + HZ_GSO_MAX_SEGMENTS;
        if (first + HZ_GSO_MAX_BYTES / size < limit)
            limit = first + HZ_GSO_MAX_BYTES / size;
        if (count < limit)
            limit = count;
        while (end < limit && sizes[end] == size)
            end++;
        if (end < limit && sizes[end] < size)
            end++;  /* the last segment may be shorter */
    }
    return end;
}

/* `msg` sends the `length` bytes at `data` to `addr`; with several `segments`, as datagrams
   of `segment` bytes that the kernel cuts (UDP GSO: the cmsg in `control`). */
static void hz_message(struct msghdr *msg, struct iovec *iov, hz_gso_control *control,
                       const unsigned char *data, size_t length, const unsigned char *addr,
                       int addrlen, int segments, int segment)
{
    iov->iov_base = (void *)data;
    iov->iov_len = length;
    memset(msg, 0, sizeof *msg);
    msg->msg_name = (void *)addr;
    msg->msg_namelen = (socklen_t)addrlen;
    msg->msg_iov = iov;
    msg->msg_iovlen = 1;
    if (segments > 1) {
        memset(control, 0, sizeof *control);
        msg->msg_control = control->buf;
        msg->msg_controllen = sizeof control->buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(msg);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = (uint16_t)segment;
        memcpy(CMSG_DATA(cm), &size, sizeof size);
    }
}

/* Sends packets first..count-1 of a batch (back to back from its start, sizes in `sizes`) to
   `addr` (a struct sockaddr of `addrlen` bytes). With `gso`, each run of same-size packets (the
   last one may be shorter) is one sendmsg with UDP_SEGMENT; else one datagram per call.
   Returns how many packets the socket had no room for (dropped: real-time media is never
   queued), or -errno of another error, with the index of the first packet not sent in
   *failed_at (the caller may send the rest another way). */
static int hz_send_batch(int fd, const unsigned char *batch, const int *sizes, int first,
                         int count, const unsigned char *addr, int addrlen, int gso,
                         int *failed_at)
{
    int dropped = 0;
    size_t start = 0;
    for (int i = 0; i < first; i++)
        start += (size_t)sizes[i];
    while (first < count) {
        int end = hz_run_end(sizes, first, count, gso);
        size_t length = 0;
        for (int i = first; i < end; i++)
            length += (size_t)sizes[i];
        struct iovec iov;
        struct msghdr msg;
        hz_gso_control control;
        hz_message(&msg, &iov, &control, batch + start, length, addr, addrlen, end - first,
                   sizes[first]);
        if (sendmsg(fd, &msg, MSG_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ENOBUFS) {
                dropped += end - first;
            } else {
                *failed_at = first;
                return -errno;
            }
        }
        start += length;
        first = end;
    }
    return dropped;
}
""" + SINK + r"""
#define HZ_OK 0
#define HZ_FLUSH_FIRST 1  /* Python must send what the batch holds, then call again */
#define HZ_FLUSH_NOW 2    /* the packet is in; Python must send the batch now */
#define HZ_GSO_OFF 3      /* sent, but UDP GSO failed on this path and is off from now on */

static int hz_no_gso(int code)
{
    return code == EIO || code == EINVAL || code == ENOPROTOOPT || code == EOPNOTSUPP;
}

/* Sends what the batch holds (fd >= 0) and empties it: HZ_OK or HZ_GSO_OFF. Datagrams the
   socket had no room for are counted in `dropped`; a failed send leaves its errno. */
static int hz_flush(hz_sink *s)
{
    int count = s->count, status = HZ_OK, failed = 0;
    s->count = 0;
    s->used = 0;
    if (count == 0 || s->fd < 0)
        return HZ_OK;
    int result = hz_send_batch(s->fd, s->batch, s->sizes, 0, count, s->addr, s->addrlen,
                               s->gso, &failed);
    if (result < 0 && s->gso && hz_no_gso(-result)) {  /* one packet at a time from here */
        s->last_errno = -result;
        s->gso = 0;
        status = HZ_GSO_OFF;
        result = hz_send_batch(s->fd, s->batch, s->sizes, failed, count, s->addr, s->addrlen,
                               0, &failed);
    }
    if (result >= 0)
        s->dropped += result;
    else
        s->last_errno = -result;
    return status;
}

static int hz_full(const hz_sink *s, int length)
{
    return s->count >= s->max_packets || (long)s->used + length + HZ_TRAILER_ROOM > s->cap;
}

/* A protected packet of `size` bytes was written at the batch's end: count it, and send the
   batch now if `send`. Returns `status` (what sending before it gave) or the send's code. */
static int hz_batched(hz_sink *s, int size, int send, int status)
{
    s->sizes[s->count++] = size;
    s->used += size;
    if (!send)
        return status;
    if (s->fd < 0)
        return HZ_FLUSH_NOW;
    int flushed = hz_flush(s);
    return flushed != HZ_OK ? flushed : status;
}

/* One forwarded packet (hz_stamp_protect's arguments) into the batch: the batch is sent first
   if it holds another frame or stream or has no room, and after it if `end_of_frame`.
   HZ_* codes, or hz_stamp_protect's negative ones (nothing done). */
static int hz_forward(void *protect, void *session, hz_sink *s, const unsigned char *tail,
                      int tail_len, int first_byte, int marker_pt, int seq,
                      unsigned int timestamp, unsigned int ssrc, int end_of_frame)
{
    int status = HZ_OK;
    if (s->count && ((long long)timestamp != s->batch_ts || (long long)ssrc != s->batch_ssrc
                     || hz_full(s, 12 + tail_len))) {
        if (s->fd < 0)
            return HZ_FLUSH_FIRST;
        status = hz_flush(s);
    }
    int size = hz_stamp_protect(protect, session, s->batch, s->used, s->cap, tail, tail_len,
                                first_byte, marker_pt, seq, timestamp, ssrc);
    if (size < 0)
        return size;
    s->batch_ts = timestamp;
    s->batch_ssrc = ssrc;
    return hz_batched(s, size, end_of_frame, status);
}

/* A whole packet (a retransmission, a padding filler) after what the batch holds; all sent
   now. HZ_* codes, or hz_protect's negative ones (nothing done). */
static int hz_send_whole(void *protect, void *session, hz_sink *s, const unsigned char *packet,
                         int length)
{
    int status = HZ_OK;
    if (s->count && hz_full(s, length)) {
        if (s->fd < 0)
            return HZ_FLUSH_FIRST;
        status = hz_flush(s);
    }
    int size = hz_protect(protect, session, s->batch, s->used, s->cap, packet, length);
    if (size < 0)
        return size;
    return hz_batched(s, size, 1, status);
}
""" + DOWN + r"""
#define HZ_SENT_PACKET 1
#define HZ_SENT_FILLER 2

/* One source packet (its template's tail and first byte, and its own marker, sequence number,
   timestamp, payload length and arrival time) to each of `n` DownTracks: what
   DownTrack.forward does for a started subscriber whose sink is armed. The ones Python must
   see to are listed in `todo` (their index; returns how many): not started yet, a sink that is
   not armed, an audio packet after an upstream gap (Python notes the gap), or a send that
   returned a code (in `codes`, the same position; 0 for the others: Python forwards those). */
static int hz_fanout_to(hz_down **downs, int n, const unsigned char *tail, int tail_len,
                        int first_byte, int marker, int src_seq, unsigned int src_ts,
                        int payload_len, double arrived, int *todo, int *codes,
                        hz_sink **touched, int *ntouched, int touched_cap);

static int hz_fanout(hz_down **downs, int n, const unsigned char *tail, int tail_len,
                     int first_byte, int marker, int src_seq, unsigned int src_ts,
                     int payload_len, double arrived, int *todo, int *codes)
{
    return hz_fanout_to(downs, n, tail, tail_len, first_byte, marker, src_seq, src_ts,
                        payload_len, arrived, todo, codes, NULL, NULL, 0);
}

/* hz_fanout; with `touched` (C's receive path), a packet is not sent at its frame's end but
   held in its sink, which is listed in `touched` (up to `touched_cap`), and all of them are
   sent at the end of the read: a frame's packets that arrive together still leave together,
   and none waits for packets that have not arrived. */
static int hz_fanout_to(hz_down **downs, int n, const unsigned char *tail, int tail_len,
                        int first_byte, int marker, int src_seq, unsigned int src_ts,
                        int payload_len, double arrived, int *todo, int *codes,
                        hz_sink **touched, int *ntouched, int touched_cap)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        hz_down *d = downs[i];
        if (!d->active || d->paused)
            continue;
        hz_sink *s = d->sink;
        if (!d->started || s == NULL || !s->armed || s->fd < 0) {
            codes[k] = 0;
            todo[k++] = i;
            continue;
        }
        if (((src_seq - d->first_src_seq) & 0xFFFF) >= 0x8000)
            continue;  /* older than where this subscriber started */
        int seq = (src_seq + d->seq_offset) & 0xFFFF;
        unsigned int ts = src_ts + d->ts_offset;
        int ahead = (seq - d->last_out_seq) & 0xFFFF;
        if (ahead < 0x8000) {
            if (ahead > 1 && !d->video) {
                codes[k] = 0;
                todo[k++] = i;
                continue;
            }
            d->last_out_seq = seq;
            d->last_out_ts = ts;
            d->last_out_time = arrived;
            if (((src_seq - d->first_src_seq) & 0xFFFF) > 0x4000)
                d->first_src_seq = (src_seq - 0x4000) & 0xFFFF;
        }
        int end_of_frame = 1;
        if (d->video) {
            hz_sent *e = &d->sent[seq & 511];
            e->seq = (unsigned short)seq;
            e->src_seq = (unsigned short)src_seq;
            e->gen = (unsigned short)d->gen;
            e->kind = HZ_SENT_PACKET;
            e->ts = ts;
            end_of_frame = marker != 0;
        }
        if (touched != NULL) {
            if (!s->touched && *ntouched < touched_cap) {
                s->touched = 1;
                touched[(*ntouched)++] = s;
            }
            if (s->touched)
                end_of_frame = 0;
        }
        int result = hz_forward(s->protect, s->srtp, s, tail, tail_len, first_byte,
                                (marker << 7) | d->payload_type, seq, ts, d->ssrc,
                                end_of_frame);
        if (result >= 0) {
            d->packets++;
            d->octets += payload_len;
        }
        if (result != HZ_OK) {
            codes[k] = result;
            todo[k++] = i;
        }
    }
    return k;
}
"""

SOURCE += RECEIVE + (Path(__file__).parent / "fastpath_rx.c").read_text()

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("media._fastpath", SOURCE, extra_compile_args=["-O2"])

if __name__ == "__main__":  # a build by hand, in place: python media/fastpath_build.py
    ffibuilder.compile(verbose=True)
