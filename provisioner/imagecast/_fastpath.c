/*
 * The image-multicast receiver's hot loop in C: verify a batch of data
 * datagrams (header, HMAC-SHA256 tag) and group the good ones into runs;
 * read, verify and write a batch in one call; decode a range list.
 *
 * Optional: provisioner.imagecast.datagram.SessionKey.verifyBatch does the same
 * in Python when this module is not built, and the tests compare the two on
 * the same batches. Layout and rules: provisioner/imagecast/datagram.py and
 * docs/wire/imagecast.md.
 *
 *   prepare(key) -> bytes
 *       the HMAC's inner and outer SHA-256 states after the key pads.
 *   verify_batch(datagrams, session, round, limit, pads, starts, ends)
 *       -> (runs, rejected, stale)
 *       datagrams: a sequence of bytes-like objects (memoryviews of a
 *       recvmmsg buffer are not copied: each payload in a run is a
 *       memoryview slice of its datagram). starts/ends: the held ranges
 *       (sorted lists of ints) or None; a datagram whose bytes are held is
 *       dropped before its tag is computed.
 *   receive_batch(fd, buffer, slot, batch, session, round, limit, pads,
 *                 starts, ends, outfd, hash_at)
 *       -> (count, runs, rejected, stale, truncated, peer, error, at)
 *       one recvmmsg of up to batch datagrams from the socket fd into
 *       buffer (writable, batch * slot bytes), the checks of verify_batch,
 *       and the bytes not held written to outfd with pwritev at their
 *       offsets: the receiver's whole read loop without a Python object
 *       per datagram. Bytes held (starts/ends) or written earlier in the
 *       same batch are never written again: they may have been checked
 *       against their piece's digest already, and a later datagram for
 *       them (forged by someone who knows the session key) must not
 *       replace them. count is 0 when nothing waits. Each run is (start,
 *       end, data), the bytes written there: data is the run's bytes from
 *       hash_at on for the run that holds hash_at (the end of the
 *       in-order prefix, which then moves to the run's end), else None.
 *       peer: the raw source address of the first rejected datagram, or
 *       None. error/at: the errno and offset of a failed write (0 and 0
 *       when all was written; runs holds only what was written). A
 *       datagram longer than slot is truncated (counted, dropped).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#define VERSION 1
#define HEADER_SIZE 15
#define TAG_SIZE 12
#define OVERHEAD (HEADER_SIZE + TAG_SIZE)

typedef struct {
    SHA256_CTX inner;
    SHA256_CTX outer;
} pads_t;

static PyObject *
prepare(PyObject *self, PyObject *args)
{
    Py_buffer key;
    unsigned char block[64], pad[64];
    pads_t pads;
    int i;

    if (!PyArg_ParseTuple(args, "y*", &key))
        return NULL;
    memset(block, 0, sizeof(block));
    if (key.len > 64)
        SHA256(key.buf, (size_t)key.len, block);
    else
        memcpy(block, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    for (i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x36;
    SHA256_Init(&pads.inner);
    SHA256_Update(&pads.inner, pad, 64);
    for (i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&pads.outer);
    SHA256_Update(&pads.outer, pad, 64);
    return PyBytes_FromStringAndSize((const char *)&pads, sizeof(pads));
}

static inline unsigned long long
be(const unsigned char *p, int n)
{
    unsigned long long v = 0;
    int i;
    for (i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Whether [start, end) lies inside one held range. -1 on error. */
static int
covered(PyObject *starts, PyObject *ends, unsigned long long start,
        unsigned long long end)
{
    Py_ssize_t n = PyList_GET_SIZE(ends), lo = 0, hi;
    unsigned long long last, s, e;

    if (n == 0)
        return 0;
    last = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ends, n - 1));
    if (last == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (start >= last)
        return 0;
    /* the last range that starts at or before start */
    hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        s = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(starts, mid));
        if (s == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        if (s <= start)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 0;
    e = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ends, lo - 1));
    if (e == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    return end <= e;
}

