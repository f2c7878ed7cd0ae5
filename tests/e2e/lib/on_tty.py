#!/usr/bin/env python3
"""on_tty.py [--answer PROMPT=REPLY] CMD [ARG...]: run CMD on a pseudo-terminal
(as a user at a terminal would), write what it printed to stdout, then a last
line "exit N". With --answer, REPLY and a newline are typed once PROMPT has
appeared. The environment is passed on (set USER, XDG_STATE_HOME... before)."""
import os
import pty
import sys

args = sys.argv[1:]
prompt = reply = None
if args and args[0] == "--answer":
    prompt, _, reply = args[1].partition("=")
    prompt, reply, args = prompt.encode(), reply.encode(), args[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(args[0], args)
data = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:   # EIO: the child closed the terminal
        break
    if not chunk:
        break
    data += chunk
    if prompt and prompt in data:
        os.write(fd, reply + b"\n")
        prompt = None
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(data)
print("\nexit", os.waitstatus_to_exitcode(status))
