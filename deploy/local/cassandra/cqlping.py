#!/usr/bin/env python3
"""Tiny CQL (native protocol v4) probe, stdlib only -- no cqlsh/driver needed.

usage: cqlping.py HOST [QUERY] [CONSISTENCY]
Without QUERY it checks that HOST's node sees every other node as alive: a read at CONSISTENCY ALL
of system_traces.sessions (SimpleStrategy, RF 2, so with our two nodes every partition lives on both)
fails with Unavailable unless the coordinator's failure detector marks the peer UP, and it succeeds
only after the peer answered over the internode connection.
QUERY "-" runs each non-empty line of stdin as one statement, in order, on one connection (so a
statement holding a password is never on a command line).
Env (the secured test node, deploy/local/cassandra-secure.sh): CQLPING_CA=PEM file turns TLS on and
verifies the node against it; CQLPING_USER and CQLPING_PASSWORD answer PasswordAuthenticator.
Prints rows as tab-separated text; exits 1 on any error.
"""
import os, socket, ssl, struct, sys, uuid, ipaddress

CONS = {'ONE': 1, 'QUORUM': 4, 'ALL': 5, 'LOCAL_ONE': 10, 'LOCAL_QUORUM': 6}


def readn(s, n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError('connection closed')
        b += c
    return b


def request(s, op, body):
    s.sendall(struct.pack('>BBhBi', 4, 0, 0, op, len(body)) + body)
    _, _, _, rop, ln = struct.unpack('>BBhBi', readn(s, 9))
    return rop, readn(s, ln)


def string(s):
    b = s.encode()
    return struct.pack('>H', len(b)) + b


class Buf:
    def __init__(self, b): self.b, self.i = b, 0
    def take(self, n): v = self.b[self.i:self.i + n]; self.i += n; return v
    def int(self): return struct.unpack('>i', self.take(4))[0]
    def short(self): return struct.unpack('>H', self.take(2))[0]
    def string(self): return self.take(self.short()).decode()
    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)
    def option(self):
        t = self.short()
        if t == 0: self.string()
        elif t in (0x20, 0x22): self.option()
        elif t == 0x21: self.option(); self.option()
        elif t == 0x30: self.string(); self.string(); [(self.string(), self.option()) for _ in range(self.short())]
        elif t == 0x31: [self.option() for _ in range(self.short())]
        return t


def render(t, v):
    if v is None: return 'null'
    if t in (0x0D, 0x0A, 0x01): return v.decode(errors='replace')
    if t == 0x10: return str(ipaddress.ip_address(v))
    if t in (0x0C, 0x0F): return str(uuid.UUID(bytes=v))
    if t == 0x09: return str(struct.unpack('>i', v)[0])
    if t == 0x02: return str(struct.unpack('>q', v)[0])
    return v.hex()


def connect(host):
    s = socket.create_connection((host, 9042), timeout=5)
    ca = os.environ.get('CQLPING_CA')
    if ca:
        s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=host)
    op, body = request(s, 0x01, struct.pack('>H', 1) + string('CQL_VERSION') + string('3.0.0'))
    if op == 0x03:  # AUTHENTICATE: SASL PLAIN
        token = b'\0' + os.environ.get('CQLPING_USER', '').encode() + b'\0' + os.environ.get('CQLPING_PASSWORD', '').encode()
        op, body = request(s, 0x0F, struct.pack('>i', len(token)) + token)
        if op == 0x00:
            b = Buf(body); b.int()
            raise SystemExit(f'{host}: login: {b.string()}')
        if op != 0x10:
            raise SystemExit(f'{host}: AUTH_RESPONSE answered opcode {op}')
    elif op != 0x02:
        raise SystemExit(f'{host}: STARTUP answered opcode {op}')
    return s


def main():
    host = sys.argv[1]
    query = sys.argv[2] if len(sys.argv) > 2 else \
        "SELECT session_id FROM system_traces.sessions WHERE session_id = 00000000-0000-0000-0000-000000000000"
    cons = CONS[(sys.argv[3] if len(sys.argv) > 3 else 'ALL').upper()]
    queries = [l.strip() for l in sys.stdin if l.strip()] if query == '-' else [query]
    with connect(host) as s:
        for query in queries:
            q = query.encode()
            op, body = request(s, 0x07, struct.pack('>i', len(q)) + q + struct.pack('>HB', cons, 0))
            show(host, op, body)


def show(host, op, body):
    b = Buf(body)
    if op == 0x00:
        code = b.int()
        raise SystemExit(f'{host}: error 0x{code:04x}: {b.string()}')
    if op != 0x08:
        raise SystemExit(f'{host}: unexpected opcode {op}')
    if b.int() != 2:  # not Rows (void, schema change...)
        return
    flags, ncol = b.int(), b.int()
    if flags & 2: b.bytes()
    types = []
    if not flags & 4:
        if flags & 1: b.string(); b.string()
        for _ in range(ncol):
            if not flags & 1: b.string(); b.string()
            b.string(); types.append(b.option())
    for _ in range(b.int()):
        print('\t'.join(render(types[i] if types else 0, b.bytes()) for i in range(ncol)))


if __name__ == '__main__':
    try:
        main()
    except (OSError, EOFError) as e:
        raise SystemExit(f'{sys.argv[1]}: {e}')