/* A memoryview of item[start:stop] (no copy). */
static PyObject *
slice(PyObject *item, Py_ssize_t start, Py_ssize_t stop)
{
    PyObject *view, *out;

    if (PyMemoryView_Check(item)) {
        Py_INCREF(item);
        view = item;
    } else if ((view = PyMemoryView_FromObject(item)) == NULL) {
        return NULL;
    }
    out = PySequence_GetSlice(view, start, stop);
    Py_DECREF(view);
    return out;
}

/* What check() makes of one datagram. */
enum { GOOD, REJECTED, STALE, HELD, FAILED };

/*
 * The checks of verify_batch on one datagram p[0:size]: header, held
 * ranges (before the tag), tag, round, limit. On GOOD, *offset and *length
 * say where its payload (p + HEADER_SIZE) goes. FAILED: a Python error is
 * set.
 */
static int
check(const unsigned char *p, Py_ssize_t size, unsigned long long session,
      long roundNumber, unsigned long long limit, const pads_t *pads,
      PyObject *starts, PyObject *ends, unsigned long long *offset,
      unsigned long long *length)
{
    unsigned long long end;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx;
    Py_ssize_t body;

    if (size < OVERHEAD)
        return REJECTED;
    *length = be(p + 13, 2);
    if (p[0] != VERSION || be(p + 1, 4) != session
            || (Py_ssize_t)*length + OVERHEAD != size)
        return REJECTED;
    *offset = (be(p + 7, 2) << 32) | be(p + 9, 4);
    end = *offset + *length;
    if (starts != NULL) {
        int held = covered(starts, ends, *offset, end);
        if (held < 0)
            return FAILED;
        if (held)
            return HELD;
    }
    body = size - TAG_SIZE;
    ctx = pads->inner;
    SHA256_Update(&ctx, p, (size_t)body);
    SHA256_Final(digest, &ctx);
    ctx = pads->outer;
    SHA256_Update(&ctx, digest, sizeof(digest));
    SHA256_Final(digest, &ctx);
    if (CRYPTO_memcmp(digest, p + body, TAG_SIZE) != 0)
        return REJECTED;
    if ((long)be(p + 5, 2) < roundNumber)
        return STALE;
    if (end > limit)
        return REJECTED;
    return GOOD;
}

/*
 * The pads (from prepare()) and the held ranges' two lists (or None, None:
 * *starts and *ends become NULL); releases padsBuf. -1 with an error set.
 */
static int
take_pads(Py_buffer *padsBuf, pads_t *pads, PyObject **starts, PyObject **ends)
{
    if (padsBuf->len != (Py_ssize_t)sizeof(*pads)) {
        PyBuffer_Release(padsBuf);
        PyErr_SetString(PyExc_ValueError, "pads: not from prepare()");
        return -1;
    }
    memcpy(pads, padsBuf->buf, sizeof(*pads));
    PyBuffer_Release(padsBuf);
    if (*starts == Py_None || *ends == Py_None) {
        *starts = *ends = NULL;
    } else if (!PyList_Check(*starts) || !PyList_Check(*ends)
               || PyList_GET_SIZE(*starts) != PyList_GET_SIZE(*ends)) {
        PyErr_SetString(PyExc_TypeError, "starts and ends: two lists of the same length");
        return -1;
    }
    return 0;
}

