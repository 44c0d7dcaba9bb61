#!/bin/sh
#
# check-symbols.sh INCLUDE_DIR LIBAIOLOOP_SO
#
# The shared library must export exactly what the public headers declare
# with AIOLOOP_API: the dynamic symbols it defines (nm -D --defined-only,
# without the version node) are compared with the functions and variables
# declared AIOLOOP_API in INCLUDE_DIR/aioloop/*.h (comments and preprocessor
# lines stripped first).  A symbol on one side only fails, with the list.
# POSIX sh: meson runs this with "sh".
#
# Exit status: 0 equal, 1 different (or an error), 77 skipped (no nm or
# python3).

set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 INCLUDE_DIR LIBAIOLOOP_SO" >&2
    exit 1
fi
incdir=$1
lib=$2

for tool in nm python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not installed"
        exit 77
    fi
done
if [ ! -f "$lib" ]; then
    echo "FAIL: no shared library at $lib"
    exit 1
fi

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# "ADDRESS TYPE NAME[@[@]VERSION]"; type A is the version node itself.
if ! nm -D --defined-only "$lib" >"$tmp/nm.out" 2>"$tmp/nm.err"; then
    echo "FAIL: nm -D $lib:"
    cat "$tmp/nm.err"
    exit 1
fi
awk 'NF >= 3 && $2 != "A" { sub(/@.*/, "", $3); print $3 }' "$tmp/nm.out" |
    sort -u >"$tmp/exported"

python3 - "$incdir" >"$tmp/declared" <<'PY' || exit 1
import glob
import os
import re
import sys

incdir = sys.argv[1]
headers = sorted(glob.glob(os.path.join(incdir, "aioloop", "**", "*.h"),
                           recursive=True))
if not headers:
    sys.exit("FAIL: no headers under %s/aioloop" % incdir)


def strip(text):
    # Comments and string/char literals out (a "/*" inside a string must not
    # start a comment); keep newlines so that line-based steps still work.
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j) or " ")
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    text = "".join(out)
    # Preprocessor directives, with their continuation lines.
    text = re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", "", text, flags=re.M)
    return text


def drop_parenthesised(text, start):
    """Remove text[start:] up to the ')' matching the first '(' after start."""
    i = text.index("(", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return text[:start] + " " + text[j + 1:]
    raise ValueError("unbalanced parentheses")


IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
declared = set()
errors = []
for path in headers:
    text = strip(open(path, encoding="utf-8").read())
    for m in re.finditer(r"\bAIOLOOP_API\b", text):
        # The declaration runs from the previous statement boundary to ';'.
        begin = max(text.rfind(ch, 0, m.start()) for ch in ";{}") + 1
        end = text.find(";", m.end())
        if end < 0:
            errors.append("%s: AIOLOOP_API without ';'" % path)
            continue
        decl = text[begin:end].replace("AIOLOOP_API", " ")
        # Attributes and upper-case attribute macros with arguments
        # (__attribute__((...)), AIOLOOP_PRINTF(1, 2)) are not names.
        while True:
            a = re.search(r"\b(__attribute__|__asm__|asm|[A-Z][A-Z0-9_]*)\s*\(",
                          decl)
            if not a:
                break
            decl = drop_parenthesised(decl, a.start())
        if "(" in decl:
            # A function: the identifier right before the first '(', unless
            # that parenthesis holds the declarator of a function pointer
            # variable, "(*name)(...)".
            paren = decl.index("(")
            ptr = re.match(r"\(\s*\*+\s*(" + IDENT + r")\s*\)", decl[paren:])
            names = re.findall(IDENT, decl[:paren])
            if ptr:
                name = ptr.group(1)
            else:
                name = names[-1] if names else None
        else:
            # A variable: the last identifier, array bounds dropped.
            names = re.findall(IDENT, re.sub(r"\[[^]]*\]", "", decl))
            name = names[-1] if names else None
        if not name:
            errors.append("%s: cannot find the name in: %s"
                          % (path, " ".join(decl.split())))
            continue
        declared.add(name)

for e in errors:
    print(e, file=sys.stderr)
for name in sorted(declared):
    print(name)
sys.exit(1 if errors else 0)
PY

LC_ALL=C sort -u "$tmp/declared" -o "$tmp/declared"
LC_ALL=C sort -u "$tmp/exported" -o "$tmp/exported"
LC_ALL=C comm -23 "$tmp/exported" "$tmp/declared" >"$tmp/extra"
LC_ALL=C comm -13 "$tmp/exported" "$tmp/declared" >"$tmp/missing"

status=0
if [ -s "$tmp/extra" ]; then
    echo "FAIL: exported by $(basename "$lib") but not declared AIOLOOP_API in a public header:"
    sed 's/^/    /' "$tmp/extra"
    status=1
fi
if [ -s "$tmp/missing" ]; then
    echo "FAIL: declared AIOLOOP_API in a public header but not exported by $(basename "$lib"):"
    sed 's/^/    /' "$tmp/missing"
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "PASS: $(wc -l <"$tmp/exported") exported symbols match the headers"
fi
exit "$status"
