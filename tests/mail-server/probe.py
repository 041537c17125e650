#!/usr/bin/env python3
"""Raw protocol probes for the test mail server (stdlib only).

Prints the server's lines, one per line, prefixed with "S: " (and the client's with "C: ",
tokens shortened), so tests can assert on exact replies.

  probe.py imap  PORT CA tls|starttls login USER PASSWORD
  probe.py imap  PORT CA tls|starttls xoauth2|oauthbearer USER TOKEN [oneline|twostep]
  probe.py pop3  PORT CA tls|starttls xoauth2|oauthbearer USER TOKEN [oneline|twostep]
  probe.py pop3  PORT CA tls|starttls user USER PASSWORD
  probe.py smtp  PORT CA tls|starttls xoauth2|oauthbearer USER TOKEN [oneline|twostep]
  probe.py smtp  PORT CA tls|starttls plain USER PASSWORD
  probe.py caps  imap|pop3|smtp PORT       (plain connection: greeting + capabilities)

Exit 0 when authentication succeeded, 1 when it was refused, 2 on a protocol surprise.
"""
import base64
import socket
import ssl
import sys

HOST = "localhost"


def short(s):
    return s if len(s) <= 60 else s[:40] + "...(%d chars)" % len(s)


class Conn:
    def __init__(self, port, ca, implicit_tls):
        self.ctx = ssl.create_default_context(cafile=ca) if ca else None
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = self.ctx.wrap_socket(raw, server_hostname=HOST) if implicit_tls else raw
        self.f = self.sock.makefile("rb")

    def starttls(self):
        self.sock = self.ctx.wrap_socket(self.sock, server_hostname=HOST)
        self.f = self.sock.makefile("rb")

    def send(self, line):
        print("C: " + short(line), flush=True)
        self.sock.sendall(line.encode() + b"\r\n")

    def line(self):
        raw = self.f.readline()
        if not raw:
            print("S: <connection closed>", flush=True)
            raise EOFError
        s = raw.decode(errors="replace").rstrip("\r\n")
        print("S: " + s, flush=True)
        return s


def sasl_ir(mech, user, token, port):
    if mech == "xoauth2":
        raw = "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)
    elif mech == "oauthbearer":
        raw = "n,a=%s,\x01host=%s\x01port=%d\x01auth=Bearer %s\x01\x01" % (user, HOST, port, token)
    elif mech == "plain":
        raw = "\x00%s\x00%s" % (user, token)
    else:
        raise SystemExit("unknown mechanism " + mech)
    return base64.b64encode(raw.encode()).decode()


def imap(port, ca, mode, mech, user, secret, form="oneline"):
    c = Conn(port, ca, mode == "tls")
    c.line()
    if mode == "starttls":
        c.send("s STARTTLS")
        while not c.line().startswith("s "):
            pass
        c.starttls()
    if mech == "login":
        c.send('a LOGIN "%s" "%s"' % (user, secret))
    else:
        ir = sasl_ir(mech, user, secret, port)
        if form == "oneline":
            c.send("a AUTHENTICATE %s %s" % (mech.upper(), ir))
        else:
            c.send("a AUTHENTICATE %s" % mech.upper())
            if not c.line().startswith("+"):
                return 2
            c.send(ir)
    while True:
        s = c.line()
        if s.startswith("+"):
            # failure challenge (JSON error): answer as RFC 7628 says
            c.send(base64.b64encode(b"\x01").decode() if mech == "oauthbearer" else "")
            continue
        if s.startswith("a "):
            ok = s.startswith("a OK")
            break
    if ok:
        c.send("b SELECT INBOX")
        while not c.line().startswith("b "):
            pass
    c.send("z LOGOUT")
    return 0 if ok else 1


def pop3(port, ca, mode, mech, user, secret, form="twostep"):
    c = Conn(port, ca, mode == "tls")
    c.line()
    if mode == "starttls":
        c.send("STLS")
        c.line()
        c.starttls()
    if mech == "user":
        c.send("USER " + user)
        c.line()
        c.send("PASS " + secret)
    else:
        ir = sasl_ir(mech, user, secret, port)
        if form == "oneline":
            c.send("AUTH %s %s" % (mech.upper(), ir))
        else:
            c.send("AUTH %s" % mech.upper())
            if not c.line().startswith("+"):
                return 2
            c.send(ir)
    while True:
        s = c.line()
        if s.startswith("+ ") or s == "+":
            c.send("AQ==" if mech == "oauthbearer" else "")
            continue
        ok = s.startswith("+OK")
        break
    if ok:
        c.send("STAT")
        c.line()
    c.send("QUIT")
    try:
        c.line()
    except EOFError:
        pass
    return 0 if ok else 1


def smtp_reply(c):
    lines = []
    while True:
        s = c.line()
        lines.append(s)
        if len(s) < 4 or s[3] != "-":
            return s[:3], lines


def smtp(port, ca, mode, mech, user, secret, form="twostep"):
    c = Conn(port, ca, mode == "tls")
    smtp_reply(c)
    c.send("EHLO probe.localhost")
    smtp_reply(c)
    if mode == "starttls":
        c.send("STARTTLS")
        smtp_reply(c)
        c.starttls()
        c.send("EHLO probe.localhost")
        smtp_reply(c)
    ir = sasl_ir(mech, user, secret, port)
    if form == "oneline":
        c.send("AUTH %s %s" % (mech.upper(), ir))
    else:
        c.send("AUTH %s" % mech.upper())
        code, _ = smtp_reply(c)
        if code != "334":
            return 1
        c.send(ir)
    try:
        while True:
            code, _ = smtp_reply(c)
            if code == "334":
                c.send("AQ==" if mech == "oauthbearer" else "")
                continue
            break
        c.send("QUIT")
        smtp_reply(c)
    except EOFError:
        return 1
    return 0 if code == "235" else 1


def caps(proto, port):
    c = Conn(port, None, False)
    if proto == "imap":
        c.line()
        c.send("a CAPABILITY")
        while not c.line().startswith("a "):
            pass
    elif proto == "pop3":
        c.line()
        c.send("CAPA")
        while c.line() != ".":
            pass
    else:
        smtp_reply(c)
        c.send("EHLO probe.localhost")
        smtp_reply(c)
    return 0


def main(argv):
    if argv[0] == "caps":
        return caps(argv[1], int(argv[2]))
    proto, port, ca, mode, mech, user, secret = argv[:7]
    rest = argv[7:]
    fn = {"imap": imap, "pop3": pop3, "smtp": smtp}[proto]
    try:
        return fn(int(port), ca, mode, mech, user, secret, *rest)
    except EOFError:
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