static PyObject *
verify_batch(PyObject *self, PyObject *args)
{
    PyObject *datagrams, *starts, *ends, *seq = NULL, *runs = NULL, *payloads = NULL;
    unsigned long long session, limit;
    long roundNumber;
    Py_buffer padsBuf;
    pads_t pads;
    Py_ssize_t i, count;
    long rejected = 0, stale = 0;
    unsigned long long runStart = 0, runEnd = 0;
    int haveRun = 0;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OKlKy*OO", &datagrams, &session, &roundNumber, &limit,
                          &padsBuf, &starts, &ends))
        return NULL;
    if (take_pads(&padsBuf, &pads, &starts, &ends) < 0)
        return NULL;
    seq = PySequence_Fast(datagrams, "datagrams: a sequence");
    if (seq == NULL)
        return NULL;
    runs = PyList_New(0);
    if (runs == NULL)
        goto done;
    count = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *payload;
        Py_buffer view;
        unsigned long long offset = 0, length = 0, end;
        int verdict;

        if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0)
            goto done;
        verdict = check(view.buf, view.len, session, roundNumber, limit, &pads, starts, ends,
                        &offset, &length);
        PyBuffer_Release(&view);
        if (verdict == FAILED)
            goto done;
        if (verdict == REJECTED)
            rejected++;
        if (verdict == STALE)
            stale++;
        if (verdict != GOOD)
            continue;
        end = offset + length;
        payload = slice(item, HEADER_SIZE, HEADER_SIZE + (Py_ssize_t)length);
        if (payload == NULL)
            goto done;
        if (!(haveRun && offset == runEnd)) {
            if (haveRun) {
                PyObject *run = Py_BuildValue("(KKO)", runStart, runEnd, payloads);
                Py_CLEAR(payloads);
                if (run == NULL || PyList_Append(runs, run) < 0) {
                    Py_XDECREF(run);
                    Py_DECREF(payload);
                    goto done;
                }
                Py_DECREF(run);
            }
            payloads = PyList_New(0);
            if (payloads == NULL) {
                Py_DECREF(payload);
                goto done;
            }
            runStart = offset;
            haveRun = 1;
        }
        if (PyList_Append(payloads, payload) < 0) {
            Py_DECREF(payload);
            goto done;
        }
        Py_DECREF(payload);
        runEnd = end;
    }
    if (haveRun) {
        PyObject *run = Py_BuildValue("(KKO)", runStart, runEnd, payloads);
        if (run == NULL || PyList_Append(runs, run) < 0) {
            Py_XDECREF(run);
            goto done;
        }
        Py_DECREF(run);
    }
    result = Py_BuildValue("(Oll)", runs, rejected, stale);
done:
    Py_XDECREF(payloads);
    Py_XDECREF(runs);
    Py_XDECREF(seq);
    return result;
}

#define MAX_BATCH 256

typedef struct {
    unsigned long long start, end;
} span_t;

typedef struct {
    span_t *items;
    Py_ssize_t count, size;
} spans_t;

static int
spans_push(spans_t *s, unsigned long long start, unsigned long long end)
{
    if (s->count == s->size) {
        Py_ssize_t size = s->size ? s->size * 2 : 64;
        span_t *items = PyMem_Realloc(s->items, (size_t)size * sizeof(span_t));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->items = items;
        s->size = size;
    }
    s->items[s->count].start = start;
    s->items[s->count].end = end;
    s->count++;
    return 0;
}

/*
 * The parts of [start, end) that no held range (starts/ends, sorted) and
 * no span of written (this batch's writes) covers, appended to out in
 * order. -1 with an error set.
 */
static int
new_parts(PyObject *starts, PyObject *ends, const spans_t *written,
          unsigned long long start, unsigned long long end, spans_t *out,
          spans_t *scratch)
{
    Py_ssize_t n = starts != NULL ? PyList_GET_SIZE(ends) : 0, lo = 0, hi = n, i, j;
    unsigned long long at = start;

    scratch->count = 0;
    /* the first held range that ends after start */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        unsigned long long e = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ends, mid));
        if (e == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        if (e <= start)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (i = lo; i < n && at < end; i++) {
        unsigned long long s = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(starts, i));
        unsigned long long e = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ends, i));
        if (PyErr_Occurred())
            return -1;
        if (s >= end)
            break;
        if (s > at && spans_push(scratch, at, s) < 0)
            return -1;
        if (e > at)
            at = e;
    }
    if (at < end && spans_push(scratch, at, end) < 0)
        return -1;
    /* less what this batch wrote already (written is sorted, disjoint and
       short: touching spans are merged) */
    for (i = 0; i < scratch->count; i++) {
        unsigned long long s = scratch->items[i].start, e = scratch->items[i].end;
        for (j = 0; j < written->count && s < e; j++) {
            unsigned long long ws = written->items[j].start, we = written->items[j].end;
            if (we <= s)
                continue;
            if (ws >= e)
                break;
            if (ws > s && spans_push(out, s, ws) < 0)
                return -1;
            s = we;
        }
        if (s < e && spans_push(out, s, e) < 0)
            return -1;
    }
    return 0;
}

