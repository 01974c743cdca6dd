"""A status badge as SVG, in the style of shields.io: a grey label, then the figures on the verdict's colour.

    badge("mail round trip", "2.1 s \u00b7 99.9 %", "green")

The text widths are estimated from DejaVu Sans / Verdana at 11 px, so the
badge needs no font metrics and no external resource.
"""

from __future__ import annotations

from html import escape

COLOURS = {"green": "#3c9a1f", "amber": "#d9a400", "red": "#d23f31", "grey": "#8a8a8a"}
LABEL_COLOUR = "#555"
HEIGHT = 20
PAD = 6
# advance widths in px at 11 px for the characters a badge shows; others count as WIDE
_NARROW = dict.fromkeys(" .,:;!|'\u00b7()[]ijlt-", 3.6)
_DIGIT = dict.fromkeys("0123456789", 7.0)
_WIDE = dict.fromkeys("%mwMW@", 10.5)
WIDE = 7.2


def text_width(text: str) -> float:
    """The width in px that *text* takes at 11 px."""
    return sum(_NARROW.get(c) or _DIGIT.get(c) or _WIDE.get(c) or WIDE for c in text)


def badge(label: str, value: str, verdict: str) -> str:
    """The SVG of a badge with *label* on grey and *value* on the colour of *verdict* (green/amber/red/grey)."""
    left = round(text_width(label) + 2 * PAD)
    right = round(text_width(value) + 2 * PAD)
    width = left + right
    colour = COLOURS.get(verdict, COLOURS["grey"])
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{title}">'
        "<title>{title}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        '<clipPath id="r"><rect width="{w}" height="{h}" rx="3" fill="#fff"/></clipPath>'
        '<g clip-path="url(#r)"><rect width="{l}" height="{h}" fill="{lc}"/>'
        '<rect x="{l}" width="{r}" height="{h}" fill="{c}"/><rect width="{w}" height="{h}" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        '<text x="{lx}" y="15" fill="#010101" fill-opacity=".3">{label}</text><text x="{lx}" y="14">{label}</text>'
        '<text x="{rx}" y="15" fill="#010101" fill-opacity=".3">{value}</text><text x="{rx}" y="14">{value}</text>'
        "</g></svg>\n"
    ).format(w=width, h=HEIGHT, l=left, r=right, lc=LABEL_COLOUR, c=colour, lx=left / 2, rx=left + right / 2,
             label=escape(label), value=escape(value), title=escape("%s: %s" % (label, value)))
