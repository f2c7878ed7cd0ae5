"""Put one section into bench/RESULTS.md, leaving the others as they are.

A section starts with its "## " heading line; the section of that heading
(up to the next "## " heading) is replaced, or the section is appended.

    python3 bench/lib/results.py RESULTS.md < section.md     (from a shell script)
    from results import write_section                           (from Python)
"""
import os
import re
import sys


def write_section(path, section):
    section = section.strip("\n") + "\n"
    heading = section.split("\n", 1)[0]
    if not heading.startswith("## "):
        raise ValueError("a section starts with its '## ' heading, not %r" % heading)
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmark results\n"
    pattern = re.compile("^" + re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    write_section(sys.argv[1], sys.stdin.read())