/* Add [start, end) (disjoint from every span) to the sorted spans,
   merging touching neighbours. -1 with an error set. */
static int
spans_insert(spans_t *s, unsigned long long start, unsigned long long end)
{
    Py_ssize_t i = s->count;

    while (i > 0 && s->items[i - 1].start > start)
        i--;
    if (i > 0 && s->items[i - 1].end == start) {
        s->items[i - 1].end = end;
        if (i < s->count && s->items[i].start == end) {
            s->items[i - 1].end = s->items[i].end;
            memmove(&s->items[i], &s->items[i + 1],
                    (size_t)(s->count - i - 1) * sizeof(span_t));
            s->count--;
        }
        return 0;
    }
    if (i < s->count && s->items[i].start == end) {
        s->items[i].start = start;
        return 0;
    }
    if (spans_push(s, 0, 0) < 0)
        return -1;
    memmove(&s->items[i + 1], &s->items[i], (size_t)(s->count - 1 - i) * sizeof(span_t));
    s->items[i].start = start;
    s->items[i].end = end;
    return 0;
}

/* A growing array of iovecs. */
typedef struct {
    struct iovec *items;
    int count, size;
} iovs_t;

static int
iovs_push(iovs_t *v, void *base, size_t len)
{
    if (v->count == v->size) {
        int size = v->size ? v->size * 2 : MAX_BATCH;
        struct iovec *items = PyMem_Realloc(v->items, (size_t)size * sizeof(struct iovec));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        v->items = items;
        v->size = size;
    }
    v->items[v->count].iov_base = base;
    v->items[v->count].iov_len = len;
    v->count++;
    return 0;
}
#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* Write iov[0:n] back to back from offset; 0, or the errno. */
static int
write_all(int fd, struct iovec *iov, int n, unsigned long long offset)
{
    while (n > 0) {
        int part = n > IOV_MAX ? IOV_MAX : n;
        ssize_t done = pwritev(fd, iov, part, (off_t)offset);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        if (done == 0)
            return ENOSPC;
        offset += (unsigned long long)done;
        /* step over what was written, partial iovecs included */
        while (n > 0 && (size_t)done >= iov[0].iov_len) {
            done -= (ssize_t)iov[0].iov_len;
            iov++;
            n--;
        }
        if (n > 0 && done > 0) {
            iov[0].iov_base = (char *)iov[0].iov_base + done;
            iov[0].iov_len -= (size_t)done;
        }
    }
    return 0;
}

/* Close the run iov[first:last): write it, append (start, end, data). */
static int
flush_run(PyObject *runs, int outfd, struct iovec *iov, int first, int last,
          unsigned long long start, unsigned long long end,
          unsigned long long *hashAt, int *error, unsigned long long *at)
{
    PyObject *data = Py_None, *run;
    int i, code;

    if (*error)
        return 0;
    if (start <= *hashAt && *hashAt < end) {
        char *p;
        size_t skip = (size_t)(*hashAt - start);
        data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(end - *hashAt));
        if (data == NULL)
            return -1;
        p = PyBytes_AS_STRING(data);
        for (i = first; i < last; i++) {
            size_t len = iov[i].iov_len;
            if (skip >= len) {
                skip -= len;
                continue;
            }
            memcpy(p, (char *)iov[i].iov_base + skip, len - skip);
            p += len - skip;
            skip = 0;
        }
    } else {
        Py_INCREF(data);
    }
    Py_BEGIN_ALLOW_THREADS
    code = write_all(outfd, iov + first, last - first, start);
    Py_END_ALLOW_THREADS
    if (code) {
        *error = code;
        *at = start;
        Py_DECREF(data);
        return 0;
    }
    if (data != Py_None)
        *hashAt = end;
    run = Py_BuildValue("(KKN)", start, end, data);
    if (run == NULL)
        return -1;
    if (PyList_Append(runs, run) < 0) {
        Py_DECREF(run);
        return -1;
    }
    Py_DECREF(run);
    return 0;
}

