/* Compiled helpers for trio_websocket's hot path: the masking of RFC 6455
 * section 5.3, XOR with a 4-byte key repeated over the payload, which is
 * its own inverse (masking and unmasking are the same operation).
 *
 * apply_mask(data, mask, offset=0) -> bytearray
 *     `data` (any bytes-like object) masked, as a new bytearray.
 * apply_mask_bytes(data, mask, offset=0) -> bytes
 *     The same, as a new bytes object: the received payload wsproto wants,
 *     made with one copy (its `bytes()` of it is then no copy).
 * apply_mask_joined(pieces, mask, offset=0) -> bytes
 *     The pieces of one payload (an iterable of bytes-like objects, e.g. the
 *     reads a frame spans) masked and joined into one new bytes object, in
 *     one pass: the result is written once, never assembled first.
 *
 * scan_data_run(data, position, stream_id, max_frame_size, limit)
 *         -> (bytes, int, bool)
 *     HTTP/2 (RFC 9113): from the frame header at `position` of `data`, the
 *     DATA frames of `stream_id` that follow each other whole (see
 *     trio_websocket/_h2/frame_guard.py for the rules, and its pure-Python
 *     twin): their data joined in one new bytes object, where the run ends,
 *     and whether its last frame ended the stream.
 *
 * Rules:
 * - `offset` is where `data` (or the first piece) starts in the payload:
 *   byte i is XORed with mask[(offset + i) % 4], so a payload handed over
 *   in pieces is unmasked by passing on the count of bytes done so far.
 *   Only offset % 4 matters (a negative offset counts as Python's % does).
 * - Input buffers are only read: read-only ones are fine. Non-contiguous
 *   ones (a strided memoryview) are read in C order, as bytes() reads them.
 *   Anything that is not a bytes-like object is a TypeError, a mask that is
 *   not 4 bytes a ValueError; nothing is half-done on error and every
 *   buffer acquired is released on every path.
 * - Optional: setup.py builds it when a compiler is present and
 *   trio_websocket/_wire/masking.py falls back to pure Python otherwise. Both
 *   give the same results; tests compare them with each other and with
 *   wsproto's own masker.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Pieces up to this many are described on the stack, more on the heap. */
#define STACK_PIECES 8

/* XOR `n` bytes of `in` into `out` (which may be `in`) with `key`, the
 * first byte taking key[phase]. Returns the phase of the byte after. */
static unsigned int
xor_run(unsigned char *out, const unsigned char *in, Py_ssize_t n,
        const unsigned char key[4], unsigned int phase)
{
    unsigned char wide_key[8];
    uint64_t key64, a, b, c, d;
    Py_ssize_t i = 0;

    for (int j = 0; j < 8; j++) {
        wide_key[j] = key[(phase + (unsigned int)j) & 3];
    }
    memcpy(&key64, wide_key, 8);
    /* 32 bytes a step: four independent words the compiler can keep in
     * registers or vectorize; memcpy keeps unaligned access defined. */
    for (; i + 32 <= n; i += 32) {
        memcpy(&a, in + i, 8);
        memcpy(&b, in + i + 8, 8);
        memcpy(&c, in + i + 16, 8);
        memcpy(&d, in + i + 24, 8);
        a ^= key64;
        b ^= key64;
        c ^= key64;
        d ^= key64;
        memcpy(out + i, &a, 8);
        memcpy(out + i + 8, &b, 8);
        memcpy(out + i + 16, &c, 8);
        memcpy(out + i + 24, &d, 8);
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(&a, in + i, 8);
        a ^= key64;
        memcpy(out + i, &a, 8);
    }
    for (; i < n; i++) {
        out[i] = in[i] ^ wide_key[i & 7];
    }
    return (unsigned int)((phase + (size_t)n) & 3);
}

/* Write the bytes of `view` (C order) masked to `out`, which has room for
 * view->len bytes. Returns the next phase, or -1 with an exception set. */
static int
mask_view_into(unsigned char *out, Py_buffer *view, const unsigned char key[4],
               unsigned int phase)
{
    if (PyBuffer_IsContiguous(view, 'C')) {
        return (int)xor_run(out, (const unsigned char *)view->buf, view->len, key, phase);
    }
    /* Strided: gather it into place first, then mask it there. */
    if (PyBuffer_ToContiguous(out, view, view->len, 'C') < 0) {
        return -1;
    }
    return (int)xor_run(out, out, view->len, key, phase);
}

