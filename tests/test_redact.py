"""redact(): no capability survives it, whatever surrounds the capability, and it cuts only once."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.store.tahoe import redact

CAP = "URI:DIR2:gqzl4y3cimw6k2opcnnhtwn4ry:tu4dc7nbfssjmv3n6vfqvo4upwjzy3mfzgeahbyc3tvssbrgrl3q"
CUT = "URI:DIR2:gqzl…"


def test_a_cap_followed_by_an_ellipsis_is_cut() -> None:
    assert redact(f"see {CAP}… and {CAP}") == f"see {CUT}… and {CUT}"


def test_a_percent_encoded_cap_is_cut() -> None:
    for url in (f"tahoe://127.0.0.1:3456/{quote(CAP, safe='')}/app", f"/uri/{quote(CAP, safe='').replace('%3A', '%3a')}"):
        assert "gqzl4y3c" not in redact(url) and "tu4dc7nb" not in redact(url), redact(url)
    assert redact(f"/uri/{quote(CAP, safe='')}/app") == "/uri/URI%3ADIR2%3Agqzl…/app"


separators = st.sampled_from([":", "%3A", "%3a"])
kinds = st.sampled_from(["DIR2", "DIR2-RO", "DIR2-CHK", "CHK", "LIT", "MDMF", "SSK-RO"])
# Longer than the four characters redact() keeps, so a cut cap can no longer be found whole.
bodies = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567:", min_size=5, max_size=30)
caps = st.builds(lambda sep, kind, body: f"URI:{kind}:{body}".replace(":", sep), separators, kinds, bodies)
fillers = st.lists(st.sampled_from(["…", ":", "%3A", "URI", "URI:LIT:", "ab", " ", "/", "-"]) | st.text(max_size=3),
                   max_size=3).map("".join)


@given(st.lists(st.tuples(fillers, caps), max_size=4), fillers)
@settings(max_examples=500)
def test_redact_cuts_every_cap_and_only_once(pieces: list[tuple[str, str]], tail: str) -> None:
    text = "".join(filler + cap for filler, cap in pieces) + tail
    redacted = redact(text)
    assert not any(cap in redacted for _, cap in pieces)
    assert redact(redacted) == redacted