static PyObject *
receive_batch(PyObject *self, PyObject *args)
{
    int fd, outfd, n, i, error = 0, first = 0, haveRun = 0;
    Py_ssize_t slot, batch, k;
    unsigned long long session, limit, hashAt, at = 0, runStart = 0, runEnd = 0;
    long roundNumber, rejected = 0, stale = 0, truncated = 0;
    Py_buffer buf, padsBuf;
    PyObject *starts, *ends, *runs = NULL, *peer = NULL, *result = NULL;
    pads_t pads;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec slots[MAX_BATCH];
    struct sockaddr_storage names[MAX_BATCH];
    iovs_t payloads = {NULL, 0, 0};
    spans_t written = {NULL, 0, 0}, parts = {NULL, 0, 0}, scratch = {NULL, 0, 0};

    if (!PyArg_ParseTuple(args, "iw*nnKlKy*OOiK", &fd, &buf, &slot, &batch, &session,
                          &roundNumber, &limit, &padsBuf, &starts, &ends, &outfd, &hashAt))
        return NULL;
    if (take_pads(&padsBuf, &pads, &starts, &ends) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (batch < 1 || batch > MAX_BATCH || slot < OVERHEAD || buf.len < slot * batch) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "receive_batch: bad batch, slot or buffer");
        return NULL;
    }
    memset(msgs, 0, sizeof(msgs[0]) * (size_t)batch);
    for (i = 0; i < batch; i++) {
        slots[i].iov_base = (char *)buf.buf + i * slot;
        slots[i].iov_len = (size_t)slot;
        msgs[i].msg_hdr.msg_iov = &slots[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(names[i]);
    }
    Py_BEGIN_ALLOW_THREADS
    do {
        n = recvmmsg(fd, msgs, (unsigned int)batch, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            n = 0;
        } else {
            PyErr_SetFromErrno(PyExc_OSError);
            PyBuffer_Release(&buf);
            return NULL;
        }
    }
    runs = PyList_New(0);
    if (runs == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        const unsigned char *p = slots[i].iov_base;
        unsigned long long offset = 0, length = 0, end;
        int verdict;

        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
            truncated++;
            continue;
        }
        verdict = check(p, (Py_ssize_t)msgs[i].msg_len, session, roundNumber, limit, &pads,
                        starts, ends, &offset, &length);
        if (verdict == FAILED)
            goto done;
        if (verdict == STALE)
            stale++;
        if (verdict == HELD || verdict == STALE)
            continue;
        end = offset + length;
        if (verdict == REJECTED) {
            rejected++;
            if (peer == NULL) {
                peer = PyBytes_FromStringAndSize((const char *)&names[i],
                                                 (Py_ssize_t)msgs[i].msg_hdr.msg_namelen);
                if (peer == NULL)
                    goto done;
            }
            continue;
        }
        /* only what is neither held nor written earlier in this batch */
        parts.count = 0;
        if (new_parts(starts, ends, &written, offset, end, &parts, &scratch) < 0)
            goto done;
        for (k = 0; k < parts.count; k++) {
            unsigned long long ps = parts.items[k].start, pe = parts.items[k].end;
            if (!(haveRun && ps == runEnd)) {
                if (haveRun && flush_run(runs, outfd, payloads.items, first, payloads.count,
                                         runStart, runEnd, &hashAt, &error, &at) < 0)
                    goto done;
                runStart = ps;
                haveRun = 1;
                first = payloads.count;
            }
            /* the parts written, back to back: a run is payloads[first:] */
            if (iovs_push(&payloads, (char *)p + HEADER_SIZE + (ps - offset),
                          (size_t)(pe - ps)) < 0)
                goto done;
            if (spans_insert(&written, ps, pe) < 0)
                goto done;
            runEnd = pe;
        }
    }
    if (haveRun && flush_run(runs, outfd, payloads.items, first, payloads.count, runStart,
                             runEnd, &hashAt, &error, &at) < 0)
        goto done;
    result = Py_BuildValue("(iOlllOiK)", n, runs, rejected, stale, truncated,
                           peer ? peer : Py_None, error, at);
