#!/usr/bin/env python3
"""Writes a text file as a C++ raw string literal (the built-in bounce classes)."""
import sys

text = open(sys.argv[1], encoding="utf-8").read()
assert ")ringmta_text\"" not in text
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write('R"ringmta_text(' + text + ')ringmta_text"\n')
