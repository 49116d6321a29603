"""Reads a DOCX with python-docx as a user's script would and prints what it finds as JSON:
each paragraph's style name (or the error reading it) and text, and the tables' sizes."""
import json
import sys

import docx

document = docx.Document(sys.argv[1])
paragraphs = []
for p in document.paragraphs:
    try:
        style = p.style.name
    except Exception as e:  # what a user's script would crash on
        style = "ERROR: %s: %s" % (type(e).__name__, e)
    paragraphs.append({"style": style, "text": p.text})
tables = [{"rows": len(t.rows), "columns": len(t.columns)} for t in document.tables]
print(json.dumps({"paragraphs": paragraphs, "tables": tables}))