done:
    PyBuffer_Release(&buf);
    PyMem_Free(payloads.items);
    PyMem_Free(written.items);
    PyMem_Free(parts.items);
    PyMem_Free(scratch.items);
    Py_XDECREF(runs);
    Py_XDECREF(peer);
    return result;
}

/*
 * decode_ranges(body, limit) -> list of (start, end), or None
 *
 * The varint body of a range list (provisioner/imagecast/ranges.py fromWire,
 * after zlib): pairs of (gap from the previous end, length). None for
 * anything that is not a well-formed list within limit (< 0: none), so that
 * the Python loop gives its own error for it.
 */
static PyObject *
decode_ranges(PyObject *self, PyObject *args)
{
    Py_buffer body;
    long long limit;
    const unsigned char *p;
    Py_ssize_t i, count = 0;
    unsigned long long n = 0, gap = 0, prev = 0, start, end;
    int shift = 0, haveGap = 0;
    PyObject *out;

    if (!PyArg_ParseTuple(args, "y*L", &body, &limit))
        return NULL;
    out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&body);
        return NULL;
    }
    p = body.buf;
    for (i = 0; i < body.len; i++) {
        unsigned char b = p[i];
        if (shift > 56)
            goto slow;
        n |= (unsigned long long)(b & 0x7F) << shift;
        if (b & 0x80) {
            shift += 7;
            continue;
        }
        if (!haveGap) {
            gap = n;
            haveGap = 1;
        } else {
            PyObject *pair;
            haveGap = 0;
            if (n == 0 || (count > 0 && gap == 0))
                goto slow;
            start = prev + gap;
            end = start + n;
            if (start < prev || end < start || end > (1ULL << 62)
                    || (limit >= 0 && end > (unsigned long long)limit))
                goto slow;
            pair = Py_BuildValue("(KK)", start, end);
            if (pair == NULL || PyList_Append(out, pair) < 0) {
                Py_XDECREF(pair);
                Py_DECREF(out);
                PyBuffer_Release(&body);
                return NULL;
            }
            Py_DECREF(pair);
            prev = end;
            count++;
        }
        n = 0;
        shift = 0;
    }
    if (shift || haveGap)
        goto slow;
    PyBuffer_Release(&body);
    return out;
slow:
    Py_DECREF(out);
    PyBuffer_Release(&body);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"prepare", prepare, METH_VARARGS, "prepare(key) -> the HMAC-SHA256 key pads' states"},
    {"verify_batch", verify_batch, METH_VARARGS,
     "verify_batch(datagrams, session, round, limit, pads, starts, ends) "
     "-> (runs, rejected, stale)"},
    {"decode_ranges", decode_ranges, METH_VARARGS,
     "decode_ranges(body, limit) -> [(start, end), ...], or None to decode in Python"},
    {"receive_batch", receive_batch, METH_VARARGS,
     "receive_batch(fd, buffer, slot, batch, session, round, limit, pads, starts, ends, "
     "outfd, hash_at) -> (count, runs, rejected, stale, truncated, peer, error, at)"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The image-multicast receiver's hot loop.", -1, methods
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    return PyModule_Create(&module);
}
