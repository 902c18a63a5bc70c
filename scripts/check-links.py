#!/usr/bin/env python3
"""Checks the links of the repository's Markdown files (scripts/test.sh runs it).

  scripts/check-links.py [FILE.md...]   default: every *.md git tracks (README.md, docs/, ...)

A relative link must name a file or directory that exists inside the repository (`../` is
fine while it stays inside), and a `#fragment` must name a heading of the file it points to
(GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats).
Absolute paths (`/...`), `file:` URLs and links that leave the repository are errors; links
with a scheme (https:, mailto:) are not followed. Links inside code spans and fenced code
blocks are not links. Prints one line per broken link and exits 1 when there is one.
"""
import os
import re
import subprocess
import sys
from urllib.parse import unquote

ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z", "*.md"], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(ROOT):
            dirs[:] = [x for x in dirs if not x.startswith(".") and x != "target"]
            files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names if n.endswith(".md")]
    return sorted(os.path.join(ROOT, f) for f in files)


def prose_lines(text):
    """(line number, line) outside fenced code blocks, with code spans blanked."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
                continue
            if mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark):].strip():
                fence = None
                continue
        if fence is not None:
            continue
        yield n, re.sub(r"(`+)(.+?)\1", lambda s: " " * len(s.group(0)), line)


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"<[^>]+>", "", s)
    s = re.sub(r"[^\w\- ]", "", s)  # GitHub keeps letters, digits, _, - and spaces
    return s.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, found = {}, set()
        with open(path, encoding="utf-8") as f:
            text = f.read()
        fence = None
        for line in text.split("\n"):
            m = FENCE.match(line)
            if m:
                if fence is None:
                    fence = m.group(1)
                elif m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                    fence = None
                continue
            if fence is not None:
                continue
            h = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not h:
                continue
            base = slug(h.group(1))
            k = seen.get(base, 0)
            seen[base] = k + 1
            found.add(base if k == 0 else f"{base}-{k}")
        cache[path] = found
    return cache[path]


def check(path):
    errors = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    rel = os.path.relpath(path, ROOT)
    for n, line in prose_lines(text):
        targets = [m.group(1) for m in INLINE.finditer(line)]
        m = REFDEF.match(line)
        if m:
            targets.append(m.group(1))
        for t in targets:
            where = f"{rel}:{n}: {t or '(empty)'}"
            if not t:
                errors.append(f"{where}: empty link")
                continue
            if t.lower().startswith("file:"):
                errors.append(f"{where}: file: URL")
                continue
            if SCHEME.match(t):
                continue  # https:, mailto:, ...: not followed
            target, _, frag = t.partition("#")
            target = unquote(target)
            if target.startswith("/"):
                errors.append(f"{where}: absolute path (links must be relative, inside the repository)")
                continue
            dest = os.path.realpath(os.path.join(os.path.dirname(path), target)) if target else path
            if os.path.commonpath([dest, ROOT]) != ROOT:
                errors.append(f"{where}: leaves the repository")
                continue
            if not os.path.exists(dest):
                errors.append(f"{where}: no such file or directory")
                continue
            if frag and dest.endswith(".md") and os.path.isfile(dest):
                if unquote(frag).lower() not in anchors(dest):
                    errors.append(f"{where}: no heading for #{frag} in {os.path.relpath(dest, ROOT)}")
    return errors


def main(argv):
    files = [os.path.realpath(a) for a in argv] if argv else markdown_files()
    errors = []
    for f in files:
        errors += check(f)
    for e in errors:
        print(e)
    if errors:
        print(f"check-links: {len(errors)} broken link(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"check-links: {len(files)} file(s), every link resolves inside the repository")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
