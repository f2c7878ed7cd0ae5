#!/usr/bin/env python3
"""The laptop's network to the API server, cuttable: cutproxy.py KUBECONFIG COPY
writes COPY (the kubeconfig with its server through this proxy) and prints
"ready". SIGUSR1 cuts (open connections reset, new ones refused: the laptop
lost its network), SIGUSR2 resumes, SIGTERM ends it. tests/tunnel/tunnellib.py's CutProxy."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tunnel"))
import tunnellib  # noqa: E402

src, dst = sys.argv[1], sys.argv[2]
port = int(re.search(r"server: https://127\.0\.0\.1:(\d+)", open(src).read()).group(1))
proxy = tunnellib.CutProxy("127.0.0.1", port)
proxy.kubeconfig(src, dst)
signal.signal(signal.SIGUSR1, lambda *a: proxy.cut())
signal.signal(signal.SIGUSR2, lambda *a: proxy.resume())
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("ready", flush=True)
# Not signal.pause(): the kernel may deliver a signal to any of the proxy's
# threads, and Python runs its handler only when the main thread next runs
# bytecode; pause() would sleep on (the cut never resumed under load).
while True:
    time.sleep(0.05)