/* Read the 4-byte mask of `obj` into `key`. Returns 0, or -1 with an
 * exception set. */
static int
read_key(PyObject *obj, unsigned char key[4])
{
    Py_buffer view;
    int ok;

    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    ok = view.len == 4;
    if (ok) {
        memcpy(key, view.buf, 4);
    }
    PyBuffer_Release(&view);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "mask must be exactly 4 bytes");
        return -1;
    }
    return 0;
}

/* Parse (first, mask[, offset]) into `key` and `phase`. Returns 0, or -1
 * with an exception set. */
static int
parse_mask_args(const char *name, PyObject *const *args, Py_ssize_t nargs,
                unsigned char key[4], unsigned int *phase)
{
    Py_ssize_t offset = 0;

    if (nargs < 2 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 or 3 arguments (%zd given)", name, nargs);
        return -1;
    }
    if (nargs == 3) {
        if (!PyLong_Check(args[2])) {
            PyErr_Format(PyExc_TypeError, "%s() offset must be an int, not %.100s", name,
                         Py_TYPE(args[2])->tp_name);
            return -1;
        }
        offset = PyLong_AsSsize_t(args[2]);
        if (offset == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (read_key(args[1], key) < 0) {
        return -1;
    }
    /* Two's complement: x & 3 == x % 4 in Python's sense, negatives too. */
    *phase = (unsigned int)((size_t)offset & 3);
    return 0;
}

/* apply_mask and apply_mask_bytes: one buffer into a new object made by
 * `make` (PyByteArray_FromStringAndSize or PyBytes_FromStringAndSize). */
static PyObject *
mask_one(const char *name, PyObject *(*make)(const char *, Py_ssize_t),
         PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    unsigned int phase;
    Py_buffer data;
    PyObject *result;
    char *out;

    if (parse_mask_args(name, args, nargs, key, &phase) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_FULL_RO) < 0) {
        return NULL;
    }
    result = make(NULL, data.len);
    if (result != NULL && data.len) {
        out = PyByteArray_Check(result) ? PyByteArray_AS_STRING(result)
                                        : PyBytes_AS_STRING(result);
        if (mask_view_into((unsigned char *)out, &data, key, phase) < 0) {
            Py_CLEAR(result);
        }
    }
    PyBuffer_Release(&data);
    return result;
}

static PyObject *
apply_mask(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return mask_one("apply_mask", PyByteArray_FromStringAndSize, args, nargs);
}

static PyObject *
apply_mask_bytes(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return mask_one("apply_mask_bytes", PyBytes_FromStringAndSize, args, nargs);
}

static PyObject *
apply_mask_joined(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    unsigned int phase;
    Py_buffer stack_views[STACK_PIECES];
    Py_buffer *views = stack_views;
    Py_ssize_t count, acquired = 0, total = 0, i;
    PyObject *pieces, *result = NULL;
    unsigned char *out;
    int next;

    if (parse_mask_args("apply_mask_joined", args, nargs, key, &phase) < 0) {
        return NULL;
    }
    if (PyObject_CheckBuffer(args[0])) {
        /* One bytes-like object would otherwise be read as its ints. */
        PyErr_SetString(PyExc_TypeError,
                        "apply_mask_joined() takes an iterable of bytes-like objects, "
                        "not a single one");
        return NULL;
    }
    /* A tuple holds its pieces fixed and alive while they are read (a
     * list could be changed by a buffer exporter's Python code). For a
     * tuple this is the same object; for a list, a copy of its pointers. */
    pieces = PySequence_Tuple(args[0]);
    if (pieces == NULL) {
        return NULL;
    }
    count = PyTuple_GET_SIZE(pieces);
    if (count > STACK_PIECES) {
        views = PyMem_New(Py_buffer, count);
        if (views == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    /* Hold every piece's buffer from sizing to copying, so none can be
     * resized in between. */
    for (acquired = 0; acquired < count; acquired++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(pieces, acquired), &views[acquired],
                               PyBUF_FULL_RO) < 0) {
            goto done;
        }
        if (views[acquired].len > PY_SSIZE_T_MAX - total) {
            acquired++; /* release this one too */
            PyErr_SetString(PyExc_OverflowError, "joined pieces are too large");
            goto done;
        }
        total += views[acquired].len;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        goto done;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    for (i = 0; i < count; i++) {
        next = mask_view_into(out, &views[i], key, phase);
        if (next < 0) {
            Py_CLEAR(result);
            goto done;
        }
        phase = (unsigned int)next;
        out += views[i].len;
    }
done:
    for (i = 0; i < acquired; i++) {
        PyBuffer_Release(&views[i]);
    }
    if (views != stack_views) {
        PyMem_Free(views);
    }
    Py_DECREF(pieces);
    return result;
}

/* The size of an HTTP/2 frame header, and the bits of it read here. */
#define H2_HEADER 9
#define H2_DATA 0x0
#define H2_END_STREAM 0x1
#define H2_PADDED 0x8

/* Read argument `i` as a non-negative Py_ssize_t. Returns -1 with an
 * exception set otherwise. */
static Py_ssize_t
size_argument(PyObject *const *args, Py_ssize_t i, const char *what)
{
    Py_ssize_t value;

    if (!PyLong_Check(args[i])) {
        PyErr_Format(PyExc_TypeError, "scan_data_run() %s must be an int, not %.100s", what,
                     Py_TYPE(args[i])->tp_name);
        return -1;
    }
    value = PyLong_AsSsize_t(args[i]);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0) {
        PyErr_Format(PyExc_ValueError, "scan_data_run() %s must not be negative", what);
        return -1;
    }
    return value;
}

static PyObject *
scan_data_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t position, stream_id, max_frame_size, limit, size, at, total = 0, frames = 0;
    Py_ssize_t length, i;
    const unsigned char *buf, *header;
    unsigned long id;
    int ended = 0;
    PyObject *payload, *end, *result;
    char *out;

    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "scan_data_run() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if ((position = size_argument(args, 1, "position")) < 0 ||
        (stream_id = size_argument(args, 2, "stream_id")) < 0 ||
        (max_frame_size = size_argument(args, 3, "max_frame_size")) < 0 ||
        (limit = size_argument(args, 4, "limit")) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    buf = (const unsigned char *)view.buf;
    size = view.len;
    if (position > size) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan_data_run() position is past the data");
        return NULL;
    }
    /* First the run's extent, then its data copied in one go. */
    at = position;
    while (size - at >= H2_HEADER) {
        header = buf + at;
        length = ((Py_ssize_t)header[0] << 16) | ((Py_ssize_t)header[1] << 8) | header[2];
        id = ((unsigned long)(header[5] & 0x7F) << 24) | ((unsigned long)header[6] << 16) |
             ((unsigned long)header[7] << 8) | header[8];
        if (header[3] != H2_DATA || (Py_ssize_t)id != stream_id || header[4] & H2_PADDED ||
            length > max_frame_size || (length == 0 && !(header[4] & H2_END_STREAM)) ||
            length > size - at - H2_HEADER || length > limit - total) {
            break;
        }
        total += length;
        at += H2_HEADER + length;
        frames++;
        if (header[4] & H2_END_STREAM) {
            ended = 1;
            break;
        }
    }
    payload = PyBytes_FromStringAndSize(NULL, total);
    if (payload == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    out = PyBytes_AS_STRING(payload);
    header = buf + position;
    for (i = 0; i < frames; i++) {
        length = ((Py_ssize_t)header[0] << 16) | ((Py_ssize_t)header[1] << 8) | header[2];
        memcpy(out, header + H2_HEADER, (size_t)length);
        out += length;
        header += H2_HEADER + length;
    }
    PyBuffer_Release(&view);
    end = PyLong_FromSsize_t(at);
    if (end == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    result = PyTuple_Pack(3, payload, end, ended ? Py_True : Py_False);
    Py_DECREF(payload);
    Py_DECREF(end);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask, offset=0) -> bytearray: data XORed with the repeated "
     "4-byte mask, starting at mask[offset % 4]."},
    {"apply_mask_bytes", (PyCFunction)(void (*)(void))apply_mask_bytes, METH_FASTCALL,
     "apply_mask_bytes(data, mask, offset=0) -> bytes: as apply_mask, as bytes."},
    {"apply_mask_joined", (PyCFunction)(void (*)(void))apply_mask_joined, METH_FASTCALL,
     "apply_mask_joined(pieces, mask, offset=0) -> bytes: the pieces joined and "
     "masked as one payload, in one pass."},
    {"scan_data_run", (PyCFunction)(void (*)(void))scan_data_run, METH_FASTCALL,
     "scan_data_run(data, position, stream_id, max_frame_size, limit) -> (bytes, int, bool): "
     "the data of the whole HTTP/2 DATA frames of one stream from position, joined."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "trio_websocket._speedups",
    "Compiled helpers for trio_websocket (optional).",
    -1,
    speedups_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
