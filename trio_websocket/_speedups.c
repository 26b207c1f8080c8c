/* Compiled helpers for trio_websocket's hot path.
 *
 * apply_mask(data, mask) -> bytearray
 *     XOR every byte of `data` (any bytes-like object) with the 4-byte
 *     `mask` repeated from its first byte: the masking of RFC 6455 section
 *     5.3, which is its own inverse. Eight bytes at a time.
 *
 * Optional: setup.py builds it when a compiler is present, and
 * trio_websocket/_masking.py falls back to pure Python otherwise. Both give
 * the same results; tests compare them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "apply_mask(data, mask) takes 2 arguments");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be exactly 4 bytes");
        goto done;
    }
    result = PyByteArray_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    {
        const unsigned char *in = (const unsigned char *)data.buf;
        const unsigned char *key = (const unsigned char *)mask.buf;
        unsigned char *out = (unsigned char *)PyByteArray_AS_STRING(result);
        Py_ssize_t n = data.len, i = 0;
        unsigned char wide_key[8];
        uint64_t key64, chunk;

        for (int j = 0; j < 8; j++) {
            wide_key[j] = key[j & 3];
        }
        memcpy(&key64, wide_key, 8);
        for (; i + 8 <= n; i += 8) {
            memcpy(&chunk, in + i, 8);
            chunk ^= key64;
            memcpy(out + i, &chunk, 8);
        }
        for (; i < n; i++) {
            out[i] = in[i] ^ key[i & 3];
        }
    }
done:
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask) -> bytearray: XOR data with the repeated 4-byte mask."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "trio_websocket._speedups",
    "Compiled helpers for trio_websocket (optional).",
    -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
