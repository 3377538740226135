"""The peer port's cluster-key protocol (src/net/auth.h) played from outside the C code:
the handshake and sealed frames, through OpenSSL's libcrypto (ctypes) and hmac."""
import ctypes
import ctypes.util
import hashlib
import hmac
import os


def _libcrypto():
    lib = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
    lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    lib.EVP_aes_256_gcm.restype = ctypes.c_void_p
    lib.EVP_EncryptInit_ex.argtypes = [ctypes.c_void_p] * 5
    lib.EVP_EncryptUpdate.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.c_int), ctypes.c_char_p,
                                      ctypes.c_int]
    lib.EVP_EncryptFinal_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.POINTER(ctypes.c_int)]
    lib.EVP_CIPHER_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                        ctypes.c_void_p]
    lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    return lib


CRYPTO = _libcrypto()


def seal(ek, seq, frame):
    """header | AES-256-GCM(body, aad = header) | tag, as src/net/auth.c seals frame seq,
    through OpenSSL's libcrypto (the test's own implementation of the protocol)."""
    iv = bytes(4) + seq.to_bytes(8, "big")
    ctx = CRYPTO.EVP_CIPHER_CTX_new()
    n = ctypes.c_int(0)
    body = ctypes.create_string_buffer(max(1, len(frame) - 5))
    fin = ctypes.create_string_buffer(16)
    tag = ctypes.create_string_buffer(16)
    assert CRYPTO.EVP_EncryptInit_ex(ctx, CRYPTO.EVP_aes_256_gcm(), None, ek, iv) == 1
    assert CRYPTO.EVP_EncryptUpdate(ctx, None, ctypes.byref(n), frame[:5], 5) == 1
    if len(frame) > 5:
        assert CRYPTO.EVP_EncryptUpdate(ctx, body, ctypes.byref(n), frame[5:],
                                        len(frame) - 5) == 1
    assert CRYPTO.EVP_EncryptFinal_ex(ctx, fin, ctypes.byref(n)) == 1
    assert CRYPTO.EVP_CIPHER_CTX_ctrl(ctx, 0x10, 16, tag) == 1  # EVP_CTRL_GCM_GET_TAG
    CRYPTO.EVP_CIPHER_CTX_free(ctx)
    return frame[:5] + body.raw[:len(frame) - 5] + tag.raw


def handshake(sock, key, acceptor):
    """The connector's side of the handshake (src/net/auth.h): reads the acceptor's nonce;
    returns the session key S, the frame key E and the hello to send."""
    na = b""
    while len(na) < 16:
        more = sock.recv(16 - len(na))
        if not more:
            raise OSError("closed before the nonce")
        na += more
    nc = os.urandom(16)
    s = hmac.new(key, b"ringnet session v2\0" + na + nc + acceptor.encode(),
                 hashlib.sha256).digest()
    ek = hmac.new(s, b"seal", hashlib.sha256).digest()
    return s, ek, nc + hmac.new(s, b"hello", hashlib.sha256).digest()


def sealed_session(sock, key, acceptor, frames):
    """Plays the connector's side of the handshake and sends frames (a list, or a function
    of S giving one); returns every byte sent after the nonce, for a replay."""
    s, ek, out = handshake(sock, key, acceptor)
    for seq, fr in enumerate(frames(s) if callable(frames) else frames):
        out += seal(ek, seq, fr)
    sock.sendall(out)
    return out
